//! `WaitId`: a child reaped with its status (an exit code, a real-time signal), not before it
//! exits; a cancel leaves the child to `waitid`, or (a `WAITID` the exit already woke) reaped
//! it and says so in the op's `ExitInfo`, never both, never neither; `close_fd` of the pidfd
//! waits for the op; a shutdown ends every wait at once.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::unistd::pipe2;

use super::{collect, each_config, high, is_open, outcomes, run, run_errno, settle, turns, LIMIT};
use crate::driver::any::Driver;
use crate::driver::wait_id::{reports_exit, waitid};
use crate::driver::{ExitInfo, Op, OpId};

/// A child process of the test, held by its pidfd.
///
/// Spawned with a fork-like `clone(CLONE_PIDFD)` and signalled with `kill` (while it is
/// surely unreaped), not with `pidfd_open` and `pidfd_send_signal`: valgrind 3.19, which runs
/// this suite under memcheck, knows neither.
struct Kid {
    /// Its pid, to check the siginfo against and to signal while it is unreaped.
    pid: libc::pid_t,
    /// Its pidfd; `None` once the test gave it to the driver to close.
    pidfd: Option<OwnedFd>,
    /// The write end of `cat`'s stdin: dropping it ends the child (exit status 0).
    stdin: Option<OwnedFd>,
}

impl Kid {
    /// `cat` reading a pipe: it runs until [`end`](Self::end) closes the pipe.
    fn cat() -> Kid {
        let (read, write) = pipe2(OFlag::O_CLOEXEC).expect("pipe2");
        let mut kid = Kid::spawn(&["/bin/cat"], Some(read.as_raw_fd()));
        kid.stdin = Some(write);
        kid
    }

    /// `sh -c "exit <code>"`.
    fn exiting(code: i32) -> Kid {
        Kid::spawn(&["/bin/sh", "-c", &format!("exit {code}")], None)
    }

    /// Runs `argv` (a path and its arguments) in a new child, with `stdin` as its fd 0 if
    /// given, and an empty environment.
    fn spawn(argv: &[&str], stdin: Option<RawFd>) -> Kid {
        let args: Vec<CString> = argv.iter().map(|a| CString::new(*a).unwrap()).collect();
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let envp = [std::ptr::null::<libc::c_char>()];
        let mut pidfd: libc::c_int = -1;
        let flags = (libc::CLONE_PIDFD | libc::SIGCHLD) as libc::c_ulong;
        // SAFETY: a fork-like clone (no CLONE_VM, no new stack): the child runs on a copy of
        // this address space; with CLONE_PIDFD the kernel writes the pidfd into the live int
        // `pidfd` (the parent-tid argument).
        let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0, &mut pidfd, 0, 0) };
        if pid == 0 {
            // The child of a multi-threaded process: only async-signal-safe calls, on memory
            // prepared before the clone.
            // SAFETY: dup2, execve and _exit take that memory (NUL-terminated strings and
            // null-terminated arrays of them) and nothing else.
            unsafe {
                if let Some(fd) = stdin {
                    libc::dup2(fd, 0);
                }
                libc::execve(argv[0], argv.as_ptr(), envp.as_ptr());
                libc::_exit(127);
            }
        }
        assert!(pid > 0, "clone: {}", io::Error::last_os_error());
        // SAFETY: the kernel just created `pidfd` for this child; nothing else owns it.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        Kid { pid: pid as libc::pid_t, pidfd: Some(pidfd), stdin: None }
    }

    /// The pidfd's number.
    fn fd(&self) -> RawFd {
        self.pidfd.as_ref().expect("the pidfd").as_raw_fd()
    }

    /// A `WaitId` on the pidfd, and its siginfo.
    fn wait_op(&self) -> (Op, Rc<ExitInfo>) {
        wait_op(self.fd())
    }

    /// Ends `cat` (closes its stdin).
    fn end(&mut self) {
        self.stdin = None;
    }

    /// Sends `signal` to the child, which must be running.
    fn signal(&self, signal: i32) {
        assert!(self.runs(), "signalling a child that is not running");
        // SAFETY: kill takes no pointers; the child is ours and unreaped (it runs, and only
        // this test reaps it), so its pid is not reused.
        let rc = unsafe { libc::kill(self.pid, signal) };
        assert_eq!(rc, 0, "kill: {}", io::Error::last_os_error());
    }

    /// `waitid(P_PIDFD, WEXITED | flags)`: the siginfo if it reports the child.
    fn waitid(&self, flags: i32) -> io::Result<Option<libc::siginfo_t>> {
        // SAFETY: all-zero bytes are a valid siginfo_t.
        let mut siginfo = unsafe { std::mem::zeroed() };
        Ok(waitid(self.fd(), &mut siginfo, libc::WEXITED | flags)?.then_some(siginfo))
    }

    /// Blocks until the child exited, leaving it unreaped.
    fn wait_exited(&self) {
        assert!(self.waitid(libc::WNOWAIT).expect("waitid").is_some(), "no exit reported");
    }

    /// Whether the child runs (not exited, as a non-reaping `waitid` sees it).
    fn runs(&self) -> bool {
        self.waitid(libc::WNOHANG | libc::WNOWAIT).expect("waitid").is_none()
    }
}

