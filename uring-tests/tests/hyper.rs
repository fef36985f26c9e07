//! hyper on ringloop (feature `hyper`), on every backend: `serve_http1` over keep-alive,
//! `LoopTimer` driving hyper's header timeout, `serve_http1_until` closing an idle
//! connection on a shutdown, `LoopExecutor` running a `!Send` future, `LoopSleep` itself.
#![cfg(feature = "hyper")]

use std::cell::Cell;
use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::rt::{Executor, Timer};
use hyper::service::service_fn;
use hyper::{Request, Response};
use ringloop::hyper::{
    http1_builder, serve_http1, serve_http1_until, HyperIo, LoopExecutor, LoopTimer,
};
use ringloop::Shutdown;
use uring_tests::{backend_tests, off_loop, run_within, streams_server};

/// Answers every request with its path.
async fn echo_path(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from(format!("path {}", request.uri().path())))))
}

/// One response read off `reader`: the status line and the body (by `content-length`).
fn read_response(reader: &mut BufReader<TcpStream>) -> (String, String) {
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).expect("header");
        if header == "\r\n" || header.is_empty() {
            break;
        }
        if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().expect("content-length");
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    (status.trim_end().to_owned(), String::from_utf8(body).expect("UTF-8 body"))
}

/// Two requests on one keep-alive connection; their responses.
fn two_requests(port: u16) -> Vec<(String, String)> {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut responses = Vec::new();
    for path in ["/first", "/second"] {
        write!(writer, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").expect("send");
        responses.push(read_response(&mut reader));
    }
    responses
}

backend_tests! {
    fn serve_http1_answers_two_requests_on_one_keep_alive_connection(lp) {
        let lp2 = lp.clone();
        let responses = run_within(lp, 20.0, async move {
            let (server, port) =
                streams_server(&lp2, |r, w| serve_http1(r, w, service_fn(echo_path))).await;
            let responses = off_loop(&lp2, move || two_requests(port)).await;
            server.close();
            responses
        });
        let ok = |body: &str| ("HTTP/1.1 200 OK".to_owned(), body.to_owned());
        assert_eq!(responses, [ok("path /first"), ok("path /second")]);
    }

    fn loop_timer_drives_hyper_s_header_read_timeout(lp) {
        let lp2 = lp.clone();
        let waited = run_within(lp, 20.0, async move {
            let serve = |reader, writer| async move {
                let mut builder = http1_builder();
                builder.header_read_timeout(Duration::from_millis(200));
                let io = HyperIo::new(reader, writer);
                // The timeout is hyper's error here; the test looks at the client's side.
                let _ = builder.serve_connection(io, service_fn(echo_path)).await;
                Ok::<(), ringloop::Error>(())
            };
            let (server, port) = streams_server(&lp2, serve).await;
            let waited = off_loop(&lp2, move || {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                stream.write_all(b"GET / HTTP/1.1\r\n").expect("half a request");
                let start = Instant::now();
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest);
                start.elapsed()
            })
            .await;
            server.close();
            waited
        });
        assert!(waited >= Duration::from_millis(150), "closed after {waited:?}");
        assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    }

    fn serve_http1_until_closes_an_idle_connection_on_shutdown(lp) {
        let lp2 = lp.clone();
        run_within(lp, 20.0, async move {
            let shutdown = Shutdown::new();
            let closing = shutdown.clone();
            let serve = move |r, w| serve_http1_until(r, w, service_fn(echo_path), closing.clone());
            let (server, port) = streams_server(&lp2, serve).await;
            let stream = off_loop(&lp2, move || {
                let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                writer.write_all(b"GET /idle HTTP/1.1\r\nHost: test\r\n\r\n").expect("send");
                assert_eq!(read_response(&mut reader).1, "path /idle");
                reader
            })
            .await;
            shutdown.request();
            let start = Instant::now();
            // A grace period far longer than the test: the idle connection must close first.
            server.serve_until(&shutdown, 60.0).await.expect("serve_until");
            assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
            let rest = off_loop(&lp2, move || {
                let mut reader = stream;
                let mut rest = Vec::new();
                let _ = reader.read_to_end(&mut rest);
                rest
            })
            .await;
            assert!(rest.is_empty(), "unexpected bytes after the shutdown: {rest:?}");
        });
    }

    fn loop_executor_runs_a_not_send_future_as_a_task(lp) {
        let ran = Rc::new(Cell::new(false));
        let flag = ran.clone();
        run_within(lp, 5.0, async move {
            LoopExecutor.execute(async move { flag.set(true) });
            ringloop::sleep(0.01).await.unwrap();
        });
        assert!(ran.get());
    }

    fn loop_sleep_ends_at_its_deadline_and_dropping_it_cancels_its_timer(lp) {
        let lp2 = lp.clone();
        run_within(lp, 5.0, async move {
            let start = Instant::now();
            LoopTimer.sleep(Duration::from_millis(30)).await;
            assert!(start.elapsed() >= Duration::from_millis(30), "{:?}", start.elapsed());
            // A deadline already passed is ready at the first poll.
            LoopTimer.sleep_until(Instant::now() - Duration::from_millis(1)).await;
            let (before, cancelled_before) = lp2.scheduled_timers();
            let mut pending = LoopTimer.sleep(Duration::from_secs(60));
            let poll = std::future::poll_fn(|cx| {
                assert!(pending.as_mut().poll(cx).is_pending());
                std::task::Poll::Ready(())
            });
            poll.await;
            assert_eq!(lp2.scheduled_timers().0, before + 1, "armed at the first poll");
            drop(pending);
            let (after, cancelled) = lp2.scheduled_timers();
            assert!(after == before || cancelled == cancelled_before + 1, "not cancelled");
        });
    }
}
