//! A non-blocking, close-on-exec eventfd used to wake a loop blocked in the kernel.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An eventfd counter: [`EventFd::wake`] from any thread makes it readable until
/// [`EventFd::drain`] resets it.
#[derive(Debug)]
pub struct EventFd {
    /// The owned eventfd descriptor (closed on drop).
    fd: OwnedFd,
}

impl EventFd {
    /// Creates a non-blocking, close-on-exec eventfd with a zero counter.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers.
        let fd = syscall!(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        Ok(EventFd { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Adds one to the counter, making the fd readable. Never blocks; a saturated
    /// counter (`EAGAIN`) already means "readable", so it is not an error.
    pub fn wake(&self) -> io::Result<()> {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local u64 to a descriptor we own.
        match syscall!(unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) })
        {
            Err(err) if err.kind() != io::ErrorKind::WouldBlock => Err(err),
            _ => Ok(()),
        }
    }

    /// Resets the counter to zero; returns the number of wakes it held (0 if none).
    pub fn drain(&self) -> io::Result<u64> {
        let mut value: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live local u64 from a descriptor we own.
        match syscall!(unsafe {
            libc::read(self.fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8)
        }) {
            Ok(_) => Ok(value),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(err) => Err(err),
        }
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
