//! The reference: tokio's current_thread runtime, a task per connection that reads into a
//! buffer and `write_all`s what its [`Reply`] makes of each chunk.

use std::net::TcpListener;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Reply;

/// One connection: answers until the client closes it or sends what `R` rejects.
async fn connection<R: Reply + Send>(mut stream: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut reply = R::default();
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let answer = match reply.reply(&buf[..n]) {
            Ok(answer) => answer,
            Err(_) => break, // not the workload's protocol: hang up
        };
        if !answer.is_empty() && stream.write_all(answer).await.is_err() {
            break;
        }
    }
}

/// Accepts connections until the process exits, spawning a [`connection`] task for each
/// (`TCP_NODELAY` set).
pub fn serve<R: Reply + Send>(
    listener: TcpListener,
    announce: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    serve_each(listener, announce, Timers::Off, connection::<R>)
}

/// Whether the runtime has tokio's timer driver: only servers that sleep (hyper's header-read
/// timeout) pay for it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Timers {
    Off,
    On,
}

/// Runs a current_thread runtime that accepts on `listener` until the process exits and
/// spawns `connection(stream)` for each (`TCP_NODELAY` set); `announce` once it listens.
pub fn serve_each<F, Fut>(
    listener: TcpListener,
    announce: impl FnOnce() -> Result<(), String>,
    timers: Timers,
    connection: F,
) -> Result<(), String>
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_io();
    if timers == Timers::On {
        builder.enable_time();
    }
    let runtime = builder.build().map_err(|e| format!("tokio runtime: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| format!("listener set_nonblocking: {e}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| format!("TcpListener::from_std: {e}"))?;
        announce()?;
        loop {
            let (stream, _) = listener.accept().await.map_err(|e| format!("accept: {e}"))?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(connection(stream));
        }
    })
}
