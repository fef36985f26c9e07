//! Ring setup: the best setup flags the kernel accepts, the opcode probe, `RINGLOOP_DISABLE`.

use std::fmt;
use std::io;

use io_uring::{opcode, IoUring, Probe};

/// Submission queue entries; the kernel sizes the completion queue at twice this.
pub(super) const RING_ENTRIES: u32 = 256;

/// An optional kernel feature the driver may use, by the name logs, `features()` and
/// `RINGLOOP_DISABLE` use for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Feature {
    /// `IORING_SETUP_SINGLE_ISSUER` (6.0): only the creating thread submits.
    SingleIssuer,
    /// `IORING_SETUP_DEFER_TASKRUN` (6.1): completion work runs only inside our `GETEVENTS` enter.
    DeferTaskrun,
    /// `IORING_SETUP_COOP_TASKRUN` (5.19): no inter-processor interrupt to run completion work.
    CoopTaskrun,
    /// `IORING_SETUP_TASKRUN_FLAG` (5.19): the kernel flags pending completion work in the SQ ring.
    TaskrunFlag,
    /// `IORING_SETUP_SUBMIT_ALL` (5.18): one failing SQE does not stop the rest of the batch.
    SubmitAll,
    /// `IORING_FEAT_EXT_ARG` (5.11): the wait timeout is an `io_uring_enter` argument rather
    /// than an internal `Timeout` SQE.
    ExtArg,
    /// `IORING_FEAT_NODROP` (5.5): the kernel keeps CQEs that overflow the CQ ring.
    NoDrop,
    /// `IORING_ASYNC_CANCEL_ANY` (5.19): one SQE cancels everything at shutdown.
    CancelAny,
    /// `IORING_OP_ACCEPT` (5.5): `AcceptMulti` without `multishot_accept` re-arms one-shot
    /// accepts; without it, `POLL_ADD` then `accept4`.
    OpAccept,
    /// `IORING_OP_CONNECT` (5.5); without it `Connect` runs `connect`, then `POLL_ADD` and
    /// `SO_ERROR`.
    OpConnect,
    /// `IORING_OP_RECV` (5.6): `RecvMulti` from the buffer ring needs it (`buffer_ring` is
    /// only set up with it); without it, `POLL_ADD` then `recv`.
    OpRecv,
    /// `IORING_OP_SEND` (5.6); without it `Send` runs `send` (plus `POLL_ADD` to wait).
    OpSend,
    /// `IORING_OP_SHUTDOWN` (5.11); without it `Shutdown` runs `shutdown` at submit.
    OpShutdown,
    /// `IORING_OP_CLOSE` (5.6); without it `Close` runs `close` at submit.
    OpClose,
    /// `IORING_OP_READ` (5.6) for `Op::Read`; without it `Read` runs `read` (plus `POLL_ADD`
    /// to wait). (The wake-up read of the eventfd needs the opcode regardless.)
    OpRead,
    /// `IORING_OP_WRITE` (5.6); without it `Write` runs `write` (plus `POLL_ADD` to wait).
    OpWrite,
    /// `IORING_OP_RECVMSG` (5.3): `multishot_recvmsg` needs it; without it `RecvMsgMulti`
    /// takes the readiness route (`POLL_ADD` then `recvmsg`).
    OpRecvMsg,
    /// `IORING_OP_SENDMSG` (5.3); without it `SendMsg` runs `sendmsg` (plus `POLL_ADD` to wait).
    OpSendMsg,
    /// `IORING_ACCEPT_MULTISHOT` (5.19): one SQE accepts many connections (`AcceptMulti`);
    /// without it each connection re-arms a one-shot accept.
    MultishotAccept,
    /// `IORING_RECV_MULTISHOT` (6.0): one SQE receives many chunks (`RecvMulti`); without it
    /// each chunk re-arms a one-shot recv from the buffer ring. Needs `buffer_ring`.
    MultishotRecv,
    /// `IORING_REGISTER_PBUF_RING` (5.19): `RecvMulti` takes buffers from a driver-owned ring;
    /// without it `RecvMulti` waits with `POLL_ADD` and `recv`s into one driver buffer.
    BufferRing,
    /// `IORING_RECV_MULTISHOT` on `IORING_OP_RECVMSG` (6.0): one SQE receives many datagrams
    /// (`RecvMsgMulti`) into a second buffer ring of datagram-sized buffers; without it (or
    /// without `buffer_ring` or `op_recvmsg`) `RecvMsgMulti` waits with `POLL_ADD` and
    /// `recvmsg`s into one driver buffer.
    MultishotRecvMsg,
    /// `IORING_REGISTER_RING_FDS` (5.18): `io_uring_enter` names the ring by a registered
    /// index, skipping the fd lookup and the file's reference count (`enter.rs`).
    RegisteredRing,
}

