//! The ringloop echo server: `create_server` with the [`Echo`] protocol, as a user would
//! write it.

use std::net::TcpListener;

use ringloop::{Backend, BaseProtocol, Error, EventLoop, Protocol, ServerOptions, Transport};

/// Writes back whatever it receives.
#[derive(Debug, Default)]
struct Echo {
    /// The connection's transport, from `connection_made` until `connection_lost`.
    transport: Option<Transport>,
}

impl BaseProtocol for Echo {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }

    fn connection_lost(&mut self, _error: Option<Error>) {
        self.transport = None; // breaks the transport <-> protocol cycle
    }
}

impl Protocol for Echo {
    fn data_received(&mut self, data: &[u8]) {
        if let Some(transport) = &self.transport {
            if transport.write(data).is_err() {
                transport.close();
            }
        }
    }
}

/// Serves on `backend` until the process exits: `create_server` on the runner's listening
/// socket, then `serve_forever`.
pub fn serve(
    listener: TcpListener,
    backend: Backend,
    announce: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let event_loop = EventLoop::with_backend(backend).map_err(|e| e.to_string())?;
    let options = ServerOptions::default().sock(listener).backlog(1024);
    let creator = event_loop.clone();
    let create =
        async move { creator.create_server(Echo::default, None::<&str>, None, options).await };
    let server = event_loop
        .run_until_complete(create)
        .and_then(|server| server)
        .map_err(|e| format!("create_server: {e}"))?;
    announce()?;
    event_loop
        .run_until_complete(async move { server.serve_forever().await })
        .and_then(|served| served)
        .map_err(|e| format!("serve_forever: {e}"))
}
