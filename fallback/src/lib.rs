//! An epoll selector for ringloop's epoll backend.
//!
//! This crate knows nothing of ringloop, as Python's `selectors` knows nothing of asyncio.
//! Its epoll calls stay raw (`nix`'s `Epoll` takes `AsFd`, where a selector registers fd
//! numbers, and has no `epoll_pwait2`); `nix`'s `Errno::result` turns their `-1` into the errno.
//!
//! ```
//! use std::io::Write;
//! use std::os::fd::AsRawFd;
//! use std::os::unix::net::UnixStream;
//! use std::time::Duration;
//! use ringloop_fallback::{Events, Poller};
//!
//! # fn main() -> std::io::Result<()> {
//! let poller = Poller::new()?;
//! let (mut writer, reader) = UnixStream::pair()?;
//! poller.add(reader.as_raw_fd(), libc::EPOLLIN as u32, 7)?;
//! writer.write_all(b"x")?;
//!
//! let mut events = Events::with_capacity(16);
//! poller.wait(&mut events, Some(Duration::from_secs(1)))?;
//! assert_eq!(events.iter().next(), Some((7, libc::EPOLLIN as u32)));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs, missing_debug_implementations, unsafe_op_in_unsafe_fn)]

mod poller;

pub use poller::{Events, Iter, Poller};
