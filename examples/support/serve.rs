//! The servers' common tail: announce the listening addresses, then serve until
//! `--max-seconds` pass (or forever).

use ringloop::{ClientConnected, Error, EventLoop, Server, ServerOptions};

use super::output::{print, stdout_error};

/// Prints `serving on HOST:PORT` for each listening socket (the bound port, so `--port 0`
/// tells the caller which port it got), or `serving on PATH` for a Unix socket.
pub fn announce(server: &Server) -> Result<(), String> {
    for addr in server.sockets() {
        let addr = match (addr.as_socket(), addr.as_pathname()) {
            (Some(inet), _) => inet.to_string(),
            (None, Some(path)) => path.display().to_string(),
            (None, None) => format!("{addr:?}"),
        };
        print(format_args!("serving on {addr}")).map_err(stdout_error)?;
    }
    Ok(())
}

/// `async with server: await server.serve_forever()`; after `max_seconds` (when given) stops
/// listening and aborts the connections still open (a bounded exit even with a client that
/// has stopped reading), which ends it.
pub async fn serve_forever(
    event_loop: &EventLoop,
    server: Server,
    max_seconds: Option<f64>,
) -> Result<(), String> {
    if let Some(secs) = max_seconds {
        let closer = server.clone();
        let stop = move || {
            closer.close();
            closer.abort_clients();
        };
        event_loop.call_later(secs, stop).map_err(|e| format!("call_later: {e}"))?;
    }
    match server.scope(|server| async move { server.serve_forever().await }).await {
        Ok(()) | Err(Error::Cancelled) => Ok(()),
        Err(e) => Err(format!("serve_forever: {e}")),
    }
}

/// A streams server: `start_server(client_connected, --host, --port, options)`, announced,
/// then [`serve_forever`] for `--max-seconds`.
pub async fn serve_streams<F: ClientConnected>(
    event_loop: EventLoop,
    args: &super::Args,
    client_connected: F,
    options: ServerOptions,
) -> Result<(), String> {
    let (host, port) = (args.host.as_str(), args.port);
    let server = event_loop
        .start_server(client_connected, host, Some(port), options)
        .await
        .map_err(|e| format!("cannot serve on {host} port {port}: {e}"))?;
    announce(&server)?;
    serve_forever(&event_loop, server, args.max_seconds).await
}
