//! The `sendfile` workload's servers: each sends the whole of one file to every connection it
//! accepts, from offset 0, then closes that connection. Nothing is read from the client.
//!
//! - `ringloop-uring`, `ringloop-epoll`: `create_server`, and per connection a task that
//!   opens the file and awaits `EventLoop::sendfile` on the transport (`ringloop.rs`);
//! - `ringloop-copy`: the same on io_uring, but the file's bytes come through a pipe, which
//!   forces ringloop's chunked fallback (`Op::Read` into a buffer, then the transport's write
//!   path); a feeder thread per connection splices the file into the pipe (`ringloop.rs`);
//! - `raw-sendfile`, `raw-splice`: no event loop; one thread `poll(2)`s the listener and the
//!   non-blocking sockets and moves each connection on with `sendfile(2)`, or with `splice(2)`
//!   file → pipe → socket (`raw.rs`).
//!
//! Every server opens the file once per connection, as a static-file server does, and sets
//! `TCP_NODELAY` on the connection (ringloop's transports set it).

mod raw;
mod ringloop;

use std::net::TcpListener;
use std::path::Path;

use super::Impl;

/// Serves `file` with `which` on `listener` until the process exits; `announce` once ready.
pub fn serve(
    which: Impl,
    listener: TcpListener,
    file: &Path,
    announce: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let result = match which {
        Impl::RingloopUring => ringloop::serve(listener, file, ringloop::Source::Uring, announce),
        Impl::RingloopEpoll => ringloop::serve(listener, file, ringloop::Source::Epoll, announce),
        Impl::RingloopCopy => ringloop::serve(listener, file, ringloop::Source::Copy, announce),
        Impl::RawSendfile => raw::serve::<raw::SendFile>(listener, file, announce),
        Impl::RawSplice => raw::serve::<raw::Splice>(listener, file, announce),
        _ => Err(format!("no sendfile server {which}")),
    };
    result.map_err(|e| format!("sendfile {which} server: {e}"))
}

#[cfg(test)]
mod tests;
