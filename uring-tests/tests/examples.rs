//! The echo examples (`examples/tcp_echo_*.rs`, the streams versions
//! `examples/streams_echo_*.rs`, `examples/udp_echo_*.rs`, `examples/unix_echo_server.rs`),
//! `examples/signals.rs`, `examples/subprocess_date.rs` and `examples/sendfile_server.rs`, run
//! as the compiled programs on every backend built in: their output must be the asyncio
//! documentation's, line for line (for `subprocess_date`, in shape: the date changes), and the
//! file server's clients must get the file.
//!
//! The binaries are the ones `cargo test` builds for the `ringloop` package, found in
//! `examples/` beside this test's `deps/` directory (so `CARGO_TARGET_DIR` is honoured). When
//! they are missing (`cargo test -p uring-tests`) the tests print `SKIPPED` and pass; so they
//! do when the epoll run meets binaries built without `--features fallback`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ringloop::Backend;
use uring_tests::TempDir;

mod examples_support;
use examples_support::*;

/// What the Python example client prints against the Python example server.
const CLIENT_OUTPUT: &str =
    "Data sent: 'Hello World!'\nData received: 'Hello World!'\nThe server closed the connection\n";

#[test]
fn echo_client_and_server_print_the_python_examples_output() {
    let test = "echo_client_and_server_print_the_python_examples_output";
    let names = ["tcp_echo_server", "tcp_echo_client"];
    client_against_server(test, names, &[], CLIENT_OUTPUT, |test, _, server, _| {
        // The server printed these before closing the connection, so they are in the pipe.
        let (_, lines) = server.report(4, "Connection from ('127.0.0.1', ", test);
        let rest = [
            "Data received: 'Hello World!'\n",
            "Send: 'Hello World!'\n",
            "Close the client socket\n",
        ];
        assert_eq!(lines[..], rest, "{test}: server output");
    });
}

#[test]
fn quiet_server_echoes_and_exits_after_max_seconds() {
    let test = "quiet_server_echoes_and_exits_after_max_seconds";
    let args = ["--quiet", "--max-seconds", "2"];
    with_each_server(test, &["tcp_echo_server"], &args, &[], |test, _, server, _| {
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
        let status = server.process.wait();
        assert!(status.success(), "{test}: server exited with {status}");
        assert_eq!(server.process.rest(), "", "{test}: --quiet printed something");
    });
}

#[test]
fn echo_server_binds_the_host_given_with_host() {
    let test = "echo_server_binds_the_host_given_with_host";
    with_each_backend(test, &["tcp_echo_server"], |test, backend, paths| {
        let args = ["--backend", backend.name(), "--host", "127.0.0.2", "--port", "0"];
        let mut process =
            Running::spawn(&paths[0], &[&args[..], &["--quiet", "--max-seconds", "10"]].concat());
        let Some(banner) = process.banner(1, test) else { return };
        let port: u16 = banner[0]
            .strip_prefix("serving on 127.0.0.2:")
            .and_then(|p| p.trim_end().parse().ok())
            .unwrap_or_else(|| panic!("{test}: unexpected `serving on` line {:?}", banner[0]));
        let mut stream = TcpStream::connect(("127.0.0.2", port)).expect("connect to 127.0.0.2");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
        stream.write_all(b"on 127.0.0.2").expect("send");
        let mut reply = [0u8; 12];
        stream.read_exact(&mut reply).expect("echo");
        assert_eq!(&reply, b"on 127.0.0.2", "{test}");
        let other = TcpStream::connect(("127.0.0.1", port)).map(|_| ()).map_err(|e| e.kind());
        assert_eq!(
            other,
            Err(std::io::ErrorKind::ConnectionRefused),
            "{test}: bound 127.0.0.1 too"
        );
    });
}

/// What the Python streams example client prints against the Python streams example server.
const STREAMS_OUTPUT: &str =
    "Send: 'Hello World!'\nReceived: 'Hello World!'\nClose the connection\n";

#[test]
fn streams_echo_client_and_server_print_the_python_examples_output() {
    let test = "streams_echo_client_and_server_print_the_python_examples_output";
    let names = ["streams_echo_server", "streams_echo_client"];
    client_against_server(test, names, &[], STREAMS_OUTPUT, |test, backend, server, client| {
        // The server printed these before closing the connection, so they are in the pipe.
        let (_, lines) = server.report(3, "Received 'Hello World!' from ('127.0.0.1', ", test);
        assert_eq!(lines[..], ["Send: 'Hello World!'\n", "Close the connection\n"], "{test}");

        // A second client, on the same server: each connection gets its own handler.
        let message = ["--message", "it's me"];
        let again = run_client(client, backend, server.port, &message, test);
        let want = "Send: \"it's me\"\nReceived: \"it's me\"\nClose the connection\n";
        assert_eq!(again, want, "{test}: second client");
    });
}

