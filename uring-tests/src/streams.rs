//! The streams tests' helpers (`tests/streams.rs`, `tests/streams_tokio.rs`): bounded waits on
//! loop time, a connected reader/writer pair through a streams server, blocking peers.

use std::cell::RefCell;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;

use ringloop::{
    ClientConnected, ConnectOptions, EventLoop, Server, ServerOptions, StreamReader, StreamWriter,
};

/// Generous bound for "this must happen" waits (2 shared cores).
pub const WAIT: f64 = 10.0;

/// `fut`'s output, or `None` after `secs` of loop time.
pub async fn timeout<F: Future>(lp: &EventLoop, secs: f64, fut: F) -> Option<F::Output> {
    let timer = lp.create_future::<()>();
    let setter = timer.clone();
    let handle = lp.call_later(secs, move || drop(setter.set_result(()))).unwrap();
    let mut fut = pin!(fut);
    let mut timer = pin!(timer);
    let out = std::future::poll_fn(|cx| {
        if let Poll::Ready(value) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(value));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await;
    handle.cancel();
    out
}

/// `fut`'s output; panics after [`WAIT`].
pub async fn must<F: Future>(lp: &EventLoop, fut: F) -> F::Output {
    timeout(lp, WAIT, fut).await.expect("timed out")
}

/// Sleeps `secs` of loop time.
pub async fn sleep(lp: &EventLoop, secs: f64) {
    timeout(lp, secs, std::future::pending::<()>()).await;
}

/// Waits (bounded) until `cond` holds.
pub async fn until(lp: &EventLoop, cond: impl Fn() -> bool) {
    let deadline = lp.time() + WAIT;
    while !cond() {
        assert!(lp.time() < deadline, "condition not met in {WAIT}s");
        sleep(lp, 0.002).await;
    }
}

/// The port of `server`'s first socket (an inet one).
pub fn port_of(server: &Server) -> u16 {
    server.sockets()[0].as_socket().unwrap().port()
}

/// Runs `body(lp)` to completion on the loop.
pub fn run<F, Fut>(lp: &EventLoop, body: F)
where
    F: FnOnce(EventLoop) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    lp.run_until_complete(body(lp.clone())).unwrap();
}

/// A server whose callback keeps each connection's reader and writer, and a client
/// connected to it: `(server, server side, client side)`.
pub async fn pair(
    lp: &EventLoop,
    limit: usize,
) -> (Server, (StreamReader, StreamWriter), (StreamReader, StreamWriter)) {
    let accepted = Rc::new(RefCell::new(Vec::new()));
    let sink = accepted.clone();
    let keep = move |reader: StreamReader, writer: StreamWriter| {
        sink.borrow_mut().push((reader, writer));
        async {}
    };
    let server = lp
        .start_server_with_limit(keep, "127.0.0.1:0", limit, ServerOptions::default())
        .await
        .unwrap();
    let client = lp
        .open_connection_with_limit(
            ("127.0.0.1", port_of(&server)),
            limit,
            ConnectOptions::default(),
        )
        .await
        .unwrap();
    until(lp, || !accepted.borrow().is_empty()).await;
    let side = accepted.borrow_mut().pop().unwrap();
    (server, side, client)
}

/// A connection to a plain blocking listener on loopback: `(listener, reader, writer)`; the
/// peer is the listener's next `accept()`.
pub async fn connect_to_listener(lp: &EventLoop) -> (TcpListener, StreamReader, StreamWriter) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connection = lp.open_connection(("127.0.0.1", port), ConnectOptions::default());
    let (reader, writer) = connection.await.unwrap();
    (listener, reader, writer)
}

/// An echo server: each line is written back; closes at EOF.
pub async fn echo_server(lp: &EventLoop) -> Server {
    lp.start_server(crate::echo_lines, "127.0.0.1:0", ServerOptions::default()).await.unwrap()
}

/// A server on loopback running `callback` for each connection, and a client connected to it
/// (`EventLoop::start_server`, then `EventLoop::open_connection`).
pub async fn serve_and_connect<F: ClientConnected>(
    lp: &EventLoop,
    callback: F,
) -> (Server, (StreamReader, StreamWriter)) {
    let server = lp.start_server(callback, "127.0.0.1:0", ServerOptions::default()).await;
    let server = server.unwrap();
    let port = port_of(&server);
    let client = lp.open_connection(("127.0.0.1", port), ConnectOptions::default()).await;
    (server, client.unwrap())
}

/// A client of `server` (`ringloop::open_connection` to its first socket, on loopback).
pub async fn connect_to(server: &Server) -> (StreamReader, StreamWriter) {
    let port = port_of(server);
    ringloop::open_connection(("127.0.0.1", port), ConnectOptions::default()).await.unwrap()
}

/// Closes `server` and its clients and waits (bounded) for it.
pub async fn shut(server: Server, lp: &EventLoop) {
    server.close();
    server.close_clients();
    must(lp, server.wait_closed()).await;
}

/// Accepts one connection and reads it to EOF: the byte count.
pub fn read_all(listener: TcpListener) -> usize {
    match read_to_close(listener) {
        (total, None) => total,
        (_, Some(err)) => panic!("peer read: {err}"),
    }
}

/// Accepts one connection and reads it until EOF or an error: the byte count, and the error
/// that ended it (`None` at EOF).
pub fn read_to_close(listener: TcpListener) -> (usize, Option<std::io::Error>) {
    let (mut peer, _) = listener.accept().unwrap();
    read_peer_to_close(&mut peer)
}

/// Reads `peer` until EOF or an error (20 s at most between reads): the byte count, and the
/// error that ended it (`None` at EOF).
pub fn read_peer_to_close(peer: &mut TcpStream) -> (usize, Option<std::io::Error>) {
    peer.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let mut total = 0;
    let mut buf = vec![0; 256 * 1024];
    loop {
        match peer.read(&mut buf) {
            Ok(0) => return (total, None),
            Ok(n) => total += n,
            Err(err) => return (total, Some(err)),
        }
    }
}

/// The chunk [`write_until_pending`] writes: 16 KiB.
pub static CHUNK: [u8; 16 * 1024] = [1; 16 * 1024];

/// Writes [`CHUNK`]s with `write_chunk` (given a clone of `writer`) until one is still pending
/// after 0.2 s, checking that the transport's buffer stays under 32 KiB (the caller sets the
/// high-water mark to 16 KiB): the bytes written, the pending chunk not counted (a write
/// queues a chunk whole or not at all).
pub async fn write_until_pending<Fut: Future>(
    lp: &EventLoop,
    writer: &StreamWriter,
    write_chunk: impl Fn(StreamWriter, &'static [u8]) -> Fut,
) -> usize {
    let mut written = 0usize;
    while timeout(lp, 0.2, write_chunk(writer.clone(), &CHUNK)).await.is_some() {
        written += CHUNK.len();
        assert!(written < 64 << 20, "write_all never blocked");
        assert!(writer.transport().get_write_buffer_size() <= 32 * 1024);
    }
    written
}

/// Waits for a thread without blocking the loop.
pub async fn join<T: Send + 'static>(lp: &EventLoop, thread: std::thread::JoinHandle<T>) -> T {
    until(lp, || thread.is_finished()).await;
    thread.join().unwrap()
}

/// Closes `peer` with an RST (`SO_LINGER` 0).
pub fn reset(peer: TcpStream) {
    use std::os::fd::AsRawFd;
    crate::linger_zero(peer.as_raw_fd());
    let _ = (&peer).write(b"");
    drop(peer);
}
