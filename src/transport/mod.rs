//! Transports: one implementation over the driver for both backends.

pub(crate) mod dispatch;
pub(crate) mod flow_control;
mod stream;

pub use stream::{ExtraInfo, Transport};
pub(crate) use stream::{StreamCore, StreamOp};
