//! A non-blocking, close-on-exec eventfd used to wake a loop blocked in the kernel.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use nix::errno::Errno;
use nix::sys::eventfd::{self, EfdFlags};

/// An eventfd counter: [`EventFd::wake`] from any thread makes it readable until
/// [`EventFd::drain`] resets it. Both backends wait on it (io_uring with an armed read, epoll
/// as a registered fd), and the signal handler writes to its raw fd.
#[derive(Debug)]
pub(crate) struct EventFd {
    /// The owned eventfd (non-blocking, close-on-exec; closed on drop).
    fd: eventfd::EventFd,
}

impl EventFd {
    /// Creates a non-blocking, close-on-exec eventfd with a zero counter.
    pub(crate) fn new() -> io::Result<EventFd> {
        let flags = EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC;
        Ok(EventFd { fd: eventfd::EventFd::from_value_and_flags(0, flags)? })
    }

    /// Adds one to the counter, making the fd readable. Never blocks; a saturated
    /// counter (`EAGAIN`) already means "readable", so it is not an error.
    pub(crate) fn wake(&self) -> io::Result<()> {
        match self.fd.write(1) {
            Ok(_) | Err(Errno::EAGAIN) => Ok(()),
            Err(errno) => Err(errno.into()),
        }
    }

    /// Resets the counter to zero; returns the number of wakes it held (0 if none).
    // Only the epoll backend drains: io_uring's armed read consumes the counter itself.
    #[cfg_attr(not(feature = "fallback"), allow(dead_code))]
    pub(crate) fn drain(&self) -> io::Result<u64> {
        match self.fd.read() {
            Ok(wakes) => Ok(wakes),
            Err(Errno::EAGAIN) => Ok(0),
            Err(errno) => Err(errno.into()),
        }
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    use super::*;

    /// Waits (at most `ms`, again after a signal) for `fd` to be readable; whether it is.
    fn readable(fd: &EventFd, ms: u16) -> bool {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        loop {
            match poll(&mut fds, PollTimeout::from(ms)) {
                Err(Errno::EINTR) => {}
                ready => return ready.unwrap() == 1,
            }
        }
    }

    #[test]
    fn is_non_blocking_close_on_exec_and_starts_at_zero() {
        let fd = EventFd::new().unwrap();
        let status = OFlag::from_bits_retain(fcntl(&fd, FcntlArg::F_GETFL).unwrap());
        assert!(status.contains(OFlag::O_NONBLOCK));
        let flags = FdFlag::from_bits_retain(fcntl(&fd, FcntlArg::F_GETFD).unwrap());
        assert!(flags.contains(FdFlag::FD_CLOEXEC));
        assert!(!readable(&fd, 0));
        assert_eq!(fd.drain().unwrap(), 0, "an empty counter drains to 0, without blocking");
    }

    #[test]
    fn wakes_add_up_until_drained() {
        let fd = EventFd::new().unwrap();
        fd.wake().unwrap();
        fd.wake().unwrap();
        assert!(readable(&fd, 0));
        assert_eq!(fd.drain().unwrap(), 2);
        assert!(!readable(&fd, 0));
        assert_eq!(fd.drain().unwrap(), 0);
    }

    #[test]
    fn a_wake_from_another_thread_ends_a_wait() {
        let fd = Arc::new(EventFd::new().unwrap());
        let remote = Arc::clone(&fd);
        let start = Instant::now();
        let waker = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            remote.wake().unwrap();
        });
        assert!(readable(&fd, 10_000), "the other thread's wake makes the eventfd readable");
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert_eq!(fd.drain().unwrap(), 1);
        waker.join().unwrap();
    }

    #[test]
    fn a_saturated_counter_still_wakes() {
        let fd = EventFd::new().unwrap();
        // The counter's maximum is u64::MAX - 1: fill it, then one more wake would block.
        fd.fd.write(u64::MAX - 1).unwrap();
        fd.wake().unwrap();
        assert!(readable(&fd, 0));
        assert_eq!(fd.drain().unwrap(), u64::MAX - 1);
    }
}