impl Feature {
    /// Every feature, in the order `features()` lists them.
    pub(super) const ALL: [Feature; 23] = [
        Feature::SingleIssuer,
        Feature::DeferTaskrun,
        Feature::CoopTaskrun,
        Feature::TaskrunFlag,
        Feature::SubmitAll,
        Feature::ExtArg,
        Feature::NoDrop,
        Feature::CancelAny,
        Feature::OpAccept,
        Feature::OpConnect,
        Feature::OpRecv,
        Feature::OpSend,
        Feature::OpShutdown,
        Feature::OpClose,
        Feature::OpRead,
        Feature::OpWrite,
        Feature::OpRecvMsg,
        Feature::OpSendMsg,
        Feature::MultishotAccept,
        Feature::MultishotRecv,
        Feature::BufferRing,
        Feature::MultishotRecvMsg,
        Feature::RegisteredRing,
    ];

    /// The socket-op features and the opcodes whose probe bits they stand for.
    const OPCODES: [(Feature, u8); 10] = [
        (Feature::OpAccept, opcode::Accept::CODE),
        (Feature::OpConnect, opcode::Connect::CODE),
        (Feature::OpRecv, opcode::Recv::CODE),
        (Feature::OpSend, opcode::Send::CODE),
        (Feature::OpShutdown, opcode::Shutdown::CODE),
        (Feature::OpClose, opcode::Close::CODE),
        (Feature::OpRead, opcode::Read::CODE),
        (Feature::OpWrite, opcode::Write::CODE),
        (Feature::OpRecvMsg, opcode::RecvMsg::CODE),
        (Feature::OpSendMsg, opcode::SendMsg::CODE),
    ];

    /// The name used in logs and in `RINGLOOP_DISABLE`.
    pub(super) fn name(self) -> &'static str {
        match self {
            Feature::SingleIssuer => "single_issuer",
            Feature::DeferTaskrun => "defer_taskrun",
            Feature::CoopTaskrun => "coop_taskrun",
            Feature::TaskrunFlag => "taskrun_flag",
            Feature::SubmitAll => "submit_all",
            Feature::ExtArg => "ext_arg",
            Feature::NoDrop => "nodrop",
            Feature::CancelAny => "cancel_any",
            Feature::OpAccept => "op_accept",
            Feature::OpConnect => "op_connect",
            Feature::OpRecv => "op_recv",
            Feature::OpSend => "op_send",
            Feature::OpShutdown => "op_shutdown",
            Feature::OpClose => "op_close",
            Feature::OpRead => "op_read",
            Feature::OpWrite => "op_write",
            Feature::OpRecvMsg => "op_recvmsg",
            Feature::OpSendMsg => "op_sendmsg",
            Feature::MultishotAccept => "multishot_accept",
            Feature::MultishotRecv => "multishot_recv",
            Feature::BufferRing => "buffer_ring",
            Feature::MultishotRecvMsg => "multishot_recvmsg",
            Feature::RegisteredRing => "registered_ring",
        }
    }

    fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// A set of [`Feature`]s: the ones in use, or the ones switched off.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct FeatureSet {
    /// One bit per [`Feature`], by discriminant.
    bits: u32,
}

impl FeatureSet {
    /// Whether `f` is in the set.
    pub(super) fn contains(self, f: Feature) -> bool {
        self.bits & f.bit() != 0
    }

    /// Adds `f`.
    pub(super) fn insert(&mut self, f: Feature) {
        self.bits |= f.bit();
    }

    /// Removes `f`.
    pub(super) fn remove(&mut self, f: Feature) {
        self.bits &= !f.bit();
    }

    /// The names of the features in the set, in [`Feature::ALL`] order.
    pub(super) fn names(self) -> Vec<&'static str> {
        Feature::ALL.iter().filter(|f| self.contains(**f)).map(|f| f.name()).collect()
    }

    /// Parses feature names (as `RINGLOOP_DISABLE` lists them); unknown names are logged and
    /// skipped. `nodrop` is a kernel guarantee, not a choice, so it cannot be switched off.
    pub(super) fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> FeatureSet {
        let mut set = FeatureSet::default();
        for name in names.into_iter().map(str::trim).filter(|n| !n.is_empty()) {
            match Feature::ALL.iter().find(|f| f.name().eq_ignore_ascii_case(name)) {
                Some(Feature::NoDrop) => {
                    log::warn!("RINGLOOP_DISABLE: `nodrop` is a kernel guarantee; ignored")
                }
                Some(f) => set.insert(*f),
                None => log::warn!(
                    "RINGLOOP_DISABLE: unknown io_uring feature `{name}` ignored (known: {})",
                    Feature::ALL.map(Feature::name).join(", ")
                ),
            }
        }
        set
    }
}

