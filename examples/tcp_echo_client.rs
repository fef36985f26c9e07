//! TCP echo client using the protocol API: the asyncio documentation's "TCP Echo Client"
//! example, ported. [`EventLoop::create_connection`] connects; `EchoClientProtocol` sends the
//! message, prints what comes back, and when the server closes the connection sets the
//! `on_con_lost` future the program awaits. Against the `tcp_echo_server` example it prints
//! exactly what the Python example prints:
//!
//! ```text
//! Data sent: 'Hello World!'
//! Data received: 'Hello World!'
//! The server closed the connection
//! ```
//!
//! Start `cargo run --example tcp_echo_server` first, then run
//! `cargo run --example tcp_echo_client -- [OPTIONS]`. Options: `--host HOST` (default
//! `127.0.0.1`), `--port PORT` (default `8888`), `--backend uring|epoll` (`epoll` needs
//! `--features fallback`; without the option, `RINGLOOP_BACKEND` or the best one available),
//! `--message TEXT` (default `Hello World!`).
//!
//! [`EventLoop::create_connection`]: ringloop::EventLoop::create_connection

use std::process::ExitCode;

use ringloop::{BaseProtocol, ConnectOptions, Error, EventLoop, Protocol, Transport};

mod support;
use support::{py_repr, Args, Flag, Session, Spec};

/// The command line: `--host`, `--port`, `--backend`, `--message`.
const SPEC: Spec = Spec { name: "tcp_echo_client", port: 8888, flags: &[Flag::Message] };

/// Sends `message` once connected, prints what comes back, and resolves `on_con_lost` when
/// the connection is gone.
struct EchoClientProtocol {
    /// What to send.
    message: String,
    /// Where to print; holds `on_con_lost`, which `connection_lost` sets and `talk` awaits.
    session: Session,
}

impl BaseProtocol for EchoClientProtocol {
    fn connection_made(&mut self, transport: Transport) {
        if let Err(e) = transport.write(self.message.as_bytes()) {
            self.session.keep(format!("write: {e}"));
        }
        self.session.print(format_args!("Data sent: {}", py_repr(&self.message)));
    }

    fn connection_lost(&mut self, _error: Option<Error>) {
        self.session.lost("The server closed the connection");
    }
}

impl Protocol for EchoClientProtocol {
    fn data_received(&mut self, data: &[u8]) {
        self.session
            .print(format_args!("Data received: {}", py_repr(&String::from_utf8_lossy(data))));
    }
}

/// Connects, then waits until the protocol signals that the connection was lost.
async fn talk(event_loop: EventLoop, args: Args) -> Result<(), String> {
    let address = args.address();
    let session = Session::new(&event_loop);
    let protocol = EchoClientProtocol { message: args.message, session: session.clone() };
    let (transport, _protocol) = event_loop
        .create_connection(move || protocol, &address, ConnectOptions::new())
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    // Wait until the protocol signals that the connection is lost and close the transport.
    session.until_lost(|| transport.close()).await
}

fn main() -> ExitCode {
    support::run_async(&SPEC, talk)
}
