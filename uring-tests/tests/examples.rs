//! The echo examples (`examples/tcp_echo_*.rs`, the streams versions
//! `examples/streams_echo_*.rs`, and `examples/udp_echo_*.rs`), run
//! as the compiled programs on every backend built in: their output must be the asyncio
//! documentation's, line for line.
//!
//! The binaries are the ones `cargo test` builds for the `ringloop` package, found in
//! `examples/` beside this test's `deps/` directory (so `CARGO_TARGET_DIR` is honoured). When
//! they are missing (`cargo test -p uring-tests`) the tests print `SKIPPED` and pass; so they
//! do when the epoll run meets binaries built without `--features fallback`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use ringloop::Backend;
use uring_tests::{built_backends, open_loop};

/// What the Python example client prints against the Python example server.
const CLIENT_OUTPUT: &str =
    "Data sent: 'Hello World!'\nData received: 'Hello World!'\nThe server closed the connection\n";

/// Prints a skip where the test harness does not capture it.
fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// The compiled example `name`, if it was built.
fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/debug/deps/examples-HASH → target/debug/examples/NAME
    let path = exe.parent()?.parent()?.join("examples").join(name);
    path.is_file().then_some(path)
}

/// The TCP echo examples, or `None` after printing why the test is skipped.
fn examples(test: &str) -> Option<(PathBuf, PathBuf)> {
    example_pair(test, "tcp_echo_server", "tcp_echo_client")
}

/// The examples `server` and `client`, or `None` after printing why the test is skipped.
fn example_pair(test: &str, server: &str, client: &str) -> Option<(PathBuf, PathBuf)> {
    match (example(server), example(client)) {
        (Some(server), Some(client)) => Some((server, client)),
        _ => {
            skip(test, "examples not built (`cargo build --examples` or `cargo test`)");
            None
        }
    }
}