impl fmt::Debug for FeatureSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

/// A set of setup flags to try, best first. `core` features must all be allowed or the rung is
/// skipped; `extra` features are dropped one by one when switched off.
struct Rung {
    /// What makes this rung worth trying.
    core: &'static [Feature],
    /// Added when not switched off.
    extra: &'static [Feature],
}

/// Setup flag sets, best first; a kernel that rejects one (`EINVAL`) gets the next.
const LADDER: [Rung; 5] = [
    Rung { core: &[Feature::SingleIssuer, Feature::DeferTaskrun], extra: &[Feature::SubmitAll] },
    Rung {
        core: &[Feature::CoopTaskrun],
        extra: &[Feature::SingleIssuer, Feature::TaskrunFlag, Feature::SubmitAll],
    },
    Rung { core: &[Feature::CoopTaskrun], extra: &[Feature::TaskrunFlag, Feature::SubmitAll] },
    Rung { core: &[Feature::SubmitAll], extra: &[] },
    Rung { core: &[], extra: &[] },
];

/// A ring with what was learnt while setting it up.
pub(super) struct Setup {
    /// The ring.
    pub(super) ring: IoUring,
    /// The optional features in use.
    pub(super) features: FeatureSet,
    /// Which opcodes the kernel has (`IORING_REGISTER_PROBE`); boxed, it is 2 KiB.
    pub(super) probe: Box<Probe>,
}

/// Opcodes the driver cannot work without, with the names errors give them.
const REQUIRED: [(u8, &str); 3] = [
    (opcode::PollAdd::CODE, "POLL_ADD"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    (opcode::Read::CODE, "READ"),
];

/// Sets up a ring with the best flags the kernel accepts, minus `disabled`, and probes it.
///
/// A setup flag the kernel rejects with `EINVAL` degrades to the next rung of [`LADDER`]; any
/// other setup error (`ENOSYS`, `EPERM` from `kernel.io_uring_disabled`, `ENOMEM`) is returned
/// as is. A kernel without the probe (< 5.6) or without a [`REQUIRED`] opcode is refused with
/// `ErrorKind::Unsupported`, so that the loop falls back to epoll.
pub(super) fn setup(disabled: FeatureSet) -> io::Result<Setup> {
    let (ring, mut features) = build_ring(disabled)?;
    let mut probe = Box::new(Probe::new());
    ring.submitter().register_probe(&mut probe).map_err(|e| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!("io_uring opcode probe (IORING_REGISTER_PROBE) failed, kernel < 5.6? ({e})"),
        )
    })?;
    for (code, name) in REQUIRED {
        if !probe.is_supported(code) {
            return Err(unsupported(name));
        }
    }
    let params = ring.params();
    if params.is_feature_nodrop() {
        features.insert(Feature::NoDrop);
    }
    if params.is_feature_ext_arg() && !disabled.contains(Feature::ExtArg) {
        features.insert(Feature::ExtArg);
    } else if !probe.is_supported(opcode::Timeout::CODE) {
        return Err(unsupported("TIMEOUT (needed without IORING_FEAT_EXT_ARG)"));
    }
    // `IORING_ASYNC_CANCEL_ANY` has no probe bit of its own; it came in 5.19 with the SOCKET
    // opcode, which does. The shutdown path still copes with an `EINVAL` answer.
    if probe.is_supported(opcode::Socket::CODE) && !disabled.contains(Feature::CancelAny) {
        features.insert(Feature::CancelAny);
    }
    for (f, code) in Feature::OPCODES {
        if probe.is_supported(code) && !disabled.contains(f) {
            features.insert(f);
        }
    }
    add_multishot(&mut features, disabled, &probe);
    log::debug!("io_uring ring set up with {features:?} (disabled: {disabled:?})");
    Ok(Setup { ring, features, probe })
}

