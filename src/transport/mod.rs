//! Transports: one implementation over the driver for both backends.

mod api;
mod datagram;
mod datagram_api;
mod datagram_dispatch;
pub(crate) mod dispatch;
pub(crate) mod flow_control;
mod stream;

pub use api::ExtraInfo;
pub(crate) use datagram::{DatagramCore, DatagramOp};
pub(crate) use datagram_api::describe_addr;
pub use datagram_api::DatagramTransport;
pub use stream::Transport;
pub(crate) use stream::{StreamCore, StreamOp};
