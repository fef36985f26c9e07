//! Readiness primitives for ringloop's epoll backend: an epoll poller and an eventfd waker.
//!
//! This crate knows nothing of ringloop, as Python's `selectors` knows nothing of asyncio.
//!
//! ```
//! use std::time::Duration;
//! use ringloop_fallback::{EventFd, Events, Poller};
//!
//! # fn main() -> std::io::Result<()> {
//! let poller = Poller::new()?;
//! let waker = EventFd::new()?;
//! poller.add(std::os::fd::AsRawFd::as_raw_fd(&waker), libc::EPOLLIN as u32, 7)?;
//! waker.wake()?;
//!
//! let mut events = Events::with_capacity(16);
//! poller.wait(&mut events, Some(Duration::from_secs(1)))?;
//! assert_eq!(events.iter().next(), Some((7, libc::EPOLLIN as u32)));
//! assert_eq!(waker.drain()?, 1);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs, missing_debug_implementations, unsafe_op_in_unsafe_fn)]

/// Evaluates a raw syscall's return value once and turns `-1` into
/// `Err(io::Error::last_os_error())`, anything else into `Ok(value)`.
///
/// The caller writes the `unsafe` block (and its `// SAFETY:` comment) itself:
/// `syscall!(unsafe { libc::close(fd) })`.
///
/// Exported so that ringloop's epoll backend wraps its socket syscalls the same way; not part of
/// this crate's documented API.
#[doc(hidden)]
#[macro_export]
macro_rules! syscall {
    ($ret:expr) => {{
        let ret = $ret;
        if ret == -1 {
            Err(::std::io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    }};
}

mod eventfd;
mod poller;

pub use eventfd::EventFd;
pub use poller::{Events, Iter, Poller};
