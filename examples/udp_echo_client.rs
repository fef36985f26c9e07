//! UDP echo client: the asyncio documentation's "UDP Echo Client" example, ported.
//! [`EventLoop::create_datagram_endpoint`] connects to `remote_addr`; `EchoClientProtocol`
//! sends the message, prints the reply, closes the endpoint, and `connection_lost` sets the
//! `on_con_lost` future the program awaits. Against the `udp_echo_server` example it prints
//! exactly what the Python example prints:
//!
//! ```text
//! Send: Hello World!
//! Received: Hello World!
//! Close the socket
//! Connection closed
//! ```
//!
//! Start `cargo run --example udp_echo_server` first, then run
//! `cargo run --example udp_echo_client -- [OPTIONS]`. Options: `--host HOST` (default
//! `127.0.0.1`), `--port PORT` (default `9999`), `--backend uring|epoll` (`epoll` needs
//! `--features fallback`; without the option, `RINGLOOP_BACKEND` or the best one available),
//! `--message TEXT` (default `Hello World!`). With no server listening, the refusal is printed
//! as `Error received: ...` and the client waits, as the Python one does.
//!
//! [`EventLoop::create_datagram_endpoint`]: ringloop::EventLoop::create_datagram_endpoint

use std::process::ExitCode;

use ringloop::{
    BaseProtocol, DatagramOptions, DatagramProtocol, DatagramTransport, Error, EventLoop,
};
use socket2::SockAddr;

mod support;
use support::{Args, Flag, Session, Spec};

/// The command line: `--host`, `--port`, `--backend`, `--message`.
const SPEC: Spec = Spec { name: "udp_echo_client", port: 9999, flags: &[Flag::Message] };

/// Sends `message` once the endpoint is made, prints the reply and closes; resolves
/// `on_con_lost` when the endpoint is closed.
struct EchoClientProtocol {
    /// What to send.
    message: String,
    /// Set by `connection_made`.
    transport: Option<DatagramTransport>,
    /// Where to print; holds `on_con_lost`, which `connection_lost` sets and `talk` awaits.
    session: Session,
}

impl BaseProtocol<DatagramTransport> for EchoClientProtocol {
    fn connection_made(&mut self, transport: DatagramTransport) {
        self.session.print(format_args!("Send: {}", self.message));
        if let Err(e) = transport.sendto(self.message.as_bytes(), None) {
            self.session.keep(format!("sendto: {e}"));
        }
        self.transport = Some(transport);
    }

    fn connection_lost(&mut self, _error: Option<Error>) {
        self.session.lost("Connection closed");
    }
}

impl DatagramProtocol for EchoClientProtocol {
    fn datagram_received(&mut self, data: &[u8], _addr: Option<SockAddr>) {
        self.session.print(format_args!("Received: {}", String::from_utf8_lossy(data)));
        self.session.print("Close the socket");
        if let Some(transport) = &self.transport {
            transport.close();
        }
    }

    fn error_received(&mut self, error: Error) {
        self.session.print(format_args!("Error received: {error}"));
    }
}

/// Creates the endpoint, then waits until the protocol signals that it was closed.
async fn talk(event_loop: EventLoop, args: Args) -> Result<(), String> {
    let address = args.address();
    let session = Session::new(&event_loop);
    let protocol =
        EchoClientProtocol { message: args.message, transport: None, session: session.clone() };
    let options = DatagramOptions::new().remote_addr(&address);
    let (transport, _protocol) = event_loop
        .create_datagram_endpoint(move || protocol, options)
        .await
        .map_err(|e| format!("cannot reach {address}: {e}"))?;
    // Wait until the protocol signals that the connection is lost and close the transport.
    session.until_lost(|| transport.close()).await
}

fn main() -> ExitCode {
    support::run_async(&SPEC, talk)
}
