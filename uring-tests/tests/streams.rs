//! Streams (`open_connection`, `start_server`, `StreamReader`, `StreamWriter`): BEHAVIOURS
//! section 19 (items 164, 165), 106's streams half, the read methods, both directions of
//! backpressure, and the `futures-io` traits, on every backend built in.

use std::cell::RefCell;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;

use futures_util::io::{AsyncReadExt, AsyncWriteExt};
use ringloop::{
    ClientConnected, ConnectOptions, Error, EventLoop, Server, ServerOptions, StreamReader,
    StreamWriter,
};
use uring_tests::{backend_tests, capture_exceptions, echo_lines, pattern};

/// Generous bound for "this must happen" waits (2 shared cores).
const WAIT: f64 = 10.0;

/// `fut`'s output, or `None` after `secs` of loop time.
async fn timeout<F: Future>(lp: &EventLoop, secs: f64, fut: F) -> Option<F::Output> {
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
async fn must<F: Future>(lp: &EventLoop, fut: F) -> F::Output {
    timeout(lp, WAIT, fut).await.expect("timed out")
}

async fn sleep(lp: &EventLoop, secs: f64) {
    timeout(lp, secs, std::future::pending::<()>()).await;
}

/// Waits (bounded) until `cond` holds.
async fn until(lp: &EventLoop, cond: impl Fn() -> bool) {
    let deadline = lp.time() + WAIT;
    while !cond() {
        assert!(lp.time() < deadline, "condition not met in {WAIT}s");
        sleep(lp, 0.002).await;
    }
}

fn port_of(server: &Server) -> u16 {
    server.sockets()[0].as_socket().unwrap().port()
}

/// Runs `body(lp)` to completion on the loop.
fn run<F, Fut>(lp: &EventLoop, body: F)
where
    F: FnOnce(EventLoop) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    lp.run_until_complete(body(lp.clone())).unwrap();
}

