//! A program with no `log` backend, run as a child by `tests/no_logger.rs`: it makes a
//! callback panic, a streams server's handler fail and a protocol fail fatally, shuts the
//! default executor down with a job still running, and prints `done` on stdout. What ringloop
//! reports of them must reach its stderr.
//!
//! Usage: `no_logger uring|epoll|auto` (`auto`: `EventLoop::new()`, which may say that
//! io_uring is unavailable and run on epoll).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ringloop::{
    Backend, BaseProtocol, Error, EventLoop, Protocol, Server, ServerOptions, StreamReader,
    StreamWriter, Transport,
};

/// A protocol whose `data_received` panics: a fatal error of the connection.
struct Fails;

impl BaseProtocol for Fails {
    fn connection_made(&mut self, _transport: Transport) {}
}

impl Protocol for Fails {
    fn data_received(&mut self, _data: &[u8]) {
        panic!("boom in data_received");
    }
}

/// A streams handler that fails.
async fn failing_handler(_reader: StreamReader, _writer: StreamWriter) -> ringloop::Result<()> {
    Err(Error::custom(std::io::Error::other("boom in the handler")))
}

/// Connects to `port` on loopback, sends a byte and waits until the server closes the
/// connection.
fn poke(port: u16) {
    let mut client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    client.write_all(b"x").expect("write");
    let _ = client.read_to_end(&mut Vec::new());
}

/// The port of `server`'s first socket.
fn port_of(server: &Server) -> u16 {
    server.sockets()[0].as_socket().expect("an IP socket").port()
}

fn main() -> ringloop::Result<()> {
    let backend = std::env::args().nth(1).unwrap_or_default();
    let lp = match backend.as_str() {
        "uring" => EventLoop::with_backend(Backend::Uring)?,
        "epoll" => EventLoop::with_backend(Backend::Epoll)?,
        _ => EventLoop::new()?,
    };
    lp.call_soon(|| panic!("boom in a callback"))?;
    let l = lp.clone();
    lp.run_until_complete(async move {
        let options = || ServerOptions::default();
        let streams = l.start_server(failing_handler, "127.0.0.1:0", options()).await?;
        let protocols = l.create_server(|| Fails, "127.0.0.1:0", options()).await?;
        for server in [streams, protocols] {
            let port = port_of(&server);
            l.run_in_executor(None, move || poke(port))?.await?;
        }
        // A job that outlasts the shutdown's timeout: the loop warns that it did not join.
        let _job = l.run_in_executor(None, || std::thread::sleep(Duration::from_millis(300)))?;
        l.shutdown_default_executor(Some(Duration::from_millis(10))).await?;
        Ok::<_, Error>(())
    })??;
    lp.close()?;
    println!("done");
    Ok(())
}
