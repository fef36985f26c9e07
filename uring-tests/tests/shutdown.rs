//! Graceful shutdown: `Shutdown`, `Server::serve_until` and `Server::serve_until_signal`, on
//! every backend: the port is free at once, connections get their grace period and no more,
//! a second request aborts them, a request from another thread wakes the loop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ringloop::{EventLoop, Server, Shutdown, Signal, StreamReader, StreamWriter};
use uring_tests::{backend_tests, off_loop, run_within, streams_server};

/// Serializes the tests that raise real signals (every loop that handles one gets it).
static SIGNALS: Mutex<()> = Mutex::new(());

/// An echo handler: sends back every chunk until EOF.
async fn echo(reader: StreamReader, writer: StreamWriter) -> ringloop::Result<()> {
    loop {
        let data = reader.read(1024).await?;
        if data.is_empty() {
            return Ok(());
        }
        writer.write(&data)?;
        writer.drain().await?;
    }
}

/// An echo server on a free port of 127.0.0.1, and that port.
async fn echo_server(lp: &EventLoop) -> (Server, u16) {
    streams_server(lp, echo).await
}

/// A connection to `port` that has been echoed once (so the server has accepted it).
fn echoed_client(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    stream.write_all(b"ping").expect("send");
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).expect("echo");
    assert_eq!(&reply, b"ping");
    stream
}

backend_tests! {
    fn requested_shutdown_frees_the_port_at_once(lp) {
        let lp2 = lp.clone();
        let port = run_within(lp, 20.0, async move {
            let (server, port) = echo_server(&lp2).await;
            let shutdown = Shutdown::new();
            let asker = shutdown.clone();
            lp2.call_later(0.05, move || asker.request()).unwrap();
            server.serve_until(&shutdown, 5.0).await.expect("serve_until");
            assert!(server.sockets().is_empty() && server.connection_count() == 0);
            port
        });
        // No SO_REUSEADDR here: nothing may hold the port any more.
        TcpListener::bind(("127.0.0.1", port)).expect("the port is free after serve_until");
    }

    fn a_connection_that_finishes_within_the_grace_period_is_waited_for(lp) {
        let lp2 = lp.clone();
        run_within(lp, 20.0, async move {
            let (server, port) = echo_server(&lp2).await;
            let shutdown = Shutdown::new();
            let client = std::thread::spawn(move || {
                let mut stream = echoed_client(port);
                std::thread::sleep(Duration::from_millis(300));
                // Still served after the shutdown request, then closed by the client.
                stream.write_all(b"late").expect("send after the request");
                let mut reply = [0u8; 4];
                stream.read_exact(&mut reply).expect("echo after the request");
                reply
            });
            ringloop::sleep(0.1).await.unwrap();
            assert_eq!(server.connection_count(), 1);
            shutdown.request();
            let start = Instant::now();
            server.serve_until(&shutdown, 10.0).await.expect("serve_until");
            let took = start.elapsed();
            assert!(took < Duration::from_secs(5), "waited {took:?}, not just for the client");
            assert_eq!(&off_loop(&lp2, move || client.join().unwrap()).await, b"late");
        });
    }

    fn a_connection_still_open_after_the_grace_period_is_aborted(lp) {
        let lp2 = lp.clone();
        run_within(lp, 20.0, async move {
            let (server, port) = echo_server(&lp2).await;
            let mut stream = off_loop(&lp2, move || echoed_client(port)).await;
            let shutdown = Shutdown::new();
            shutdown.request();
            let start = Instant::now();
            server.serve_until(&shutdown, 0.3).await.expect("serve_until");
            let took = start.elapsed();
            assert!(took >= Duration::from_millis(300), "aborted after {took:?}, before the grace");
            assert!(took < Duration::from_secs(5), "aborted after {took:?}");
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
            assert!(rest.is_empty(), "data after the abort: {rest:?}");
        });
    }

    fn a_second_request_aborts_at_once(lp) {
        let lp2 = lp.clone();
        run_within(lp, 20.0, async move {
            let (server, port) = echo_server(&lp2).await;
            let _stream = off_loop(&lp2, move || echoed_client(port)).await;
            let shutdown = Shutdown::new();
            shutdown.request();
            let again = shutdown.clone();
            lp2.call_later(0.1, move || again.request()).unwrap();
            let start = Instant::now();
            server.serve_until(&shutdown, 30.0).await.expect("serve_until");
            assert!(shutdown.is_forced());
            assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
        });
    }

    fn a_request_from_another_thread_wakes_the_loop(lp) {
        let lp2 = lp.clone();
        run_within(lp, 20.0, async move {
            let (server, _) = echo_server(&lp2).await;
            let shutdown = Shutdown::new();
            let remote = shutdown.clone();
            let asker = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                remote.request();
            });
            server.serve_until(&shutdown, 1.0).await.expect("serve_until");
            assert!(shutdown.is_requested() && shutdown.signal().is_none());
            off_loop(&lp2, move || asker.join().unwrap()).await;
        });
    }

    fn a_server_closed_otherwise_ends_serve_until(lp) {
        let lp2 = lp.clone();
        run_within(lp, 20.0, async move {
            let (server, _) = echo_server(&lp2).await;
            let closer = server.clone();
            lp2.call_later(0.05, move || closer.close()).unwrap();
            server.serve_until(&Shutdown::new(), 1.0).await.expect("serve_until");
            // Closed before: the same again, at once.
            server.serve_until(&Shutdown::new(), 1.0).await.expect("serve_until when closed");
        });
    }

    fn sigterm_ends_serve_until_signal_and_the_handlers_go(lp) {
        let _serial = SIGNALS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let lp2 = lp.clone();
        let signal = run_within(lp, 20.0, async move {
            let (server, port) = echo_server(&lp2).await;
            let _stream = off_loop(&lp2, move || echoed_client(port)).await;
            lp2.call_later(0.05, || {
                // SAFETY: raising a signal this process handles (the server's handler).
                unsafe { libc::raise(libc::SIGTERM) };
            })
            .unwrap();
            let signal = server.serve_until_signal(0.2).await.expect("serve_until_signal");
            assert!(!lp2.remove_signal_handler(Signal::SIGTERM).unwrap(), "a handler is left");
            assert!(!lp2.remove_signal_handler(Signal::SIGINT).unwrap(), "a handler is left");
            signal
        });
        assert_eq!(signal, Some(Signal::SIGTERM));
    }
}
