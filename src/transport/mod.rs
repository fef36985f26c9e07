//! Transports: one skeleton over the driver, on both backends.
//!
//! # The skeleton
//! As CPython builds `_SelectorTransport` and `_FlowControlMixin` once and specialises only the
//! read and write paths, every transport here is [`base::TransportBase`] (the fd as a
//! [`loop_fd::LoopFd`], the one lifecycle, the protocol's dispatcher, the lost-write rule) with
//! [`base::TransportCore`] (closing, aborting, `connection_lost` once, protocol failures)
//! composed with the paths it needs:
//!
//! | transport | read path | write path |
//! |---|---|---|
//! | stream (`stream.rs`) | [`read_side::ReadSide`] on a socket (`RecvMulti`) | [`write_side::WriteSide`] to a socket (`send`) |
//! | read pipe (`pipe.rs`) | `ReadSide` on a file (`Read`) | — |
//! | write pipe (`pipe.rs`) | — | `WriteSide` to a file (`write`) |
//! | datagram (`datagram.rs`) | its own `RecvMsgMulti` | its own `SendQueue` of datagrams |
//!
//! Protocol calls go through `dispatch/` (the re-entrancy queue, and the adapters that
//! type-erase each kind of protocol); water marks and buffers are `flow_control.rs`. Each
//! transport core is the owner of its driver ops ([`OpTarget`](crate::event_loop::OpTarget))
//! and tells them apart by the ids its sides store.
//!
//! # The layer seam (TLS)
//! A layer such as TLS sits between a stream transport and the user's protocol, as asyncio's
//! `sslproto` does: it is a *protocol* of the stream transport below (it receives the
//! ciphertext through `data_received`/`BufferedProtocol`, writes with `write`, is told of
//! `pause_writing`, `eof_received`, `connection_lost`) and a *transport* to the protocol above
//! (the same public methods as [`Transport`]). Nothing in the driver or in these files learns
//! of it: the layer uses only the stream transport's public interface (`set_protocol` inserts
//! it into a live connection for `start_tls`).

pub(crate) mod base;
mod datagram;
pub(crate) mod dispatch;
pub(crate) mod flow_control;
pub(crate) mod loop_fd;
mod pipe;
mod read_side;
mod stream;
mod write_side;

use std::os::fd::RawFd;

pub(crate) use datagram::describe_addr;
pub use datagram::DatagramTransport;
pub use pipe::{ReadTransport, WriteTransport};
pub use stream::Transport;

/// A value of a transport's `get_extra_info`.
#[derive(Clone, Debug)]
pub enum ExtraInfo {
    /// A socket address (`peername`, `sockname`).
    Address(socket2::SockAddr),
    /// A file descriptor (`socket`, `pipe`).
    Fd(RawFd),
}

impl ExtraInfo {
    /// A socket transport's `get_extra_info(name)`: `"peername"` and `"sockname"` (the
    /// addresses at creation), `"socket"` (the fd while open).
    pub(crate) fn of_socket(
        name: &str,
        peername: &Option<socket2::SockAddr>,
        sockname: &Option<socket2::SockAddr>,
        fd: &loop_fd::LoopFd,
    ) -> Option<ExtraInfo> {
        match name {
            "peername" => peername.clone().map(ExtraInfo::Address),
            "sockname" => sockname.clone().map(ExtraInfo::Address),
            "socket" => fd.open_fd().map(ExtraInfo::Fd),
            _ => None,
        }
    }
}
