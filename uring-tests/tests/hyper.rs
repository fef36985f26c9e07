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
                // Timed from before the connect: hyper's timeout may start at the accept, before
                // this thread writes (a thread starved for 200 ms under valgrind saw the close
                // 20 µs after its write).
                let start = Instant::now();
                let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                stream.write_all(b"GET / HTTP/1.1\r\n").expect("half a request");
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

    fn loop_sleep_ends_at_its_deadline(lp) {
        run_within(lp, 5.0, async move {
            let start = Instant::now();
            LoopTimer.sleep(Duration::from_millis(30)).await;
            assert!(start.elapsed() >= Duration::from_millis(30), "{:?}", start.elapsed());
            // A deadline already passed is ready at the first poll.
            let mut passed = LoopTimer.sleep_until(Instant::now() - Duration::from_millis(1));
            assert!(poll_once(passed.as_mut(), &counting_waker().0).is_ready());
        });
    }

    fn loop_sleeps_share_one_loop_timer_armed_at_the_first_poll(lp) {
        let lp2 = lp.clone();
        run_within(lp, 5.0, async move {
            let (before, _) = lp2.scheduled_timers();
            let (waker, _) = counting_waker();
            let mut sleeps: Vec<_> =
                (1..=100).map(|i| LoopTimer.sleep(Duration::from_secs(60 + i))).collect();
            assert_eq!(lp2.scheduled_timers().0, before, "nothing armed before a poll");
            for sleep in &mut sleeps {
                assert!(poll_once(sleep.as_mut(), &waker).is_pending());
            }
            assert_eq!(lp2.scheduled_timers().0, before + 1, "one loop timer for 100 sleeps");
            // An earlier deadline armed after them rings at its own time.
            let start = Instant::now();
            LoopTimer.sleep(Duration::from_millis(30)).await;
            let waited = start.elapsed();
            assert!(waited >= Duration::from_millis(30) && waited < Duration::from_secs(4));
        });
    }

    fn loop_sleeps_ring_in_deadline_order_and_a_dropped_one_never_wakes(lp) {
        let lp2 = lp.clone();
        run_within(lp, 5.0, async move {
            let order = Rc::new(std::cell::RefCell::new(Vec::new()));
            let tasks: Vec<_> = [50u64, 10, 30]
                .into_iter()
                .map(|ms| {
                    let order = order.clone();
                    lp2.create_task(async move {
                        LoopTimer.sleep(Duration::from_millis(ms)).await;
                        order.borrow_mut().push(ms);
                    })
                    .expect("create_task")
                })
                .collect();
            let (waker, wakes) = counting_waker();
            let mut dropped = LoopTimer.sleep(Duration::from_millis(20));
            assert!(poll_once(dropped.as_mut(), &waker).is_pending());
            drop(dropped);
            for task in tasks {
                task.await.expect("sleeping task");
            }
            assert_eq!(*order.borrow(), [10, 30, 50]);
            assert_eq!(wakes.get(), 0, "a dropped sleep woke its waker");
        });
    }
}

/// Polls `future` once with `waker`.
fn poll_once<F: std::future::Future + ?Sized>(
    future: std::pin::Pin<&mut F>,
    waker: &std::task::Waker,
) -> std::task::Poll<F::Output> {
    future.poll(&mut std::task::Context::from_waker(waker))
}

/// A waker that counts its wakes (it is `Send`: the count is atomic).
fn counting_waker() -> (std::task::Waker, std::sync::Arc<CountingWaker>) {
    let count = std::sync::Arc::new(CountingWaker(std::sync::atomic::AtomicUsize::new(0)));
    (std::task::Waker::from(count.clone()), count)
}

/// The count behind [`counting_waker`].
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl CountingWaker {
    fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl std::task::Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}