/// What `examples/signals.rs` prints, up to the pid, before it waits for a signal.
const SIGNALS_BANNER: &str = "Event loop running for 1 hour, press Ctrl+C to interrupt.\n";

#[test]
fn signals_example_exits_cleanly_on_sigint_and_sigterm() {
    let test = "signals_example_exits_cleanly_on_sigint_and_sigterm";
    with_each_backend(test, &["signals"], |test, backend, paths| {
        for (signum, signame) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
            let test = format!("{test}, {signame}");
            let mut example = Running::spawn(&paths[0], &["--backend", backend.name()]);
            let Some(banner) = example.banner(1, &test) else { continue };
            assert_eq!(banner[0], SIGNALS_BANNER, "{test}");
            let pid = example.child.id();
            let pid_line = example.lines(1).remove(0);
            assert_eq!(pid_line, format!("pid {pid}: send SIGINT or SIGTERM to exit.\n"));
            // SAFETY: kill takes no pointers; the child is not reaped yet, so the pid is ours.
            assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signum) }, 0);
            let status = example.wait();
            let rest = example.rest();
            assert!(status.success(), "{test}: exited with {status}");
            assert_eq!(rest, format!("got signal {signame}: exit\n"), "{test}");
        }
    });
}

/// What the Python UDP example client prints against the Python UDP example server.
const UDP_CLIENT_OUTPUT: &str =
    "Send: Hello World!\nReceived: Hello World!\nClose the socket\nConnection closed\n";

#[test]
fn udp_echo_client_and_server_print_the_python_examples_output() {
    let test = "udp_echo_client_and_server_print_the_python_examples_output";
    let names = ["udp_echo_server", "udp_echo_client"];
    // The Python example's first line comes before the `serving on` one.
    let before = ["Starting UDP server\n"];
    client_against_server(test, names, &before, UDP_CLIENT_OUTPUT, |test, _, server, _| {
        // The server printed these before echoing, so they are in the pipe.
        let (port, lines) = server.report(2, "Received 'Hello World!' from ('127.0.0.1', ", test);
        let sent = format!("Send 'Hello World!' to ('127.0.0.1', {port})\n");
        assert_eq!(lines[0], sent, "{test}: server output");
    });
}

/// Starts `unix_echo_server` at `path` on `backend` with its socket at `socket`, and checks
/// its banner `serving on SOCKET` and that the socket file is there. `None` (skipped) when
/// its binary lacks `backend`.
fn start_unix_server(path: &Path, backend: Backend, socket: &Path, test: &str) -> Option<Running> {
    let socket_arg = socket.to_str().expect("a UTF-8 temp path");
    let args = ["--backend", backend.name(), "--path", socket_arg];
    let mut server = Running::spawn(path, &args);
    let banner = server.banner(1, test)?;
    assert_eq!(banner[0], format!("serving on {socket_arg}\n"), "{test}: banner");
    let meta = std::fs::symlink_metadata(socket).expect("the socket file once serving");
    assert!(meta.file_type().is_socket(), "{test}: {} is not a socket", socket.display());
    Some(server)
}

