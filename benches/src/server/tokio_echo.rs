//! The reference: a tokio current_thread echo server (read into a buffer, `write_all` back).

use std::net::TcpListener;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves until the process exits.
pub fn serve(
    listener: TcpListener,
    announce: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| format!("listener set_nonblocking: {e}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| format!("TcpListener::from_std: {e}"))?;
        announce()?;
        loop {
            let (mut stream, _) = listener.accept().await.map_err(|e| format!("accept: {e}"))?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
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
            });
        }
    })
}