impl Drop for Kid {
    /// Kills and reaps a child the test left unreaped (a failed test's); one already reaped is
    /// `ECHILD` to its pidfd, and its pid is not touched.
    fn drop(&mut self) {
        if self.pidfd.is_none() || self.waitid(libc::WNOHANG | libc::WNOWAIT).is_err() {
            return;
        }
        // SAFETY: kill takes no pointers; the child is unreaped (just checked, and nothing
        // else reaps it now), so its pid is still its own.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let _ = self.waitid(0);
    }
}

/// Checks `siginfo` reports child `kid` ended with `si_code` `code` and `si_status` `status`.
fn assert_reports(siginfo: &libc::siginfo_t, kid: &Kid, code: i32, status: i32) {
    assert!(reports_exit(siginfo), "no exit reported: si_signo {}", siginfo.si_signo);
    // SAFETY: a siginfo reporting a child has the SIGCHLD fields filled in.
    let (pid, got) = unsafe { (siginfo.si_pid(), siginfo.si_status()) };
    assert_eq!((pid, siginfo.si_code, got), (kid.pid, code, status));
}

/// A `WaitId` on `pidfd`, and its siginfo.
fn wait_op(pidfd: RawFd) -> (Op, Rc<ExitInfo>) {
    let info = ExitInfo::new();
    (Op::WaitId { pidfd, info: info.clone() }, info)
}

/// The siginfo, now that the driver let go of the op.
fn released(info: &Rc<ExitInfo>) -> libc::siginfo_t {
    ExitInfo::get(info).expect("the driver still holds the op's ExitInfo")
}

/// Whether `d` reaps with `IORING_OP_WAITID` (a cancel can come too late for it).
fn uses_waitid(d: &Driver<u32>) -> bool {
    d.features().contains(&"waitid")
}

/// Submits a wait (owner 1) and checks that `turns_before` turns leave it waiting.
fn submit_waiting(
    d: &mut Driver<u32>,
    (op, info): (Op, Rc<ExitInfo>),
    turns_before: usize,
) -> (OpId, Rc<ExitInfo>) {
    let id = d.submit(op, 1);
    let early = turns(d, turns_before);
    assert!(early.is_empty(), "{early:?}");
    (id, info)
}

/// Checks that the wait `id` completes, reporting `kid` ended with `code` and `status`.
fn assert_reaped(
    d: &mut Driver<u32>,
    (id, info): (OpId, Rc<ExitInfo>),
    kid: &Kid,
    code: i32,
    status: i32,
) {
    let out = collect(d, 1, LIMIT);
    assert_eq!(outcomes(&out), [(id, 1, 0)]);
    drop(out);
    assert_reports(&released(&info), kid, code, status);
}

#[test]
fn wait_id_reaps_an_exited_child_with_its_exit_status() {
    each_config(|mut d| {
        let kid = Kid::exiting(3);
        let (op, info) = kid.wait_op();
        let c = run(&mut d, op);
        assert_eq!(c.result.unwrap(), 0);
        assert!(matches!(c.op, Some(Op::WaitId { .. })), "{:?}", c.op);
        drop(c.op);
        assert_reports(&released(&info), &kid, libc::CLD_EXITED, 3);
        let again = kid.waitid(libc::WNOHANG).unwrap_err();
        assert_eq!(again.raw_os_error(), Some(libc::ECHILD), "reaped once, by the op");
        assert_eq!(run_errno(&mut d, wait_op(-1).0), Some(libc::EBADF), "a negative pidfd");
    });
}

#[test]
fn wait_id_waits_while_the_child_runs() {
    each_config(|mut d| {
        let mut kid = Kid::cat();
        let wait = submit_waiting(&mut d, kid.wait_op(), 3);
        assert!(kid.runs(), "reaped or gone while it ran");
        kid.end();
        assert_reaped(&mut d, wait, &kid, libc::CLD_EXITED, 0);
    });
}

