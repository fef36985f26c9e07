//! The TLS reference: tokio's current_thread runtime with tokio-rustls, on the very same
//! rustls `ServerConfig` as the ringloop TLS servers; a task per connection that echoes what
//! it reads.

use std::net::TcpListener;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::tokio_server::Timers;

/// One connection: the handshake, then an echo until the client closes it.
async fn connection(acceptor: TlsAcceptor, stream: TcpStream) {
    let Ok(mut stream) = acceptor.accept(stream).await else { return };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = stream.shutdown().await; // close_notify back
}

/// Accepts connections until the process exits, spawning a [`connection`] task for each.
pub fn serve(
    listener: TcpListener,
    announce: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let acceptor = TlsAcceptor::from(crate::tls::material::server_config()? as Arc<_>);
    super::tokio_server::serve_each(listener, announce, Timers::Off, move |stream| {
        connection(acceptor.clone(), stream)
    })
}
