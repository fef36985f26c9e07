//! The ringloop servers on protocols, as a user would write them: `create_server` with a
//! [`Served`] protocol that writes back what its [`Reply`] makes of each chunk, then
//! `serve_forever`; over TLS, the same with `ssl`.

use std::future::Future;
use std::net::TcpListener;

use ringloop::{
    Address, Backend, BaseProtocol, Error, EventLoop, Protocol, Server, ServerOptions, Transport,
};

use super::Reply;

/// A connection's protocol: each chunk received goes to `reply`, and what it answers is
/// written in one `write`.
#[derive(Debug, Default)]
struct Served<R> {
    /// The connection's transport, from `connection_made` until `connection_lost`.
    transport: Option<Transport>,
    /// What the workload answers.
    reply: R,
}

impl<R: Reply> BaseProtocol for Served<R> {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }

    fn connection_lost(&mut self, _error: Option<Error>) {
        self.transport = None; // breaks the transport <-> protocol cycle
    }
}

impl<R: Reply> Protocol for Served<R> {
    fn data_received(&mut self, data: &[u8]) {
        let Some(transport) = &self.transport else { return };
        match self.reply.reply(data) {
            Ok([]) => {}
            Ok(answer) => {
                if transport.write(answer).is_err() {
                    transport.close();
                }
            }
            Err(_) => transport.close(), // not the workload's protocol: hang up
        }
    }
}

/// Serves `R`'s workload on `backend` until the process exits.
pub fn serve<R: Reply>(
    listener: TcpListener,
    backend: Backend,
    announce: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    serve_with(backend, announce, move |event_loop| async move {
        let options = ServerOptions::new().sock(listener).backlog(1024);
        event_loop.create_server(Served::<R>::default, Address::NONE, options).await
    })
}

/// The echo over TLS on `backend` ([`crate::tls::material::server_config`]), until the
/// process exits.
pub fn serve_tls(
    listener: TcpListener,
    backend: Backend,
    announce: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let config = crate::tls::material::server_config()?;
    serve_with(backend, announce, move |event_loop| async move {
        let options = ServerOptions::new().sock(listener).backlog(1024).ssl(config);
        event_loop.create_server(Served::<super::Echo>::default, Address::NONE, options).await
    })
}

/// Runs a loop on `backend`, starts a server on it with `start`, then `serve_forever`.
pub fn serve_with<F: Future<Output = Result<Server, Error>> + 'static>(
    backend: Backend,
    announce: impl FnOnce() -> Result<(), String>,
    start: impl FnOnce(EventLoop) -> F,
) -> Result<(), String> {
    let event_loop = EventLoop::with_backend(backend).map_err(|e| e.to_string())?;
    let server = event_loop
        .run_until_complete(start(event_loop.clone()))
        .and_then(|server| server)
        .map_err(|e| format!("starting the server: {e}"))?;
    announce()?;
    event_loop
        .run_until_complete(async move { server.serve_forever().await })
        .and_then(|served| served)
        .map_err(|e| format!("serve_forever: {e}"))
}