/// A server whose callback keeps each connection's reader and writer, and a client
/// connected to it: `(server, server side, client side)`.
async fn pair(
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

/// An echo server: each line is written back; closes at EOF.
async fn echo_server(lp: &EventLoop) -> Server {
    lp.start_server(echo_lines, "127.0.0.1:0", ServerOptions::default()).await.unwrap()
}

/// A server on loopback running `callback` for each connection, and a client connected to it
/// (`EventLoop::start_server`, then `EventLoop::open_connection`).
async fn serve_and_connect<F: ClientConnected>(
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
async fn connect_to(server: &Server) -> (StreamReader, StreamWriter) {
    let port = port_of(server);
    ringloop::open_connection(("127.0.0.1", port), ConnectOptions::default()).await.unwrap()
}

async fn shut(server: Server, lp: &EventLoop) {
    server.close();
    server.close_clients();
    must(lp, server.wait_closed()).await;
}

backend_tests! {
    fn echo_round_trip(lp) {
        run(lp, |lp| async move {
            let server = echo_server(&lp).await;
            let (reader, writer) = connect_to(&server).await;
            assert!(writer.get_extra_info("peername").is_some());
            for i in 0..20 {
                let line = format!("line {i}\n");
                writer.write(line.as_bytes()).unwrap();
                must(&lp, writer.drain()).await.unwrap();
                assert_eq!(must(&lp, reader.readline()).await.unwrap(), line.as_bytes());
            }
            writer.writelines([&b"a\n"[..], b"b\n"]).unwrap();
            writer.write_eof();
            assert!(writer.can_write_eof());
            assert_eq!(must(&lp, reader.read_to_end()).await.unwrap(), b"a\nb\n");
            assert!(reader.at_eof());
            writer.close();
            must(&lp, writer.wait_closed()).await.unwrap();
            shut(server, &lp).await;
        });
    }

    // Issue 3: the readers' buffer limit is 64 KiB by default, on both sides.
    fn default_reader_limit_is_64_kib(lp) {
        run(lp, |lp| async move {
            assert_eq!(ringloop::DEFAULT_LIMIT, 64 * 1024);
            let limits = Rc::new(RefCell::new(Vec::new()));
            let sink = limits.clone();
            let keep = move |reader: StreamReader, writer: StreamWriter| {
                sink.borrow_mut().push(reader.limit());
                async move {
                    writer.close();
                    writer.wait_closed().await
                }
            };
            let server = lp.start_server(keep, "127.0.0.1:0", ServerOptions::default()).await.unwrap();
            let (reader, writer) = connect_to(&server).await;
            assert_eq!(reader.limit(), 64 * 1024, "open_connection");
            until(&lp, || !limits.borrow().is_empty()).await;
            assert_eq!(*limits.borrow(), [64 * 1024], "start_server");
            writer.close();
            must(&lp, writer.wait_closed()).await.unwrap();
            shut(server, &lp).await;
        });
    }

    fn readline_readexactly_readuntil(lp) {
        run(lp, |lp| async move {
            let (server, (_sr, sw), (reader, _cw)) = pair(&lp, 64 * 1024).await;
            sw.write(b"a\nbc\nxyzfoo--bar").unwrap();
            assert_eq!(must(&lp, reader.readline()).await.unwrap(), b"a\n");
            assert_eq!(must(&lp, reader.readline()).await.unwrap(), b"bc\n");
            assert_eq!(must(&lp, reader.readexactly(3)).await.unwrap(), b"xyz");
            assert_eq!(must(&lp, reader.readuntil(b"--")).await.unwrap(), b"foo--");
            assert!(matches!(reader.readuntil(b"").await, Err(Error::InvalidArgument(_))));
            assert!(!reader.at_eof());
            sw.write_eof();
            match must(&lp, reader.readuntil(b"--")).await {
                Err(err @ Error::IncompleteRead { .. }) => {
                    assert_eq!(err.to_string(), "3 bytes read on a total of undefined expected bytes");
                    let Error::IncompleteRead { partial, expected } = err else { unreachable!() };
                    assert_eq!((partial.as_slice(), expected), (&b"bar"[..], None));
                }
                other => panic!("expected IncompleteRead, got {other:?}"),
            }
            assert!(reader.at_eof());
            assert_eq!(reader.readline().await.unwrap(), b"");
            shut(server, &lp).await;

            let (server, (_sr, sw), (reader, _cw)) = pair(&lp, 64 * 1024).await;
            sw.write(b"ab").unwrap();
            sw.write_eof();
            match must(&lp, reader.readexactly(5)).await {
                Err(err @ Error::IncompleteRead { .. }) => {
                    assert_eq!(err.to_string(), "2 bytes read on a total of 5 expected bytes");
                    let Error::IncompleteRead { partial, expected } = err else { unreachable!() };
                    assert_eq!((partial.as_slice(), expected), (&b"ab"[..], Some(5)));
                }
                other => panic!("expected IncompleteRead, got {other:?}"),
            }
            assert!(reader.at_eof());
            assert_eq!(reader.readexactly(0).await.unwrap(), b"");
            shut(server, &lp).await;

            // A last line without "\n" is returned as is.
            let (server, (_sr, sw), (reader, _cw)) = pair(&lp, 64 * 1024).await;
            sw.write(b"tail").unwrap();
            sw.write_eof();
            assert_eq!(must(&lp, reader.readline()).await.unwrap(), b"tail");
            assert_eq!(must(&lp, reader.readline()).await.unwrap(), b"");
            shut(server, &lp).await;
        });
    }

    fn limit_overrun(lp) {
        run(lp, |lp| async move {
            let (server, (_sr, sw), (reader, _cw)) = pair(&lp, 8).await;
            // The separator is found, beyond the limit: an overrun; nothing is consumed.
            sw.write(b"0123456789abcdef\nxy\n").unwrap();
            until(&lp, || reader.buffered() == 20).await;
            match must(&lp, reader.readuntil(b"\n")).await {
                Err(Error::LimitOverrun { consumed, message }) => {
                    assert_eq!(consumed, 16);
                    assert!(message.contains("Separator is found"), "{message}");
                }
                other => panic!("expected LimitOverrun, got {other:?}"),
            }
            assert_eq!(reader.buffered(), 20);
            // readline turns it into InvalidArgument and drops the long line.
            assert!(matches!(reader.readline().await, Err(Error::InvalidArgument(_))));
            assert_eq!(must(&lp, reader.readline()).await.unwrap(), b"xy\n");

            // Not found, and more than the limit buffered.
            sw.write(b"0123456789abcdefghij").unwrap();
            until(&lp, || reader.buffered() == 20).await;
            match must(&lp, reader.readuntil(b"\n")).await {
                Err(err @ Error::LimitOverrun { .. }) => {
                    assert!(err.to_string().contains("Separator is not found"), "{err}");
                }
                other => panic!("expected LimitOverrun, got {other:?}"),
            }
            assert!(matches!(reader.readline().await, Err(Error::InvalidArgument(_))));
            assert_eq!(reader.buffered(), 0);
            sw.write(b"ok\n").unwrap();
            assert_eq!(must(&lp, reader.readline()).await.unwrap(), b"ok\n");
            shut(server, &lp).await;
        });
    }

    fn read_n_semantics(lp) {
        run(lp, |lp| async move {
            let (server, (_sr, sw), (reader, _cw)) = pair(&lp, 64 * 1024).await;
            sw.write(b"hello world").unwrap();
            until(&lp, || reader.buffered() == 11).await;
            assert_eq!(reader.read(0).await.unwrap(), b"");
            assert_eq!(reader.read(5).await.unwrap(), b"hello");
            assert_eq!(reader.read(100).await.unwrap(), b" world");
            // A read with nothing buffered waits for data.
            let r = reader.clone();
            let pending = lp.create_task(async move { r.read(100).await }).unwrap();
            sleep(&lp, 0.05).await;
            assert!(!pending.done());
            sw.write(b"abcd").unwrap();
            assert_eq!(must(&lp, pending).await.unwrap().unwrap(), b"abcd");
            // A read dropped while waiting takes nothing.
            assert!(timeout(&lp, 0.02, reader.read(10)).await.is_none());
            sw.write(b"xyz").unwrap();
            sw.write_eof();
            assert!(!reader.at_eof());
            assert_eq!(must(&lp, reader.read_to_end()).await.unwrap(), b"xyz");
            assert!(reader.at_eof());
            assert_eq!(reader.read(5).await.unwrap(), b"");
            assert_eq!(reader.read_to_end().await.unwrap(), b"");
            shut(server, &lp).await;
        });
    }

    fn close_then_wait_closed_item_164(lp) {
        run(lp, |lp| async move {
            // Nothing unread: after wait_closed the reader is at EOF.
            let (server, _side, (reader, writer)) = pair(&lp, 64 * 1024).await;
            writer.close();
            assert!(writer.is_closing());
            must(&lp, writer.wait_closed()).await.unwrap();
            assert!(reader.at_eof());
            assert_eq!(reader.read_to_end().await.unwrap(), b"");
            assert_eq!(reader.read(10).await.unwrap(), b"");
            shut(server, &lp).await;

            // Unread data: wait_closed completes all the same.
            let (server, (_sr, sw), (reader, writer)) = pair(&lp, 64 * 1024).await;
            sw.write(&vec![b'u'; 100_000]).unwrap();
            until(&lp, || reader.buffered() > 0).await;
            writer.close();
            assert!(writer.is_closing());
            must(&lp, writer.wait_closed()).await.unwrap();
            let rest = reader.read_to_end().await.unwrap();
            assert!(!rest.is_empty() && rest.iter().all(|&b| b == b'u'));
            assert!(reader.at_eof());
            assert_eq!(reader.read(10).await.unwrap(), b"");
            shut(server, &lp).await;
        });
    }

    fn connection_lost_error_fails_a_pending_read(lp) {
        run(lp, |lp| async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let (reader, writer) =
                lp.open_connection(("127.0.0.1", port), ConnectOptions::default())
                    .await
                    .unwrap();
            let (peer, _) = listener.accept().unwrap();
            let r = reader.clone();
            let pending = lp.create_task(async move { r.read(100).await }).unwrap();
            sleep(&lp, 0.02).await;
            assert!(!pending.done());
            reset(peer);
            let err = must(&lp, pending).await.unwrap().unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET), "{err}");
            // Later reads, drain and wait_closed report it too.
            assert_eq!(reader.read(1).await.unwrap_err().raw_os_error(), Some(libc::ECONNRESET));
            assert_eq!(reader.exception().and_then(|e| e.raw_os_error()), Some(libc::ECONNRESET));
            assert_eq!(writer.drain().await.unwrap_err().raw_os_error(), Some(libc::ECONNRESET));
            assert!(must(&lp, writer.wait_closed()).await.is_err());
        });
    }

    fn write_and_drain_after_close_item_106(lp) {
        run(lp, |lp| async move {
            let seen = capture_exceptions(&lp);
            let (server, _side, (_reader, writer)) = pair(&lp, 64 * 1024).await;
            writer.close();
            writer.write(b"lost").unwrap();
            let err = must(&lp, writer.drain()).await.unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET), "{err}");
            assert!(seen.borrow().is_empty());
            shut(server, &lp).await;
        });
    }

    fn client_callback_failure_item_165(lp) {
        run(lp, |lp| async move {
            let seen = capture_exceptions(&lp);
            let boom = |_r: StreamReader, _w: StreamWriter| async move {
                if _w.can_write_eof() {
                    panic!("boom in the callback");
                }
            };
            let (server, (reader, _writer)) = serve_and_connect(&lp, boom).await;
            until(&lp, || !seen.borrow().is_empty()).await;
            {
                let seen = seen.borrow();
                assert_eq!(seen[0].message, "Unhandled exception in client_connected_cb");
                assert!(matches!(&seen[0].error, Some(Error::Panic(m)) if m == "boom in the callback"));
            }
            // The server closed the connection.
            assert_eq!(must(&lp, reader.read_to_end()).await.unwrap(), b"");
            shut(server, &lp).await;

            // An error returned is reported the same way; a self-cancellation is not.
            seen.borrow_mut().clear();
            let fails = |_r: StreamReader, w: StreamWriter| async move {
                if w.get_extra_info("peername").is_some() {
                    return Err(Error::Runtime("callback failed".into()));
                }
                Ok(())
            };
            let (server, _conn) = serve_and_connect(&lp, fails).await;
            until(&lp, || !seen.borrow().is_empty()).await;
            assert_eq!(seen.borrow()[0].message, "Unhandled exception in client_connected_cb");
            assert!(matches!(&seen.borrow()[0].error, Some(Error::Runtime(m)) if m == "callback failed"));
            shut(server, &lp).await;

            seen.borrow_mut().clear();
            let cancels = |_r: StreamReader, _w: StreamWriter| async move {
                Err::<(), _>(Error::Cancelled)
            };
            let (server, _conn) = serve_and_connect(&lp, cancels).await;
            sleep(&lp, 0.1).await;
            assert!(seen.borrow().is_empty(), "{:?}", seen.borrow());
            shut(server, &lp).await;
        });
    }

    fn hundred_clients_write_eof_twice_item_165(lp) {
        run(lp, |lp| async move {
            let seen = capture_exceptions(&lp);
            let echo_all = |reader: StreamReader, writer: StreamWriter| async move {
                let data = reader.read_to_end().await?;
                writer.write(&data)?;
                writer.drain().await?;
                writer.close();
                writer.wait_closed().await
            };
            let server =
                lp.start_server(echo_all, "127.0.0.1:0", ServerOptions::default().backlog(128))
                    .await
                    .unwrap();
            let port = port_of(&server);
            let mut clients = Vec::new();
            for i in 0..100 {
                clients.push(
                    lp.create_task(async move {
                        let (reader, writer) = ringloop::open_connection(
                            ("127.0.0.1",
                            port),
                            ConnectOptions::default(),
                        )
                        .await?;
                        let message = format!("client {i}");
                        writer.write(message.as_bytes())?;
                        writer.write_eof();
                        writer.write_eof();
                        writer.drain().await?;
                        let reply = reader.read_to_end().await?;
                        writer.close();
                        writer.wait_closed().await?;
                        Ok::<_, Error>(reply == message.as_bytes())
                    })
                    .unwrap(),
                );
            }
            for client in clients {
                assert!(must(&lp, client).await.unwrap().unwrap());
            }
            assert!(seen.borrow().is_empty(), "{:?}", seen.borrow());
            shut(server, &lp).await;
        });
    }

    fn drain_waits_for_a_slow_peer(lp) {
        run(lp, |lp| async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let (_reader, writer) = lp
                .open_connection(("127.0.0.1", addr.port()), ConnectOptions::default())
                .await
                .unwrap();
            let (high, chunk) = (64 * 1024, 64 * 1024);
            writer.transport().set_write_buffer_limits(Some(high), None).unwrap();
            // Write until drain blocks: the peer reads nothing.
            let mut written = 0usize;
            loop {
                writer.write(&vec![7u8; chunk]).unwrap();
                written += chunk;
                assert!(writer.transport().get_write_buffer_size() <= high + chunk);
                if timeout(&lp, 0.2, writer.drain()).await.is_none() {
                    break;
                }
                assert!(written < 64 << 20, "drain never blocked");
            }
            // It stays pending, and the buffer stays bounded.
            let w = writer.clone();
            let drain = lp.create_task(async move { w.drain().await }).unwrap();
            sleep(&lp, 0.1).await;
            assert!(!drain.done());
            assert!(writer.transport().get_write_buffer_size() <= high + chunk);
            // The peer reads: drain completes.
            let peer = std::thread::spawn(move || read_all(listener));
            must(&lp, drain).await.unwrap().unwrap();
            must(&lp, writer.drain()).await.unwrap();
            writer.close();
            must(&lp, writer.wait_closed()).await.unwrap();
            let got = must(&lp, join(&lp, peer)).await;
            assert_eq!(got, written);
        });
    }

    fn reader_backpressure_pauses_the_transport(lp) {
        run(lp, |lp| async move {
            let (server, (sr, sw), (_cr, cw)) = pair(&lp, 1024).await;
            let total = 1 << 20;
            let data = pattern(total);
            cw.write(&data).unwrap();
            until(&lp, || !sw.transport().is_reading()).await;
            sleep(&lp, 0.05).await;
            // Bounded: at most 2 * limit plus the one chunk that crossed it.
            assert!(sr.buffered() <= 2 * 1024 + 64 * 1024, "{}", sr.buffered());
            assert!(!sw.transport().is_reading());
            let mut got = Vec::new();
            while got.len() < total {
                got.extend(must(&lp, sr.read(4096)).await.unwrap());
            }
            assert!(got == data, "the bytes differ");
            until(&lp, || sw.transport().is_reading()).await;
            must(&lp, cw.drain()).await.unwrap();
            shut(server, &lp).await;
        });
    }

    fn futures_io_traits(lp) {
        run(lp, |lp| async move {
            let server = echo_server(&lp).await;
            let (mut reader, mut writer) = lp
                .open_connection(("127.0.0.1", port_of(&server)), ConnectOptions::default())
                .await
                .unwrap();
            must(&lp, writer.write_all(b"over futures-io\n")).await.unwrap();
            must(&lp, writer.flush()).await.unwrap();
            let mut line = [0u8; 16];
            must(&lp, reader.read_exact(&mut line)).await.unwrap();
            assert_eq!(&line, b"over futures-io\n");
            writer.write_eof();
            let mut rest = Vec::new();
            must(&lp, AsyncReadExt::read_to_end(&mut reader, &mut rest)).await.unwrap();
            assert!(rest.is_empty());
            must(&lp, AsyncWriteExt::close(&mut writer)).await.unwrap();
            assert!(writer.is_closing());
            assert!(writer.write_all(b"late").await.is_err());
            shut(server, &lp).await;
        });
    }

    fn dropping_the_last_writer_closes(lp) {
        run(lp, |lp| async move {
            let (server, (sr, sw), (reader, _cw)) = pair(&lp, 64 * 1024).await;
            let clone = sw.clone();
            sw.write(b"bye").unwrap();
            drop(sw);
            assert!(!clone.is_closing());
            drop(clone);
            assert_eq!(must(&lp, reader.read_to_end()).await.unwrap(), b"bye");
            until(&lp, || sr.at_eof()).await;
            shut(server, &lp).await;
        });
    }

    fn futures_io_write_backpressure(lp) {
        run(lp, |lp| async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let (_reader, mut writer) = lp
                .open_connection(("127.0.0.1", addr.port()), ConnectOptions::default())
                .await
                .unwrap();
            writer.transport().set_write_buffer_limits(Some(16 * 1024), None).unwrap();
            let chunk = vec![1u8; 16 * 1024];
            let mut written = 0usize;
            // write_all goes Pending once the transport pauses the writer.
            while timeout(&lp, 0.2, writer.write_all(&chunk)).await.is_some() {
                written += chunk.len();
                assert!(written < 64 << 20, "write_all never blocked");
                assert!(writer.transport().get_write_buffer_size() <= 32 * 1024);
            }
            let peer = std::thread::spawn(move || read_all(listener));
            must(&lp, writer.write_all(b"end")).await.unwrap();
            must(&lp, AsyncWriteExt::close(&mut writer)).await.unwrap();
            let got = must(&lp, join(&lp, peer)).await;
            assert!(got >= written + 3);
        });
    }
}

/// Accepts one connection and reads it to EOF: the byte count.
fn read_all(listener: TcpListener) -> usize {
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let mut total = 0;
    let mut buf = vec![0; 256 * 1024];
    loop {
        match peer.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(err) => panic!("peer read: {err}"),
        }
    }
}

/// Waits for a thread without blocking the loop.
async fn join<T: Send + 'static>(lp: &EventLoop, thread: std::thread::JoinHandle<T>) -> T {
    until(lp, || thread.is_finished()).await;
    thread.join().unwrap()
}

/// Closes `peer` with an RST (`SO_LINGER` 0).
fn reset(peer: TcpStream) {
    use std::os::fd::AsRawFd;
    uring_tests::linger_zero(peer.as_raw_fd());
    let _ = (&peer).write(b"");
    drop(peer);
}
