//! [`Child`]: a child process the loop spawned, held by its pidfd: signalled through it
//! (`pidfd_send_signal`, so a recycled pid is never signalled) and reaped through it
//! (`waitid(P_PIDFD)`, so no other child of the process is ever reaped).
//!
//! # Reaping
//! The loop reaps the child with a driver op, `Op::WaitId` on the pidfd (io_uring's
//! `IORING_OP_WAITID`, or a readable pidfd and `waitid(P_PIDFD, WEXITED | WNOHANG)`); the
//! transport submits it (`core.rs`) and hands its outcome to [`Child::watched_exit`]. When
//! nobody will watch any more (the loop closed, or the transport was given up before it
//! started), [`Child::kill_and_reap`] sends `SIGKILL` and waits for the exit, bounded by
//! [`REAP_WAIT`]; a child that outlives even that (stuck in an uninterruptible sleep) is
//! handed to a thread that waits for it, so no zombie stays behind. A `Child` dropped
//! unreaped does the same.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::driver::wait_id;
use crate::error::{loop_log, Error, Result};
use crate::event_loop::EventLoop;
use crate::event_loop::LoopFd;
use crate::sys::{retry_eintr, syscall};

/// How long [`Child::kill_and_reap`] waits for a killed child to exit before handing it to a
/// reaper thread.
const REAP_WAIT: Duration = Duration::from_secs(2);

/// What became of the child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// Running, or exited and not reaped yet.
    Running,
    /// Reaped: its returncode (minus the signal number if a signal ended it).
    Reaped(i32),
}

/// A child process of this loop, and its pidfd.
pub(crate) struct Child {
    /// The pid, for `get_pid` and messages.
    pid: u32,
    /// The pidfd, named by the exit watch's `WaitId` op: closed through the driver, right
    /// after the child is reaped.
    pidfd: LoopFd,
    /// Running or reaped.
    status: Cell<Status>,
}

impl Child {
    /// Takes hold of the child `pid` just spawned: opens its pidfd. The child is not reaped
    /// yet, so the pid cannot have been reused. Without `pidfd_open` (Linux 5.3) the child
    /// is killed and reaped and the error is `Error::Unsupported`.
    pub(crate) fn new(event_loop: &EventLoop, pid: u32, call: &str) -> Result<Child> {
        // SAFETY: pidfd_open takes no pointers.
        let opened = syscall!(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) });
        match opened {
            Ok(fd) => {
                // SAFETY: a new fd (close-on-exec, as every pidfd) that nothing else owns.
                let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
                let pidfd = LoopFd::new(event_loop, fd);
                Ok(Child { pid, pidfd, status: Cell::new(Status::Running) })
            }
            Err(err) => {
                kill_and_wait_pid(pid);
                let why = format!("{call}: pidfd_open (Linux 5.3) for the child pid {pid}");
                match err.raw_os_error() {
                    Some(libc::ENOSYS) => Err(Error::Unsupported(format!("{why}: {err}"))),
                    _ => Err(Error::io(why, err)),
                }
            }
        }
    }

    /// The child's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// The pidfd, for the exit watch.
    pub(crate) fn pidfd(&self) -> &LoopFd {
        &self.pidfd
    }

    /// The returncode once reaped: the exit status, or minus the signal that ended it.
    pub(crate) fn returncode(&self) -> Option<i32> {
        match self.status.get() {
            Status::Running => None,
            Status::Reaped(code) => Some(code),
        }
    }

    /// Records what the exit watch's `Op::WaitId` came to: the child reaped, with its
    /// `siginfo` (read from the op's `ExitInfo`), or the op's error; the returncode. A child
    /// someone else reaped (`ECHILD`: a `waitpid(-1)` elsewhere in the process, or SIGCHLD set
    /// to `SIG_IGN`) has no status left: it reports 255, as asyncio does, with a warning.
    pub(crate) fn watched_exit(
        &self,
        waited: io::Result<u32>,
        siginfo: Option<libc::siginfo_t>,
    ) -> io::Result<i32> {
        if let Some(code) = self.returncode() {
            return Ok(code);
        }
        match waited {
            Ok(_) => siginfo.and_then(|info| self.record_reaped(&info)).ok_or_else(|| {
                io::Error::other("the exit watch completed without the child's status")
            }),
            Err(err) if err.raw_os_error() == Some(libc::ECHILD) => {
                let pid = self.pid;
                loop_log!(
                    Warn,
                    "child process pid {pid} was reaped by someone else; reporting returncode 255"
                );
                self.reaped(255);
                Ok(255)
            }
            Err(err) => Err(err),
        }
    }

    /// Records the exit `siginfo` reports, if it reports one (a `WaitId` reaped the child,
    /// also one cancelled too late to stop it): the returncode.
    pub(crate) fn record_reaped(&self, siginfo: &libc::siginfo_t) -> Option<i32> {
        let code = returncode(siginfo)?;
        self.reaped(code);
        Some(code)
    }

    /// True once the child exited, reaped or not (`WNOWAIT`: it stays a zombie for the
    /// watch to reap).
    pub(crate) fn has_exited(&self) -> bool {
        if self.returncode().is_some() {
            return true;
        }
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        matches!(self.pidfd.with_fd(|fd| wait_pidfd(fd, flags)), Some(Ok(Some(_)) | Err(_)))
    }

    /// Sends `signal` through the pidfd. Nothing is sent to a child that exited (reaped or
    /// not): that is not an error.
    pub(crate) fn send_signal(&self, signal: Signal) -> Result<()> {
        let sent = self.pidfd.with_fd(|fd| {
            let null = std::ptr::null::<libc::siginfo_t>();
            // SAFETY: a null siginfo means "as kill(2) sends it"; the pidfd is open (borrowed).
            syscall!(unsafe {
                libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), signal as i32, null, 0)
            })
        });
        match sent {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(err)) if err.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            Some(Err(err)) => {
                Err(Error::io(format!("send_signal({signal}) to child pid {}", self.pid), err))
            }
        }
    }

    /// Kills the child unless it was reaped, and reaps it: waits up to [`REAP_WAIT`] for the
    /// exit, then hands the child to a reaper thread (it reports `-SIGKILL` then). For when
    /// the loop will no longer watch the child.
    pub(crate) fn kill_and_reap(&self) {
        if self.returncode().is_some() {
            return;
        }
        let _ = self.send_signal(Signal::SIGKILL);
        let reaped = self.pidfd.with_fd(|fd| {
            let _ = wait_readable(fd, REAP_WAIT);
            wait_pidfd(fd, libc::WEXITED | libc::WNOHANG)
        });
        match reaped {
            Some(Ok(Some(code))) => self.reaped(code),
            _ => {
                self.hand_off();
                self.reaped(-libc::SIGKILL);
            }
        }
    }

    /// Records the returncode and closes the pidfd: nothing names it any more (the watch's
    /// `WaitId` ended, or the loop is gone).
    fn reaped(&self, code: i32) {
        self.status.set(Status::Reaped(code));
        self.pidfd.close(&[]);
    }

    /// A thread waits for the child and reaps it.
    fn hand_off(&self) {
        let Some(Ok(fd)) = self.pidfd.with_fd(|fd| fd.try_clone_to_owned()) else { return };
        let pid = self.pid;
        let reaper = std::thread::Builder::new().name(format!("ringloop-reap-{pid}"));
        let spawned = reaper.spawn(move || {
            let _ = wait_pidfd(fd.as_fd(), libc::WEXITED);
        });
        if let Err(err) = spawned {
            log::error!(target: "ringloop", "child pid {pid} left unreaped: no reaper thread: {err}");
        } else {
            log::warn!(target: "ringloop", "child pid {pid} did not exit after SIGKILL: a thread reaps it");
        }
    }
}

