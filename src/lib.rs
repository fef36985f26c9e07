//! ringloop: Python asyncio's event loop for Linux, io_uring first.
#![deny(unsafe_op_in_unsafe_fn)]

pub(crate) mod driver;
mod error;

pub use driver::Backend;
pub use error::{Error, Result};
