//! `io_uring_enter` through the ring's registered fd (`registered_ring`, 5.18).
//!
//! A thread may register a ring's fd with the kernel (`IORING_REGISTER_RING_FDS`) and then
//! pass the registration's index with `IORING_ENTER_REGISTERED_RING`: each enter skips the
//! fd-table lookup and the atomic get and put of the ring's file. A server whose clients are
//! the bottleneck enters once per request, so that is one lookup and two atomics per request.
//! The `io-uring` crate's `Submitter` can register, but keeps the index only as long as that
//! `Submitter` lives, and `IoUring::submitter` makes a new one each call; so the driver does
//! the two syscalls itself.
//!
//! # Implementation
//! The kernel keeps the registration in the registering thread's io_uring context. The driver
//! is `!Send` (its buffer rings are `Rc`s), so it is created, entered and dropped on
//! that one thread, and the index is valid at every enter. The drop undoes the registration:
//! it holds a reference to the ring's file, which would otherwise keep the io_uring instance
//! alive until the thread exits.

use std::io;
use std::os::fd::RawFd;

/// `IORING_REGISTER_RING_FDS` and `IORING_UNREGISTER_RING_FDS` (`io_uring_register` opcodes).
const REGISTER_RING_FDS: libc::c_uint = 20;
const UNREGISTER_RING_FDS: libc::c_uint = 21;
/// `IORING_ENTER_REGISTERED_RING`.
const ENTER_REGISTERED_RING: u32 = 1 << 4;

/// `struct io_uring_rsrc_update`: one registration slot (`offset`) and what goes in it.
#[repr(C)]
struct RsrcUpdate {
    offset: u32,
    resv: u32,
    data: u64,
}

/// The ring's fd as `io_uring_enter` takes it.
#[derive(Debug)]
pub(super) struct RingFd {
    /// The ring's own fd (owned by the `IoUring`).
    fd: RawFd,
    /// The registration's index in this thread's registered rings.
    registered: Option<u32>,
}

impl RingFd {
    /// `fd`, registered with the kernel when `register` (the feature is not switched off);
    /// a kernel that refuses (before 5.18, or 16 rings registered on this thread already)
    /// leaves it unregistered.
    pub(super) fn new(fd: RawFd, register: bool) -> RingFd {
        let registered = register.then(|| register_ring(fd)).and_then(|r| {
            r.map_err(|e| log::debug!("io_uring: ring fd not registered ({e}); plain fd")).ok()
        });
        RingFd { fd, registered }
    }

    /// Whether enters use the registration.
    pub(super) fn is_registered(&self) -> bool {
        self.registered.is_some()
    }

    /// `io_uring_enter(fd, to_submit, min_complete, flags, arg, arg_size)`, with the
    /// registered index if there is one. Returns the SQEs submitted.
    ///
    /// # Safety
    /// `arg` and `arg_size` must be what `flags` tells the kernel to expect: null and
    /// `size_of::<sigset_t>()` (no signal mask), or with `IORING_ENTER_EXT_ARG` a valid
    /// `io_uring_getevents_arg` of `arg_size` bytes, with whatever it points to, for the call.
    pub(super) unsafe fn enter(
        &self,
        to_submit: u32,
        min_complete: u32,
        flags: u32,
        arg: *const libc::c_void,
        arg_size: usize,
    ) -> io::Result<usize> {
        let (fd, flags) = match self.registered {
            Some(index) => (libc::c_long::from(index), flags | ENTER_REGISTERED_RING),
            None => (libc::c_long::from(self.fd), flags),
        };
        // SAFETY: the caller vouches for `arg`; the rest are plain values.
        let res = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                fd,
                to_submit,
                min_complete,
                flags,
                arg,
                arg_size,
            )
        };
        usize::try_from(res).map_err(|_| io::Error::last_os_error())
    }

    /// Undoes the registration; called before the ring is closed.
    pub(super) fn unregister(&mut self) {
        let Some(index) = self.registered.take() else { return };
        let mut update = RsrcUpdate { offset: index, resv: 0, data: 0 };
        if let Err(e) = register(self.fd, UNREGISTER_RING_FDS, &mut update) {
            log::warn!("io_uring: unregistering the ring fd failed ({e})");
        }
    }
}

/// Registers `fd` in the first free slot of this thread's registered rings; returns the slot.
fn register_ring(fd: RawFd) -> io::Result<u32> {
    let data = u64::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    let mut update = RsrcUpdate { offset: u32::MAX, resv: 0, data };
    register(fd, REGISTER_RING_FDS, &mut update)?;
    Ok(update.offset)
}

/// `io_uring_register(fd, opcode, update, 1)`.
fn register(fd: RawFd, opcode: libc::c_uint, update: &mut RsrcUpdate) -> io::Result<()> {
    // SAFETY: `update` is one valid `io_uring_rsrc_update`, which the kernel reads and (for a
    // registration) writes the slot back into, during the call only.
    let res = unsafe {
        libc::syscall(libc::SYS_io_uring_register, fd, opcode, update as *mut RsrcUpdate, 1)
    };
    match res {
        1 => Ok(()),
        -1 => Err(io::Error::last_os_error()),
        n => Err(io::Error::other(format!("io_uring_register: {n} of 1 ring fd updates done"))),
    }
}
