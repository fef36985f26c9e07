//! The servers' common tail: announce the listening addresses, then serve until SIGINT or
//! SIGTERM (a graceful shutdown) or until `--max-seconds` pass.

use ringloop::{ClientConnected, EventLoop, Server, ServerOptions, Shutdown};

use super::output::{print, stdout_error};

/// How long the servers give their connections to finish after SIGINT or SIGTERM; a second
/// signal aborts them at once.
pub const GRACE_SECONDS: f64 = 5.0;

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

/// A [`Shutdown`] that SIGINT and SIGTERM request, on `event_loop`.
pub fn shutdown_on_signals(event_loop: &EventLoop) -> Result<Shutdown, String> {
    let shutdown = Shutdown::new();
    shutdown.on_signals(event_loop).map_err(|e| format!("add_signal_handler: {e}"))?;
    Ok(shutdown)
}

/// [`announce_and_serve_until`] a SIGINT or SIGTERM.
pub async fn announce_and_serve(
    event_loop: &EventLoop,
    server: Server,
    max_seconds: Option<f64>,
) -> Result<(), String> {
    let shutdown = match shutdown_on_signals(event_loop) {
        Ok(shutdown) => shutdown,
        Err(err) => {
            server.close();
            return Err(err);
        }
    };
    announce_and_serve_until(event_loop, server, max_seconds, &shutdown).await
}

/// After `max_seconds` (when given), `server` stops listening and aborts its connections at
/// once (a bounded exit even with a client that has stopped reading).
pub fn stop_after(
    event_loop: &EventLoop,
    server: &Server,
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
    Ok(())
}

/// Announces the server, then serves until `shutdown` is requested, and shuts down gracefully
/// ([`Server::serve_until`]: stop listening, [`GRACE_SECONDS`] for the connections, abort the
/// rest); [`stop_after`] `max_seconds`.
pub async fn announce_and_serve_until(
    event_loop: &EventLoop,
    server: Server,
    max_seconds: Option<f64>,
    shutdown: &Shutdown,
) -> Result<(), String> {
    // The signal handlers are in place before the line is printed: a signal sent as soon as
    // it appears is handled.
    if let Err(err) = announce(&server) {
        server.close();
        return Err(err);
    }
    stop_after(event_loop, &server, max_seconds)?;
    server.serve_until(shutdown, GRACE_SECONDS).await.map_err(|e| format!("serve_until: {e}"))
}

/// A streams server: `start_server(client_connected, --host, --port, options)`, then
/// [`announce_and_serve`] (until SIGINT/SIGTERM or `--max-seconds`).
pub async fn serve_streams<F: ClientConnected>(
    event_loop: EventLoop,
    args: &super::Args,
    client_connected: F,
    options: ServerOptions,
) -> Result<(), String> {
    let address = args.address();
    let server = event_loop
        .start_server(client_connected, &address, options)
        .await
        .map_err(|e| format!("cannot serve on {address}: {e}"))?;
    announce_and_serve(&event_loop, server, args.max_seconds).await
}
