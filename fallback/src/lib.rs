//! Readiness primitives for ringloop's epoll backend: an epoll poller and an eventfd waker.
//!
//! This crate knows nothing of ringloop, as Python's `selectors` knows nothing of asyncio.
#![deny(missing_docs, missing_debug_implementations, unsafe_op_in_unsafe_fn)]

mod eventfd;

pub use eventfd::EventFd;
