//! `Op::WaitId`'s memory and syscall: [`ExitInfo`], the `siginfo_t` a child's exit is reported
//! in, shared by the op and its owner; and [`waitid`], the crate's one `waitid(2)`.
//!
//! # Why the siginfo is shared, not boxed
//! A reap cannot be undone, and io_uring's `IORING_OP_WAITID` can lose a race with its cancel:
//! once the child's exit has woken the op, the kernel's cancel no longer finds it, and the op
//! reaps the child and completes with 0 all the same (`io_uring/waitid.c`: the wake-up takes
//! ownership of the request, and a cancel that finds it owned gives up). The contract drops a
//! cancelled op's completion, so with a `Box` the status would be gone with it, and the owner's
//! own `waitid` would find no child (`ECHILD`). So the op and its owner each hold an `Rc` of one
//! `ExitInfo`. The kernel (or the driver's `waitid`) writes it only while the driver holds the
//! op; once the driver let go (the final completion, or a cancelled op's final CQE) the owner's
//! `Rc` is the only one left, and [`ExitInfo::get`] reads it. A cancelled `WaitId` therefore
//! ended in one of two ways, and the owner can tell which: it reaped (the info reports the
//! exit, [`reports_exit`]), or it did not (the child is still there for `waitid`). Neither
//! loses the status, and nothing is reaped twice: a `waitid(P_PIDFD)` on a child already reaped
//! is `ECHILD`, never another process (the pidfd pins the `struct pid`, which is not reused).

use std::cell::UnsafeCell;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;

use crate::sys::{retry_eintr, syscall};

/// The `siginfo_t` of a child's exit, written by a [`WaitId`](super::Op::WaitId) op and read by
/// its owner once the driver let go of the op (see the module docs).
pub(crate) struct ExitInfo {
    /// Written by the kernel's `WAITID` or the driver's `waitid` while an op holds an `Rc`.
    siginfo: UnsafeCell<libc::siginfo_t>,
}

impl ExitInfo {
    /// A zeroed siginfo (`si_signo` 0: it reports nothing yet), to share with one op.
    pub(crate) fn new() -> Rc<ExitInfo> {
        // SAFETY: siginfo_t is plain old data; all-zero is a valid value (and no report).
        let siginfo = unsafe { std::mem::zeroed::<libc::siginfo_t>() };
        Rc::new(ExitInfo { siginfo: UnsafeCell::new(siginfo) })
    }

    /// The siginfo, once no op holds it (`info` is the only `Rc` left); `None` while the
    /// driver (or the kernel, through it) may still write it.
    pub(crate) fn get(info: &Rc<ExitInfo>) -> Option<libc::siginfo_t> {
        let unique = Rc::strong_count(info) == 1 && Rc::weak_count(info) == 0;
        // SAFETY: `info` is the only handle to the allocation (`Rc` is neither `Send` nor
        // shared), so no op holds it: nothing writes the siginfo, and this copy is its only
        // access meanwhile.
        unique.then(|| unsafe { *info.siginfo.get() })
    }

    /// Where the kernel's `WAITID` writes (`infop`). The pointer stays valid for as long as
    /// the op holding this `Rc` lives, which the driver keeps until the op's final CQE.
    pub(crate) fn as_ptr(&self) -> *mut libc::siginfo_t {
        self.siginfo.get()
    }

    /// Whether the siginfo reports the child's exit (see [`reports_exit`]).
    ///
    /// # Safety
    /// Nothing may write the siginfo meanwhile: no `WAITID` naming it is in the kernel.
    pub(crate) unsafe fn reports_exit(&self) -> bool {
        // SAFETY: the caller guarantees no writer; a copy of plain data.
        reports_exit(&unsafe { *self.siginfo.get() })
    }

    /// One `waitid(P_PIDFD, pidfd, WEXITED | WNOHANG)` into the siginfo: `Ok(true)` if it
    /// reaped the child, `Ok(false)` if the child still runs.
    ///
    /// # Safety
    /// Nothing else may access the siginfo meanwhile: no `WAITID` naming it is in the kernel
    /// (the owner reads it only through [`get`](Self::get), which the caller's `Rc` excludes).
    pub(crate) unsafe fn reap(&self, pidfd: RawFd) -> io::Result<bool> {
        // SAFETY: the caller guarantees this is the siginfo's only access for the call.
        let siginfo = unsafe { &mut *self.siginfo.get() };
        waitid(pidfd, siginfo, libc::WEXITED | libc::WNOHANG)
    }
}

impl fmt::Debug for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExitInfo")
    }
}

/// Whether `siginfo` (filled in by `waitid` or the kernel's `WAITID`) reports a child: the
/// kernel sets `si_signo` to `SIGCHLD` exactly then, and to 0 when `WNOHANG` found the child
/// running or the op was cancelled (its other fields are then meaningless).
pub(crate) fn reports_exit(siginfo: &libc::siginfo_t) -> bool {
    siginfo.si_signo == libc::SIGCHLD
}

/// `waitid(P_PIDFD, pidfd, siginfo, flags)`, again on `EINTR`: `Ok(true)` if it reports the
/// child in `siginfo` (reaped, unless `WNOWAIT`), `Ok(false)` if `WNOHANG` found it running.
/// Through libc, not `nix`: nix's `waitid` decodes the status into a `WaitStatus`, which has no
/// room for a real-time signal, and loses it.
pub(crate) fn waitid(
    pidfd: RawFd,
    siginfo: &mut libc::siginfo_t,
    flags: libc::c_int,
) -> io::Result<bool> {
    siginfo.si_signo = 0;
    let id = pidfd as libc::id_t;
    // SAFETY: `siginfo` is a live, writable siginfo_t for the call; a bad pidfd is `EBADF`.
    retry_eintr(|| syscall!(unsafe { libc::waitid(libc::P_PIDFD, id, &mut *siginfo, flags) }))?;
    Ok(reports_exit(siginfo))
}
