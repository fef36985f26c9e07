//! Transports: one implementation over the driver for both backends.

mod api;
mod datagram;
mod datagram_api;
pub(crate) mod dispatch;
pub(crate) mod flow_control;
pub(crate) mod loop_fd;
mod pipe;
mod pipe_read;
mod pipe_write;
mod stream;

pub use api::ExtraInfo;
pub(crate) use datagram_api::describe_addr;
pub use datagram_api::DatagramTransport;
pub use pipe_read::ReadTransport;
pub use pipe_write::WriteTransport;
pub use stream::Transport;