/// A running example server: killed when dropped (the test may have panicked), and by a
/// watchdog after [`SERVER_DEADLINE`] so no read of its output can hang the test.
struct ServerProcess {
    child: Child,
    stdout: BufReader<ChildStdout>,
    port: u16,
    /// Set on drop: the watchdog stands down.
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The longest an example server may live in a test.
const SERVER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Kills `pid` after [`SERVER_DEADLINE`] unless `done` is set first.
fn watchdog(pid: u32, done: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    std::thread::spawn(move || {
        let start = std::time::Instant::now();
        while start.elapsed() < SERVER_DEADLINE {
            if done.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if !done.load(std::sync::atomic::Ordering::Acquire) {
            // SAFETY: kill takes no pointers; the child has not been reaped (`done` is set
            // before the reaping `wait` in `Drop`), so `pid` is still ours.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    });
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server on a free port; `None` (skipped) when its binary lacks `backend`.
fn start_server(
    path: &PathBuf,
    backend: Backend,
    extra: &[&str],
    test: &str,
) -> Option<ServerProcess> {
    let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut child = Command::new(path)
        .args(["--backend", backend.name(), "--port", "0"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    watchdog(child.id(), done.clone());
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("reading the server's stdout");
    if first.is_empty() {
        done.store(true, std::sync::atomic::Ordering::Release);
        let status = child.wait().expect("waiting for the server");
        let mut stderr = String::new();
        let _ = child.stderr.take().expect("piped stderr").read_to_string(&mut stderr);
        if stderr.contains("not compiled in") {
            skip(test, &format!("{name} was built without `--features fallback`"));
            return None;
        }
        panic!("{test}: {name} exited ({status}) without serving: {stderr}");
    }
    let port = first
        .strip_prefix("serving on 127.0.0.1:")
        .and_then(|p| p.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("{test}: unexpected first line {first:?}"));
    Some(ServerProcess { child, stdout, port, done })
}

/// Every backend built in that this kernel has.
fn backends(test: &str) -> Vec<Backend> {
    built_backends()
        .into_iter()
        .filter(|&backend| open_loop(backend, test).is_some_and(|lp| lp.close().is_ok()))
        .collect()
}

#[test]
fn echo_client_and_server_print_the_python_examples_output() {
    let test = "echo_client_and_server_print_the_python_examples_output";
    let Some((server_path, client_path)) = examples(test) else { return };
    for backend in backends(test) {
        let test = format!("{test} on {backend}");
        let max = ["--max-seconds", "10"];
        let Some(mut server) = start_server(&server_path, backend, &max, &test) else { continue };

        let client = Command::new(&client_path)
            .args(["--backend", backend.name(), "--port", &server.port.to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("running tcp_echo_client");
        let stdout = String::from_utf8_lossy(&client.stdout);
        let stderr = String::from_utf8_lossy(&client.stderr);
        assert!(client.status.success(), "{test}: client failed ({}): {stderr}", client.status);
        assert_eq!(stdout, CLIENT_OUTPUT, "{test}: client output");

        // The server printed these before closing the connection, so they are in the pipe.
        let mut lines = Vec::new();
        for _ in 0..4 {
            let mut line = String::new();
            server.stdout.read_line(&mut line).expect("reading the server's stdout");
            lines.push(line);
        }
        let connection = lines[0].strip_prefix("Connection from ('127.0.0.1', ");
        let port = connection.and_then(|rest| rest.strip_suffix(")\n"));
        assert!(port.is_some_and(|p| p.parse::<u16>().is_ok()), "{test}: {:?}", lines[0]);
        let rest = [
            "Data received: 'Hello World!'\n",
            "Send: 'Hello World!'\n",
            "Close the client socket\n",
        ];
        assert_eq!(lines[1..], rest, "{test}: server output");
    }
}

#[test]
fn quiet_server_echoes_and_exits_after_max_seconds() {
    let test = "quiet_server_echoes_and_exits_after_max_seconds";
    let Some((server_path, _)) = examples(test) else { return };
    for backend in backends(test) {
        let test = format!("{test} on {backend}");
        let args = ["--quiet", "--max-seconds", "2"];
        let Some(mut server) = start_server(&server_path, backend, &args, &test) else { continue };

        // A pure echo server: several messages on one connection, which stays open.
        let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
        for i in 0..20 {
            let message = format!("message {i}\n");
            stream.write_all(message.as_bytes()).expect("send");
            let mut reply = vec![0; message.len()];
            stream.read_exact(&mut reply).expect("echo");
            assert_eq!(reply, message.as_bytes(), "{test}");
        }
        // --max-seconds: the server closes the connection still open and exits cleanly,
        // printing nothing more.
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{test}: unexpected data {rest:?}");
        let status = server.child.wait().expect("waiting for the server");
        assert!(status.success(), "{test}: server exited with {status}");
        let mut output = String::new();
        server.stdout.read_to_string(&mut output).expect("reading the server's stdout");
        assert_eq!(output, "", "{test}: --quiet printed something");
    }
}

#[test]
fn streams_echo_client_and_server_print_the_python_examples_output() {
    let test = "streams_echo_client_and_server_print_the_python_examples_output";
    let Some((server_path, client_path)) =
        example_pair(test, "streams_echo_server", "streams_echo_client")
    else {
        return;
    };
    for backend in backends(test) {
        let test = format!("{test} on {backend}");
        let max = ["--max-seconds", "10"];
        let Some(mut server) = start_server(&server_path, backend, &max, &test) else { continue };

        let client = Command::new(&client_path)
            .args(["--backend", backend.name(), "--port", &server.port.to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("running streams_echo_client");
        let stdout = String::from_utf8_lossy(&client.stdout);
        let stderr = String::from_utf8_lossy(&client.stderr);
        assert!(client.status.success(), "{test}: client failed ({}): {stderr}", client.status);
        let want = "Send: 'Hello World!'\nReceived: 'Hello World!'\nClose the connection\n";
        assert_eq!(stdout, want, "{test}: client output");

        // The server printed these before closing the connection, so they are in the pipe.
        let mut lines = Vec::new();
        for _ in 0..3 {
            let mut line = String::new();
            server.stdout.read_line(&mut line).expect("reading the server's stdout");
            lines.push(line);
        }
        let received = lines[0].strip_prefix("Received 'Hello World!' from ('127.0.0.1', ");
        let port = received.and_then(|rest| rest.strip_suffix(")\n"));
        assert!(port.is_some_and(|p| p.parse::<u16>().is_ok()), "{test}: {:?}", lines[0]);
        assert_eq!(lines[1..], ["Send: 'Hello World!'\n", "Close the connection\n"], "{test}");

        // A second client, on the same server: each connection gets its own handler.
        let again = Command::new(&client_path)
            .args(["--backend", backend.name(), "--port", &server.port.to_string()])
            .args(["--message", "it's me"])
            .stdin(Stdio::null())
            .output()
            .expect("running streams_echo_client");
        let want = "Send: \"it's me\"\nReceived: \"it's me\"\nClose the connection\n";
        assert_eq!(String::from_utf8_lossy(&again.stdout), want, "{test}: second client");
    }
}

/// What `examples/signals.rs` prints, up to the pid, before it waits for a signal.
const SIGNALS_BANNER: &str = "Event loop running for 1 hour, press Ctrl+C to interrupt.\n";

#[test]
fn signals_example_exits_cleanly_on_sigint_and_sigterm() {
    let test = "signals_example_exits_cleanly_on_sigint_and_sigterm";
    let Some(path) = example("signals") else {
        skip(test, "examples not built (`cargo build --examples` or `cargo test`)");
        return;
    };
    for backend in backends(test) {
        for (signum, signame) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
            let test = format!("{test} on {backend}, {signame}");
            let mut child = Command::new(&path)
                .args(["--backend", backend.name()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawning the signals example");
            let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            watchdog(child.id(), done.clone());
            let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
            let mut banner = String::new();
            stdout.read_line(&mut banner).expect("reading the example's stdout");
            if banner.is_empty() {
                done.store(true, std::sync::atomic::Ordering::Release);
                let status = child.wait().expect("waiting for the example");
                let mut stderr = String::new();
                let _ = child.stderr.take().expect("piped stderr").read_to_string(&mut stderr);
                if stderr.contains("not compiled in") {
                    skip(&test, "the signals example was built without `--features fallback`");
                    continue;
                }
                panic!("{test}: the example exited ({status}) at once: {stderr}");
            }
            assert_eq!(banner, SIGNALS_BANNER, "{test}");
            let mut pid_line = String::new();
            stdout.read_line(&mut pid_line).expect("reading the example's stdout");
            assert_eq!(pid_line, format!("pid {}: send SIGINT or SIGTERM to exit.\n", child.id()));
            // SAFETY: kill takes no pointers; the child is not reaped yet, so the pid is ours.
            assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signum) }, 0);
            let status = child.wait().expect("waiting for the example");
            done.store(true, std::sync::atomic::Ordering::Release);
            let mut rest = String::new();
            stdout.read_to_string(&mut rest).expect("reading the example's stdout");
            assert!(status.success(), "{test}: exited with {status}");
            assert_eq!(rest, format!("got signal {signame}: exit\n"), "{test}");
        }
    }
}

/// What the Python UDP example client prints against the Python UDP example server.
const UDP_CLIENT_OUTPUT: &str =
    "Send: Hello World!\nReceived: Hello World!\nClose the socket\nConnection closed\n";

/// The UDP echo examples, or `None` after printing why the test is skipped.
fn udp_examples(test: &str) -> Option<(PathBuf, PathBuf)> {
    match (example("udp_echo_server"), example("udp_echo_client")) {
        (Some(server), Some(client)) => Some((server, client)),
        _ => {
            skip(test, "examples not built (`cargo build --examples` or `cargo test`)");
            None
        }
    }
}

/// Starts `udp_echo_server` on a free port; `None` (skipped) when its binary lacks `backend`.
fn start_udp_server(path: &PathBuf, backend: Backend, test: &str) -> Option<ServerProcess> {
    let mut child = Command::new(path)
        .args(["--backend", backend.name(), "--port", "0", "--max-seconds", "10"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning udp_echo_server");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    watchdog(child.id(), done.clone());
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut lines = [String::new(), String::new()];
    for line in &mut lines {
        stdout.read_line(line).expect("reading the server's stdout");
    }
    if lines[1].is_empty() {
        done.store(true, std::sync::atomic::Ordering::Release);
        let status = child.wait().expect("waiting for the server");
        let mut stderr = String::new();
        let _ = child.stderr.take().expect("piped stderr").read_to_string(&mut stderr);
        if stderr.contains("not compiled in") {
            skip(test, "udp_echo_server was built without `--features fallback`");
            return None;
        }
        panic!("{test}: udp_echo_server exited ({status}) without serving: {stderr}");
    }
    let [first, second] = lines;
    assert_eq!(first, "Starting UDP server\n", "{test}: the Python example's first line");
    let port = second
        .strip_prefix("serving on 127.0.0.1:")
        .and_then(|p| p.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("{test}: unexpected second line {second:?}"));
    Some(ServerProcess { child, stdout, port, done })
}

#[test]
fn udp_echo_client_and_server_print_the_python_examples_output() {
    let test = "udp_echo_client_and_server_print_the_python_examples_output";
    let Some((server_path, client_path)) = udp_examples(test) else { return };
    for backend in backends(test) {
        let test = format!("{test} on {backend}");
        let Some(mut server) = start_udp_server(&server_path, backend, &test) else { continue };

        let client = Command::new(&client_path)
            .args(["--backend", backend.name(), "--port", &server.port.to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("running udp_echo_client");
        let stdout = String::from_utf8_lossy(&client.stdout);
        let stderr = String::from_utf8_lossy(&client.stderr);
        assert!(client.status.success(), "{test}: client failed ({}): {stderr}", client.status);
        assert_eq!(stdout, UDP_CLIENT_OUTPUT, "{test}: client output");

        // The server printed these before echoing, so they are in the pipe.
        let mut lines = Vec::new();
        for _ in 0..2 {
            let mut line = String::new();
            server.stdout.read_line(&mut line).expect("reading the server's stdout");
            lines.push(line);
        }
        let from = lines[0].strip_prefix("Received 'Hello World!' from ('127.0.0.1', ");
        let port = from.and_then(|rest| rest.strip_suffix(")\n"));
        assert!(port.is_some_and(|p| p.parse::<u16>().is_ok()), "{test}: {:?}", lines[0]);
        let sent = format!("Send 'Hello World!' to ('127.0.0.1', {})\n", port.unwrap_or("?"));
        assert_eq!(lines[1], sent, "{test}: server output");
    }
}