#[test]
fn wait_id_reports_the_real_time_signal_that_killed_the_child() {
    each_config(|mut d| {
        let kid = Kid::cat();
        let wait = submit_waiting(&mut d, kid.wait_op(), 1);
        let signal = libc::SIGRTMIN() + 1;
        kid.signal(signal);
        assert_reaped(&mut d, wait, &kid, libc::CLD_KILLED, signal);
    });
}

#[test]
fn a_cancelled_wait_id_leaves_the_child_to_waitid() {
    each_config(|mut d| {
        let mut kid = Kid::cat();
        // Withdrawn before the kernel saw it, then cancelled in the kernel.
        for in_kernel in [false, true] {
            let (op, info) = kid.wait_op();
            let id = d.submit(op, 1);
            if in_kernel {
                assert!(turns(&mut d, 1).is_empty());
            }
            assert_eq!(d.cancel(id), Some(1));
            let out = settle(&mut d);
            assert!(out.is_empty(), "{out:?}");
            assert!(!reports_exit(&released(&info)), "a cancelled op reaped a running child");
        }
        kid.end();
        let siginfo = kid.waitid(0).expect("waitid").expect("the child is ours to reap");
        assert_reports(&siginfo, &kid, libc::CLD_EXITED, 0);
    });
}

#[test]
fn a_wait_id_cancelled_after_the_exit_reaps_once_and_keeps_the_status() {
    each_config(|mut d| {
        let mut kid = Kid::cat();
        let (id, info) = submit_waiting(&mut d, kid.wait_op(), 1);
        kid.end();
        kid.wait_exited();
        // The exit woke the op, which has not run since: too late to cancel a WAITID.
        assert_eq!(d.cancel(id), Some(1));
        let out = settle(&mut d);
        assert!(out.is_empty(), "{out:?}");
        let siginfo = released(&info);
        let left = kid.waitid(libc::WNOHANG);
        if uses_waitid(&d) {
            assert_reports(&siginfo, &kid, libc::CLD_EXITED, 0);
            assert_eq!(left.unwrap_err().raw_os_error(), Some(libc::ECHILD), "reaped twice?");
        } else {
            assert!(!reports_exit(&siginfo), "the poll route reaped after a cancel");
            let siginfo = left.expect("waitid").expect("the child is ours to reap");
            assert_reports(&siginfo, &kid, libc::CLD_EXITED, 0);
        }
    });
}

#[test]
fn close_fd_of_a_pidfd_waits_for_its_wait_id() {
    each_config(|mut d| {
        let mut kid = Kid::cat();
        let pidfd = high(kid.pidfd.take().unwrap());
        let number = pidfd.as_raw_fd();
        let wait = submit_waiting(&mut d, wait_op(number), 1);
        d.close_fd(pidfd);
        assert!(turns(&mut d, 2).is_empty());
        assert!(is_open(number), "closed while a WaitId names it");
        kid.end();
        assert_reaped(&mut d, wait, &kid, libc::CLD_EXITED, 0);
        assert!(!is_open(number), "not closed once the WaitId ended");
    });
}

#[test]
fn shutting_down_ends_every_wait_id_at_once() {
    each_config(|mut d| {
        // The older wait first: the kernel lists the newer one ahead of it.
        let (mut older, mut newer) = (Kid::cat(), Kid::cat());
        let (op, older_info) = older.wait_op();
        d.submit(op, 1);
        let (op, newer_info) = newer.wait_op();
        d.submit(op, 2);
        assert!(turns(&mut d, 1).is_empty());
        // The newer one's exit wakes its op, which a cancel then no longer stops.
        newer.end();
        newer.wait_exited();
        let start = Instant::now();
        let (clean, owners) = d.shut_down();
        assert!(clean, "ops left in the kernel");
        assert!(start.elapsed() < Duration::from_millis(500), "{:?}", start.elapsed());
        assert_eq!(owners.len(), 2);
        assert!(!reports_exit(&released(&older_info)), "the older child was reaped");
        assert!(older.runs());
        older.end();
        older.wait_exited();
        let newer_left = newer.waitid(libc::WNOHANG);
        if reports_exit(&released(&newer_info)) {
            assert_eq!(newer_left.unwrap_err().raw_os_error(), Some(libc::ECHILD));
        } else {
            assert!(newer_left.expect("waitid").is_some(), "the newer child is gone");
        }
    });
}
