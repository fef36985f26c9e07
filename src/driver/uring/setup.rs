//! Ring setup: the whole set of kernel features the driver runs on, probed at once, and the
//! optimizations that may be switched off (`RINGLOOP_DISABLE`).
//!
//! # The set
//! io_uring runs only where the kernel has everything the driver uses: single issuer and
//! deferred task running (6.1), `EXT_ARG` waits, `NODROP`, provided buffer rings, multishot
//! accept, recv and recvmsg, and the opcodes in [`REQUIRED_OPCODES`]. In practice that is Linux
//! 6.1 and later. A kernel lacking part of it gets an `ErrorKind::Unsupported` error naming what
//! is missing, and the loop runs on epoll instead (feature `fallback`): the epoll backend is the
//! older-kernel path, not per-op degraded routes inside this driver.
//!
//! `RINGLOOP_DISABLE` (comma-separated names) switches off [`Optimization`]s, which degrade
//! cheaply, and makes the driver act as if the kernel lacked any part of the set named there
//! (the names of [`Required`]), which is how tests reach the epoll fallback on a new kernel.

use std::fmt;
use std::io;

use io_uring::{opcode, IoUring, Probe};

/// Submission queue entries; the kernel sizes the completion queue at twice this.
pub(super) const RING_ENTRIES: u32 = 256;

/// A part of the set the driver requires, by the name errors and `RINGLOOP_DISABLE` use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Required {
    /// `IORING_SETUP_SINGLE_ISSUER` (6.0).
    SingleIssuer,
    /// `IORING_SETUP_DEFER_TASKRUN` (6.1): completion work runs only inside our enters.
    DeferTaskrun,
    /// `IORING_FEAT_EXT_ARG` (5.11): the wait timeout is an argument of the enter.
    ExtArg,
    /// `IORING_FEAT_NODROP` (5.5): CQEs that overflow the CQ ring wait in the kernel.
    NoDrop,
    /// `IORING_REGISTER_PBUF_RING` (5.19): provided-buffer rings.
    BufferRing,
    /// `IORING_ACCEPT_MULTISHOT` (5.19).
    MultishotAccept,
    /// `IORING_RECV_MULTISHOT` on `RECV` (6.0).
    MultishotRecv,
    /// `IORING_RECV_MULTISHOT` on `RECVMSG` (6.0).
    MultishotRecvMsg,
    /// The opcodes of [`REQUIRED_OPCODES`].
    Opcodes,
}

impl Required {
    /// Every required part, in the order errors list them.
    pub(super) const ALL: [Required; 9] = [
        Required::SingleIssuer,
        Required::DeferTaskrun,
        Required::ExtArg,
        Required::NoDrop,
        Required::BufferRing,
        Required::MultishotAccept,
        Required::MultishotRecv,
        Required::MultishotRecvMsg,
        Required::Opcodes,
    ];

    /// The name used in logs, errors and `RINGLOOP_DISABLE`.
    pub(super) fn name(self) -> &'static str {
        match self {
            Required::SingleIssuer => "single_issuer",
            Required::DeferTaskrun => "defer_taskrun",
            Required::ExtArg => "ext_arg",
            Required::NoDrop => "nodrop",
            Required::BufferRing => "buffer_ring",
            Required::MultishotAccept => "multishot_accept",
            Required::MultishotRecv => "multishot_recv",
            Required::MultishotRecvMsg => "multishot_recvmsg",
            Required::Opcodes => "opcodes",
        }
    }
}

/// The opcodes the driver submits, with the names errors give them.
const REQUIRED_OPCODES: [(u8, &str); 11] = [
    (opcode::PollAdd::CODE, "POLL_ADD"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    (opcode::Read::CODE, "READ"),
    (opcode::Write::CODE, "WRITE"),
    (opcode::Send::CODE, "SEND"),
    (opcode::SendMsg::CODE, "SENDMSG"),
    (opcode::Recv::CODE, "RECV"),
    (opcode::RecvMsg::CODE, "RECVMSG"),
    (opcode::Connect::CODE, "CONNECT"),
    (opcode::Accept::CODE, "ACCEPT"),
    (opcode::Socket::CODE, "SOCKET (5.19, the marker of multishot accept and buffer rings)"),
];

/// An optimization that degrades cheaply and may be switched off (`RINGLOOP_DISABLE`), so
/// that both paths are tested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Optimization {
    /// `IORING_REGISTER_RING_FDS` (5.18): each enter names the ring by a registered index,
    /// skipping the fd lookup and the file's reference count (`enter.rs`).
    RegisteredRing,
    /// `IORING_OP_WAITID` (6.7): an `Op::WaitId` is one SQE that waits for the child and reaps
    /// it; without it, a `POLL_ADD` on the pidfd and a `waitid` at its CQE (`wait_id.rs`).
    WaitId,
}

impl Optimization {
    /// Every optimization.
    const ALL: [Optimization; 2] = [Optimization::RegisteredRing, Optimization::WaitId];

    /// The name used in logs and `RINGLOOP_DISABLE`.
    pub(super) fn name(self) -> &'static str {
        match self {
            Optimization::RegisteredRing => "registered_ring",
            Optimization::WaitId => "waitid",
        }
    }
}

