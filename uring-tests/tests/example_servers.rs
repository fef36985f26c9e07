//! The example servers as a user runs them, on every backend built in: `http_server` (hyper on
//! ringloop) answers keep-alive requests and `curl`; `tcp_echo_server --loops 4` serves from
//! four loops; every server shuts down gracefully on SIGTERM, so one restarted at once on the
//! same port binds it (10 times in 10; without the graceful close, io_uring failed 9 in 10).
//!
//! The binaries are found as in `examples.rs`; `http_server` needs `--features hyper` (it is
//! skipped, saying so, where it was not built).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ringloop::Backend;

mod examples_support;
use examples_support::*;

/// One HTTP response read off `reader`: the status line and the body (by `content-length`).
fn read_response(reader: &mut BufReader<TcpStream>, test: &str) -> (String, String) {
    let mut status = String::new();
    reader.read_line(&mut status).unwrap_or_else(|e| panic!("{test}: status line: {e}"));
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap_or_else(|e| panic!("{test}: header: {e}"));
        if header == "\r\n" || header.is_empty() {
            break;
        }
        if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().expect("content-length");
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap_or_else(|e| panic!("{test}: body: {e}"));
    (status.trim_end().to_owned(), String::from_utf8_lossy(&body).into_owned())
}

/// A keep-alive connection to `port` that has had two requests answered, still open.
fn keep_alive_client(port: u16, test: &str) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    for path in ["/", "/again"] {
        write!(writer, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("send");
        let response = read_response(&mut reader, test);
        assert_eq!(response, ("HTTP/1.1 200 OK".into(), "Hello World!".into()), "{test}: {path}");
    }
    reader
}

/// `curl` fetching `/` twice over one connection, if curl is installed.
fn check_with_curl(port: u16, test: &str) {
    let url = format!("http://127.0.0.1:{port}/");
    let out = match Command::new("curl").args(["-s", "--max-time", "10", &url, &url]).output() {
        Ok(out) => out,
        Err(e) => return uring_tests::skipped(format_args!("{test}: curl: {e}")),
    };
    assert!(out.status.success(), "{test}: curl {}: {out:?}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello World!Hello World!", "{test}");
}

#[test]
fn http_server_answers_keep_alive_requests_and_curl_then_exits_on_sigterm() {
    let test = "http_server_answers_keep_alive_requests_and_curl_then_exits_on_sigterm";
    let args = ["--max-seconds", "30"];
    with_each_server(test, &["http_server"], &args, &[], |test, _, server, _| {
        let mut idle = keep_alive_client(server.port, test);
        check_with_curl(server.port, test);
        // SIGTERM with a keep-alive connection open and idle: hyper closes it at once, and the
        // server exits without waiting for its grace period.
        let start = Instant::now();
        signal(&server.process, libc::SIGTERM);
        let status = server.process.wait();
        assert!(status.success(), "{test}: exited with {status}");
        assert!(start.elapsed() < Duration::from_secs(4), "{test}: took {:?}", start.elapsed());
        let mut rest = Vec::new();
        let _ = idle.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{test}: bytes after the shutdown: {rest:?}");
        assert_eq!(server.process.rest(), "", "{test}: printed more than the banner");
    });
}

/// Starts the server at `path` on `backend` on `port` (0: a free one) with `extra` arguments;
/// its process and the port it serves on, or `None` if its binary lacks `backend`.
fn start_on(
    path: &Path,
    backend: Backend,
    port: u16,
    extra: &[&str],
    test: &str,
) -> Option<(Running, u16)> {
    let port = port.to_string();
    let args = [&["--backend", backend.name(), "--port", &port], extra].concat();
    let mut process = Running::spawn(path, &args);
    let banner = process.banner(1, test)?;
    let port = banner[0]
        .strip_prefix("serving on 127.0.0.1:")
        .and_then(|p| p.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("{test}: unexpected banner {banner:?}"));
    Some((process, port))
}

