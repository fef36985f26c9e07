//! Transports: one implementation over the driver for both backends.

mod api;
pub(crate) mod dispatch;
pub(crate) mod flow_control;
mod stream;

pub use api::ExtraInfo;
pub use stream::Transport;
pub(crate) use stream::{StreamCore, StreamOp};
