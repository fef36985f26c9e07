//! The HTTP hello-world on ringloop streams (`start_server`, `StreamReader`, `StreamWriter`),
//! as asyncio users write it: per request `readuntil` the blank line, read the body if it has
//! one, `write` the response and `drain`.

use std::net::TcpListener;

use ringloop::{Address, Backend, Error, ServerOptions, StreamReader, StreamWriter};

use crate::http::{request_head, RESPONSE};

/// One connection: answers requests until the client closes it.
async fn hello(reader: StreamReader, writer: StreamWriter) -> Result<(), Error> {
    loop {
        let head = match reader.readuntil(b"\r\n\r\n").await {
            Ok(head) => head,
            Err(Error::IncompleteRead { .. }) => break, // EOF
            Err(e) => return Err(e),
        };
        let framed = request_head(&head).ok().flatten();
        let Some(head) = framed else { break }; // not HTTP/1.1: hang up
        if let Some(length) = head.content_length.filter(|&n| n > 0) {
            reader.readexactly(length).await?;
        }
        writer.write(RESPONSE)?;
        writer.drain().await?;
    }
    writer.close();
    Ok(())
}

/// Serves on `backend` until the process exits.
pub fn serve(
    listener: TcpListener,
    backend: Backend,
    announce: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    super::ringloop_protocol::serve_with(backend, announce, move |event_loop| async move {
        let options = ServerOptions::new().sock(listener).backlog(1024);
        event_loop.start_server(hello, Address::NONE, options).await
    })
}