/// On every backend: the server `name` with `extra` arguments, stopped with SIGTERM after
/// `exercise(port)` and restarted at once on the same port, 10 times: every restart binds.
/// The connection `exercise` may return stays open until the server has exited.
fn restarts_on_the_same_port(
    test: &str,
    name: &str,
    extra: &[&str],
    exercise: impl Fn(u16, &str) -> Option<TcpStream>,
) {
    with_each_backend(test, &[name], |test, backend, paths| {
        let Some((mut process, port)) = start_on(&paths[0], backend, 0, extra, test) else {
            return;
        };
        for round in 1..=10 {
            let open = exercise(port, test);
            signal(&process, libc::SIGTERM);
            let status = process.wait();
            drop(open);
            assert!(status.success(), "{test}: round {round}: exited with {status}");
            let restarted = start_on(&paths[0], backend, port, extra, test);
            let (next, again) = restarted.expect("the binary has the backend");
            assert_eq!(again, port, "{test}: round {round}");
            process = next;
        }
        signal(&process, libc::SIGTERM);
        assert!(process.wait().success(), "{test}: the last server");
    });
}

#[test]
fn tcp_echo_server_restarts_at_once_on_its_port_after_sigterm_10_times() {
    let test = "tcp_echo_server_restarts_at_once_on_its_port_after_sigterm_10_times";
    let args = ["--quiet", "--max-seconds", "30"];
    restarts_on_the_same_port(test, "tcp_echo_server", &args, |port, test| {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
        stream.write_all(b"before the signal").expect("send");
        let mut reply = [0u8; 17];
        stream.read_exact(&mut reply).unwrap_or_else(|e| panic!("{test}: echo: {e}"));
        // Closed before the signal: an echo connection open across it would be given the
        // whole grace period.
        None
    });
}

#[test]
fn http_server_restarts_at_once_on_its_port_after_sigterm_10_times() {
    let test = "http_server_restarts_at_once_on_its_port_after_sigterm_10_times";
    let args = ["--max-seconds", "30"];
    restarts_on_the_same_port(test, "http_server", &args, |port, test| {
        // Left open across the signal: the graceful shutdown closes it.
        Some(keep_alive_client(port, test).into_inner())
    });
}

#[test]
fn tcp_echo_server_with_four_loops_echoes_on_every_connection_and_exits_on_sigterm() {
    let test = "tcp_echo_server_with_four_loops_echoes_on_every_connection_and_exits_on_sigterm";
    let args = ["--loops", "4", "--quiet", "--max-seconds", "30"];
    with_each_server(test, &["tcp_echo_server"], &args, &[], |test, _, server, _| {
        let streams: Vec<TcpStream> = (0..64)
            .map(|i| {
                let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
                stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
                let message = format!("connection {i:02}");
                stream.write_all(message.as_bytes()).expect("send");
                let mut reply = vec![0; message.len()];
                stream.read_exact(&mut reply).unwrap_or_else(|e| panic!("{test}: {i}: {e}"));
                assert_eq!(reply, message.as_bytes(), "{test}");
                stream
            })
            .collect();
        drop(streams);
        signal(&server.process, libc::SIGTERM);
        let status = server.process.wait();
        assert!(status.success(), "{test}: exited with {status}");
    });
}

/// README's `quickstart` as a user runs it: it echoes lines on the address given, on every
/// backend (`RINGLOOP_BACKEND`), then exits 0 on SIGTERM.
#[test]
fn quickstart_echoes_lines_then_exits_on_sigterm() {
    let test = "quickstart_echoes_lines_then_exits_on_sigterm";
    with_each_backend(test, &["quickstart"], |test, backend, paths| {
        // A free port, handed over by number: the example takes a fixed address.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let address = format!("127.0.0.1:{port}");
        let env = [("RINGLOOP_BACKEND", backend.name())];
        let mut server = Running::spawn_with_env(&paths[0], &[&address], &env);
        assert_eq!(server.lines(1), [format!("serving on {address}\n")], "{test}");
        let stream = TcpStream::connect(&address).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
        let mut lines = BufReader::new(stream.try_clone().expect("clone"));
        for line in ["hello\n", "ringloop\n"] {
            (&stream).write_all(line.as_bytes()).expect("send");
            let mut echoed = String::new();
            lines.read_line(&mut echoed).expect("echo");
            assert_eq!(echoed, line, "{test}");
        }
        stream.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut rest = String::new();
        lines.read_to_string(&mut rest).expect("EOF after the last line");
        assert_eq!(rest, "", "{test}");
        signal(&server, libc::SIGTERM);
        let status = server.wait();
        assert!(status.success(), "{test}: exited with {status}");
    });
}