/// Sends a few messages on one connection to `socket`, checks each comes back, and returns
/// the connection, still open.
fn echo_over_unix(socket: &Path, test: &str) -> UnixStream {
    let mut stream = UnixStream::connect(socket).unwrap_or_else(|e| panic!("{test}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    for message in ["Hello World!", "second message\n", &"x".repeat(100_000)] {
        stream.write_all(message.as_bytes()).expect("send");
        let mut reply = vec![0; message.len()];
        stream.read_exact(&mut reply).unwrap_or_else(|e| panic!("{test}: echo: {e}"));
        assert!(reply == message.as_bytes(), "{test}: echo of {} bytes differs", message.len());
    }
    stream
}

/// Waits up to 10 s for `path` to be gone.
fn wait_removed(path: &Path) -> bool {
    let start = std::time::Instant::now();
    while path.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    !path.exists()
}

#[test]
fn unix_echo_server_echoes_and_removes_its_socket_on_sigint_and_sigterm() {
    let test = "unix_echo_server_echoes_and_removes_its_socket_on_sigint_and_sigterm";
    let dir = TempDir::new("unix-echo");
    with_each_backend(test, &["unix_echo_server"], |test, backend, paths| {
        for (signum, signame) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
            let test = format!("{test}, {signame}");
            let socket = dir.0.join(format!("{backend}-{signame}.sock"));
            let Some(mut server) = start_unix_server(&paths[0], backend, &socket, &test) else {
                continue;
            };
            // A graceful shutdown: the server stops listening (its socket file goes) and the
            // connection open across the signal is still served until the client closes it.
            let mut stream = echo_over_unix(&socket, &test);
            signal(&server, signum);
            assert!(wait_removed(&socket), "{test}: the socket file is still there");
            assert!(UnixStream::connect(&socket).is_err(), "{test}: still accepting");
            stream.write_all(b"after the signal").expect("send after the signal");
            let mut reply = [0u8; 16];
            stream.read_exact(&mut reply).unwrap_or_else(|e| panic!("{test}: echo: {e}"));
            assert_eq!(&reply, b"after the signal", "{test}");
            let closed = std::time::Instant::now();
            drop(stream);
            let status = server.wait();
            assert!(status.success(), "{test}: exited with {status}");
            let waited = closed.elapsed();
            assert!(waited < Duration::from_secs(3), "{test}: exited {waited:?} after the close");
            assert_eq!(server.rest(), "", "{test}: printed more than the banner");
        }
    });
}

#[test]
fn unix_echo_server_aborts_an_open_connection_on_a_second_signal() {
    let test = "unix_echo_server_aborts_an_open_connection_on_a_second_signal";
    let dir = TempDir::new("unix-echo-twice");
    with_each_backend(test, &["unix_echo_server"], |test, backend, paths| {
        let socket = dir.0.join(format!("{backend}.sock"));
        let Some(mut server) = start_unix_server(&paths[0], backend, &socket, test) else {
            return;
        };
        let mut stream = echo_over_unix(&socket, test);
        signal(&server, libc::SIGTERM);
        assert!(wait_removed(&socket), "{test}: the socket file is still there");
        // The second signal cuts the grace period short: the open connection is aborted.
        signal(&server, libc::SIGINT);
        let status = server.wait();
        assert!(status.success(), "{test}: exited with {status}");
        let mut rest = Vec::new();
        let read = stream.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{test}: unexpected data {rest:?} ({read:?})");
    });
}

#[test]
fn unix_echo_server_without_path_is_a_usage_error() {
    let test = "unix_echo_server_without_path_is_a_usage_error";
    let Some(paths) = examples(test, &["unix_echo_server"]) else { return };
    for args in [&[][..], &["--backend", "epoll"], &["--port", "0"], &["--path"]] {
        let stderr = failed_with_usage_error(test, &paths[0], args);
        let usage = "usage: unix_echo_server --path PATH [--backend uring|epoll]\n";
        assert!(stderr.starts_with("unix_echo_server: "), "{test}: {args:?}: {stderr}");
        if args != ["--path"] {
            assert!(stderr.ends_with(usage), "{test}: {args:?}: {stderr}");
        }
    }
    let missing = Command::new(&paths[0]).output().expect("running unix_echo_server");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("--path is required"), "{test}: {stderr}");
}

/// The TLS examples: `tls_echo_client` against `tls_echo_server` (certificates made at test
/// time), then `openssl s_client` against the same server, on every backend. The OpenSSL part
/// is skipped, saying so, only where `openssl` is not installed.
#[test]
fn tls_echo_client_and_server() {
    let test = "tls_echo_client_and_server";
    let dir = TempDir::new(test);
    let pki = uring_tests::tls::pki();
    let (ca, cert, key) = pki.write_files(&dir.0, &pki.good);
    let (ca, cert, key) = (ca.to_str().unwrap(), cert.to_str().unwrap(), key.to_str().unwrap());
    let names = ["tls_echo_server", "tls_echo_client"];
    let server_args = ["--cert", cert, "--key", key, "--max-seconds", "20"];
    with_each_server(test, &names, &server_args, &[], |test, backend, server, clients| {
        let client_args = ["--cafile", ca, "--server-hostname", "localhost"];
        let stdout = run_client(&clients[0], backend, server.port, &client_args, test);
        let want =
            "Send: 'Hello World!'\nReceived: 'Hello World!'\nClose the connection (TLSv1.3, ";
        assert!(stdout.starts_with(want), "{test}: client output {stdout:?}");
        if !uring_tests::tls::have_openssl(test) {
            return;
        }
        let connect = format!("127.0.0.1:{}", server.port);
        let args = ["s_client", "-connect", &connect, "-CAfile", ca, "-servername", "localhost"];
        let mut openssl = uring_tests::tls::OpensslPeer::spawn(&[&args[..], &["-brief"]].concat());
        openssl.send(b"echo through openssl\n");
        let echoed = openssl.wait_for("echo through openssl", 20);
        assert!(echoed.is_ok(), "{test}: s_client saw {echoed:?}");
        let status = openssl.finish(20).expect("s_client exits at the end of its input");
        assert!(status.success(), "{test}: s_client {status:?} {:?}", openssl.drain());
    });
}