impl Drop for Child {
    /// A child nobody reaped is killed and reaped (see the module docs).
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status.get() {
            Status::Running => write!(f, "pid={} running", self.pid),
            Status::Reaped(code) => write!(f, "pid={} returncode={code}", self.pid),
        }
    }
}

/// `waitid(P_PIDFD, fd, flags)`: `Some(returncode)` if the child exited (reaped unless
/// `WNOWAIT`), `None` if `WNOHANG` found it running.
fn wait_pidfd(fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<Option<i32>> {
    // SAFETY: all-zero bytes are a valid siginfo_t.
    let mut siginfo: libc::siginfo_t = unsafe { std::mem::zeroed() };
    wait_id::waitid(fd.as_raw_fd(), &mut siginfo, flags)?;
    Ok(returncode(&siginfo))
}

/// asyncio's returncode for a siginfo from `waitid` (or `IORING_OP_WAITID`): the exit status,
/// or minus the signal that ended the child; `None` if it reports no child.
fn returncode(siginfo: &libc::siginfo_t) -> Option<i32> {
    if !wait_id::reports_exit(siginfo) {
        return None;
    }
    // SAFETY: a siginfo reporting a child (`SIGCHLD`) has the SIGCHLD fields filled in.
    let status = unsafe { siginfo.si_status() };
    Some(decode(siginfo.si_code, status))
}

/// The returncode for a `si_code` and `si_status`: the exit status, or minus the signal.
fn decode(code: libc::c_int, status: libc::c_int) -> i32 {
    match code {
        libc::CLD_EXITED => status,
        _ => -status,
    }
}

/// `poll(2)` for readability, up to `timeout`.
fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    let mut pollfd = [PollFd::new(fd, PollFlags::POLLIN)];
    let ready = retry_eintr(|| Ok(nix::poll::poll(&mut pollfd, timeout)?))?;
    Ok(ready > 0)
}

/// Kills and reaps `pid` by number: only for a child of ours not yet reaped (its pid cannot
/// have been reused), when no pidfd could be opened for it.
fn kill_and_wait_pid(pid: u32) {
    let pid = Pid::from_raw(pid as libc::pid_t);
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    let _ = retry_eintr(|| Ok(waitpid(pid, None)?));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returncode_is_the_status_or_minus_the_signal() {
        assert_eq!(decode(libc::CLD_EXITED, 3), 3);
        assert_eq!(decode(libc::CLD_EXITED, 0), 0);
        assert_eq!(decode(libc::CLD_KILLED, libc::SIGKILL), -9);
        assert_eq!(decode(libc::CLD_DUMPED, libc::SIGABRT), -6);
        // SAFETY: all-zero bytes are a valid siginfo_t: one that reports nothing.
        let nothing: libc::siginfo_t = unsafe { std::mem::zeroed() };
        assert_eq!(returncode(&nothing), None);
    }
}