/// The multishot features and the buffer ring, where the kernel has them and they are not
/// switched off. None has a probe bit: accept multishot and buffer rings came in 5.19 with
/// the SOCKET opcode (which has one); recv and recvmsg multishot in 6.0, told by the release
/// number. `BufferRing` is only a candidate here: the driver drops it if registering the ring
/// fails, and `MultishotRecvMsg` if registering the datagram ring (at first use) fails.
fn add_multishot(features: &mut FeatureSet, disabled: FeatureSet, probe: &Probe) {
    let has_5_19 = probe.is_supported(opcode::Socket::CODE);
    let wanted = |f| !disabled.contains(f);
    if has_5_19 && features.contains(Feature::OpAccept) && wanted(Feature::MultishotAccept) {
        features.insert(Feature::MultishotAccept);
    }
    if has_5_19 && features.contains(Feature::OpRecv) && wanted(Feature::BufferRing) {
        features.insert(Feature::BufferRing);
        if kernel_at_least(6, 0) && wanted(Feature::MultishotRecv) {
            features.insert(Feature::MultishotRecv);
        }
        let recvmsg = features.contains(Feature::OpRecvMsg);
        if recvmsg && kernel_at_least(6, 0) && wanted(Feature::MultishotRecvMsg) {
            features.insert(Feature::MultishotRecvMsg);
        }
    }
}

/// Whether `uname -r` is at least `major.minor`.
pub(super) fn kernel_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: `utsname` is plain old data; uname fills it.
    let mut uts = unsafe { std::mem::zeroed::<libc::utsname>() };
    // SAFETY: `uts` is a live utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return false;
    }
    let release: String =
        uts.release.iter().take_while(|c| **c != 0).map(|c| *c as u8 as char).collect();
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b))) => (a, b) >= (major, minor),
        _ => false,
    }
}

fn unsupported(opcode: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("this kernel's io_uring lacks the {opcode} opcode that ringloop requires"),
    )
}

/// Walks down [`LADDER`] until the kernel accepts a set of setup flags.
fn build_ring(disabled: FeatureSet) -> io::Result<(IoUring, FeatureSet)> {
    let mut tried: Vec<FeatureSet> = Vec::with_capacity(LADDER.len());
    let mut last_err = None;
    for rung in &LADDER {
        if rung.core.iter().any(|f| disabled.contains(*f)) {
            continue;
        }
        let mut flags = FeatureSet::default();
        rung.core.iter().chain(rung.extra).filter(|f| !disabled.contains(**f)).for_each(|f| {
            flags.insert(*f);
        });
        if tried.contains(&flags) {
            continue;
        }
        tried.push(flags);
        match build_with(flags) {
            Ok(ring) => return Ok((ring, flags)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                log::debug!("io_uring_setup rejected {flags:?} with EINVAL; trying fewer flags");
                last_err = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    // The last rung has no flags, so EINVAL there means the kernel rejects even a plain ring.
    Err(last_err.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)))
}

fn build_with(flags: FeatureSet) -> io::Result<IoUring> {
    let mut builder = IoUring::builder();
    for f in Feature::ALL.into_iter().filter(|f| flags.contains(*f)) {
        match f {
            Feature::SingleIssuer => builder.setup_single_issuer(),
            Feature::DeferTaskrun => builder.setup_defer_taskrun(),
            Feature::CoopTaskrun => builder.setup_coop_taskrun(),
            Feature::TaskrunFlag => builder.setup_taskrun_flag(),
            Feature::SubmitAll => builder.setup_submit_all(),
            _ => continue,
        };
    }
    builder.build(RING_ENTRIES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disable_list_parses_names_and_skips_unknown_ones() {
        let set = FeatureSet::from_names(" defer_taskrun,EXT_ARG,,bogus,nodrop".split(','));
        assert_eq!(set.names(), ["defer_taskrun", "ext_arg"]);
    }

    #[test]
    fn ladder_degrades_to_the_next_rung_when_flags_are_disabled() {
        let all = FeatureSet::from_names(Feature::ALL.map(Feature::name));
        // Skips (printed) where the kernel has no io_uring at all.
        if crate::driver::uring::tests::ring::<u32>(&[]).is_none() {
            return;
        }
        let (_, flags) = build_ring(all).expect("a plain ring");
        assert_eq!(flags, FeatureSet::default());
        let mut no_defer = FeatureSet::default();
        no_defer.insert(Feature::DeferTaskrun);
        let (_, flags) = build_ring(no_defer).expect("a ring");
        assert!(flags.contains(Feature::CoopTaskrun), "{flags:?}");
        assert!(!flags.contains(Feature::DeferTaskrun));
    }
}