/// Whether `date` is Python's `str(datetime.datetime.now())` with microseconds:
/// `YYYY-MM-DD HH:MM:SS.ffffff`.
fn is_python_datetime(date: &str) -> bool {
    let shape = "dddd-dd-dd dd:dd:dd.dddddd";
    date.len() == shape.len()
        && date.chars().zip(shape.chars()).all(|(c, s)| match s {
            'd' => c.is_ascii_digit(),
            _ => c == s,
        })
}

#[test]
fn subprocess_date_prints_the_date_its_child_printed() {
    let test = "subprocess_date_prints_the_date_its_child_printed";
    with_each_backend(test, &["subprocess_date"], |test, backend, paths| {
        let env = [("RINGLOOP_BACKEND", backend.name())];
        let mut example = Running::spawn_with_env(&paths[0], &[], &env);
        let Some(line) = example.banner(1, test) else { return };
        let status = example.wait();
        assert!(status.success(), "{test}: exited with {status}");
        let date = line[0].strip_prefix("Current date: ").and_then(|d| d.strip_suffix('\n'));
        assert!(date.is_some_and(is_python_datetime), "{test}: printed {line:?}");
        assert_eq!(example.rest(), "", "{test}: one line only");
    });
}

/// Everything a new connection to `127.0.0.1:port` receives until the server closes it.
fn fetch(port: u16, test: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    let mut got = Vec::new();
    stream.read_to_end(&mut got).unwrap_or_else(|e| panic!("{test}: reading the file: {e}"));
    got
}

#[test]
fn sendfile_server_sends_the_whole_file_to_every_client() {
    let test = "sendfile_server_sends_the_whole_file_to_every_client";
    let dir = TempDir::new("sendfile-server");
    // Not a multiple of a page, a pipe or a copy chunk.
    let data = Arc::new(uring_tests::pattern((3 << 20) + 4097));
    let path = dir.join("served");
    std::fs::write(&path, &*data).expect("writing the file");
    let args = ["--file", path.to_str().expect("a UTF-8 temp path"), "--max-seconds", "20"];
    with_each_server(test, &["sendfile_server"], &args, &[], |test, _, server, _| {
        // Three clients at once, then one more: each gets the whole file, then EOF.
        let clients: Vec<_> = (0..3)
            .map(|_| {
                let (port, test) = (server.port, test.to_owned());
                std::thread::spawn(move || fetch(port, &test))
            })
            .collect();
        for client in clients {
            let got = client.join().expect("client thread");
            assert!(got == *data, "{test}: {} bytes, not the file's {}", got.len(), data.len());
        }
        let got = fetch(server.port, test);
        assert!(got == *data, "{test}: {} bytes, not the file's {}", got.len(), data.len());
    });
}

#[test]
fn sendfile_server_without_a_readable_file_is_an_error() {
    let test = "sendfile_server_without_a_readable_file_is_an_error";
    let Some(paths) = examples(test, &["sendfile_server"]) else { return };
    let dir = TempDir::new("sendfile-server-missing");
    let missing = dir.join("missing");
    let missing = missing.to_str().expect("a UTF-8 temp path");
    for (args, want) in [
        (&[][..], "--file is required"),
        (&["--port", "0"], "--file is required"),
        (&["--file", missing, "--port", "0"], "cannot open"),
    ] {
        let stderr = failed_with_usage_error(test, &paths[0], args);
        // After the line saying the loop runs on epoll, where io_uring is missing.
        let error = stderr.lines().find(|l| !l.starts_with("ringloop: ")).unwrap_or_default();
        assert!(error.starts_with("sendfile_server: "), "{test}: {args:?}: {stderr}");
        assert!(stderr.contains(want), "{test}: {args:?}: {stderr}");
    }
}

/// Runs the example at `path` with `args`, which it must refuse: exit status 1, nothing on
/// stdout. Returns its stderr.
fn failed_with_usage_error(test: &str, path: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{test}: running {}: {e}", path.display()));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{test}: {args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{test}: {args:?} printed to stdout");
    stderr
}
