//! The ringloop echo server, on today's API: a non-blocking `TcpListener` watched with
//! `add_reader`, each accepted stream handed to `connect_accepted_socket` with the [`Echo`]
//! protocol. (When `create_server` lands, it replaces `serve`'s accept loop.)

use std::cell::RefCell;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;

use ringloop::{Backend, BaseProtocol, Error, EventLoop, Protocol, Transport};

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

/// Serves on `backend` until the process exits.
pub fn serve(
    listener: TcpListener,
    backend: Backend,
    announce: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let event_loop = EventLoop::with_backend(backend).map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| format!("listener set_nonblocking: {e}"))?;
    let listener = Rc::new(listener);
    let first_error: Rc<RefCell<Option<String>>> = Rc::default();
    let accept = {
        let (event_loop, listener, first_error) =
            (event_loop.clone(), listener.clone(), first_error.clone());
        move || loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let el = event_loop.clone();
                    let task = event_loop.create_task(async move {
                        if let Err(e) =
                            el.connect_accepted_socket(Echo::default, OwnedFd::from(stream)).await
                        {
                            eprintln!("connect_accepted_socket: {e}");
                        }
                    });
                    if let Err(e) = task {
                        eprintln!("create_task: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    first_error.borrow_mut().get_or_insert(format!("accept: {e}"));
                    event_loop.stop();
                    break;
                }
            }
        }
    };
    event_loop.add_reader(listener.as_raw_fd(), accept).map_err(|e| e.to_string())?;
    announce()?;
    event_loop.run_forever().map_err(|e| e.to_string())?;
    let error = first_error.borrow_mut().take();
    error.map_or(Ok(()), Err)
}