/// What `RINGLOOP_DISABLE` asks for.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Disabled {
    /// Parts of the set to act as if missing, one bit per [`Required`] by discriminant.
    required: u32,
    /// Optimizations switched off, one bit per [`Optimization`].
    optimizations: u32,
}

impl Disabled {
    /// Parses names (as `RINGLOOP_DISABLE` lists them); unknown names are logged and skipped.
    pub(super) fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Disabled {
        let mut disabled = Disabled::default();
        for name in names.into_iter().map(str::trim).filter(|n| !n.is_empty()) {
            let is = |known: &str| known.eq_ignore_ascii_case(name);
            if let Some(r) = Required::ALL.iter().find(|r| is(r.name())) {
                disabled.required |= 1 << *r as u32;
            } else if let Some(o) = Optimization::ALL.iter().find(|o| is(o.name())) {
                disabled.optimizations |= 1 << *o as u32;
            } else {
                log::warn!(
                    "RINGLOOP_DISABLE: unknown io_uring feature `{name}` ignored (known: {}, {})",
                    Required::ALL.map(Required::name).join(", "),
                    Optimization::ALL.map(Optimization::name).join(", ")
                );
            }
        }
        disabled
    }

    /// Whether `RINGLOOP_DISABLE` makes `part` count as missing.
    pub(super) fn lacks(self, part: Required) -> bool {
        self.required & (1 << part as u32) != 0
    }

    /// Whether optimization `o` is switched off.
    pub(super) fn switches_off(self, o: Optimization) -> bool {
        self.optimizations & (1 << o as u32) != 0
    }
}

impl fmt::Debug for Disabled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let required = Required::ALL.into_iter().filter(|r| self.lacks(*r)).map(Required::name);
        let optimizations =
            Optimization::ALL.into_iter().filter(|o| self.switches_off(*o)).map(Optimization::name);
        f.debug_set().entries(required.chain(optimizations)).finish()
    }
}

/// The error for a kernel that lacks `what` (a part of the set).
pub(super) fn lacking(what: impl fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("this kernel's io_uring lacks {what}; ringloop's io_uring backend needs Linux 6.1 or later"),
    )
}

/// A ring with the whole set: single issuer, deferred task running, submit-all; its features
/// and opcodes checked. Errors say which part is missing (`ErrorKind::Unsupported`); setup
/// errors other than a rejected flag (`ENOSYS`, `EPERM` from `kernel.io_uring_disabled`,
/// `ENOMEM`) are returned as they are. With the ring, the kernel's opcode probe, which says
/// which optimizations the kernel has ([`has`]).
pub(super) fn setup(disabled: Disabled) -> io::Result<(IoUring, Probe)> {
    if let Some(part) = Required::ALL.into_iter().find(|part| disabled.lacks(*part)) {
        return Err(lacking(format_args!("{} (switched off by RINGLOOP_DISABLE)", part.name())));
    }
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_submit_all()
        .build(RING_ENTRIES)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => lacking(format_args!(
                "IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN (io_uring_setup: {e})"
            )),
            _ => e,
        })?;
    let params = ring.params();
    if !params.is_feature_ext_arg() {
        return Err(lacking("IORING_FEAT_EXT_ARG"));
    }
    if !params.is_feature_nodrop() {
        return Err(lacking("IORING_FEAT_NODROP"));
    }
    // Multishot accept, recv and recvmsg have no probe bit; deferred task running (6.1), which
    // the ring has, came after all three (5.19, 6.0). The buffer ring is checked where the
    // driver registers it.
    let probe = check_opcodes(&ring)?;
    Ok((ring, probe))
}

/// Whether the kernel has optimization `o` as far as the opcode `probe` tells (the registered
/// ring has no probe bit: its registration says).
pub(super) fn has(probe: &Probe, o: Optimization) -> bool {
    match o {
        Optimization::RegisteredRing => true,
        Optimization::WaitId => probe.is_supported(opcode::WaitId::CODE),
    }
}

/// Checks [`REQUIRED_OPCODES`] with the kernel's probe, and returns the probe.
fn check_opcodes(ring: &IoUring) -> io::Result<Probe> {
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| lacking(format_args!("the opcode probe (IORING_REGISTER_PROBE: {e})")))?;
    let missing: Vec<&str> = (REQUIRED_OPCODES.iter())
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        Ok(probe)
    } else {
        Err(lacking(format_args!("the opcodes {}", missing.join(", "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disable_list_parses_names_and_skips_unknown_ones() {
        let set = Disabled::from_names(" defer_taskrun,REGISTERED_RING,,bogus".split(','));
        assert!(set.lacks(Required::DeferTaskrun));
        assert!(!set.lacks(Required::BufferRing));
        assert!(set.switches_off(Optimization::RegisteredRing));
        assert!(!set.switches_off(Optimization::WaitId));
        assert_eq!(format!("{set:?}"), r#"{"defer_taskrun", "registered_ring"}"#);
        assert!(Disabled::from_names(["waitid"]).switches_off(Optimization::WaitId));
    }

    #[test]
    fn a_part_switched_off_is_named_in_the_error() {
        for part in Required::ALL {
            let err = setup(Disabled::from_names([part.name()])).err().expect("refused");
            assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{part:?}: {err}");
            assert!(err.to_string().contains("RINGLOOP_DISABLE"), "{err}");
        }
    }
}
