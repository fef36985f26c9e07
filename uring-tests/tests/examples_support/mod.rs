//! Shared by the tests that run the example programs (`examples.rs`, `example_servers.rs`):
//! finding the compiled examples, running one with a watchdog, starting an example server on
//! a free port and reading its `serving on` line.
// Each test file uses part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringloop::Backend;
use uring_tests::{built_backends, open_loop};

/// Prints a skip where the test harness does not capture it.
pub fn skip(test: &str, why: &str) {
    uring_tests::skipped(format_args!("{test}: {why}"));
}

/// The compiled example `name`, if it was built.
pub fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/debug/deps/examples-HASH → target/debug/examples/NAME
    let path = exe.parent()?.parent()?.join("examples").join(name);
    path.is_file().then_some(path)
}

/// The compiled examples `names`, or `None` after printing why the test is skipped.
pub fn examples(test: &str, names: &[&str]) -> Option<Vec<PathBuf>> {
    let paths: Option<Vec<PathBuf>> = names.iter().map(|name| example(name)).collect();
    if paths.is_none() {
        skip(test, why_not_built(names));
    }
    paths
}

/// Why some of the examples `names` were not built: `http_server` needs `--features hyper`.
fn why_not_built(names: &[&str]) -> &'static str {
    if names.contains(&"http_server") && example("http_server").is_none() {
        "http_server not built (`--features hyper`)"
    } else {
        "examples not built (`cargo build --examples` or `cargo test`)"
    }
}

/// Every backend built in that this kernel has.
pub fn backends(test: &str) -> Vec<Backend> {
    built_backends()
        .into_iter()
        .filter(|&backend| open_loop(backend, test).is_some_and(|lp| lp.close().is_ok()))
        .collect()
}

/// The longest an example may live in a test.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Kills `pid` after [`DEADLINE`] unless `done` is set first.
pub fn watchdog(pid: u32, done: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            if done.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !done.load(Ordering::Acquire) {
            // SAFETY: kill takes no pointers; the child has not been reaped (`done` is set
            // before the reaping `wait` in `Drop`), so `pid` is still ours.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    });
}

/// A running example with its stdout piped: killed when dropped (the test may have panicked),
/// and by a watchdog after [`DEADLINE`] so no read of its output can hang the test.
pub struct Running {
    /// The example's file name, for messages.
    pub name: String,
    pub child: Child,
    pub stdout: BufReader<ChildStdout>,
    /// Set on drop: the watchdog stands down.
    pub done: Arc<AtomicBool>,
}

impl Running {
    /// Starts `path` with `args`, stdin empty, stdout and stderr piped.
    pub fn spawn(path: &Path, args: &[&str]) -> Running {
        Running::spawn_with_env(path, args, &[])
    }

    /// [`spawn`](Running::spawn) with environment variables `env` set.
    pub fn spawn_with_env(path: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
        let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let mut child = Command::new(path)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        let done = Arc::new(AtomicBool::new(false));
        watchdog(child.id(), done.clone());
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Running { name, child, stdout, done }
    }

    /// The next `n` lines of stdout (empty strings at its end).
    pub fn lines(&mut self, n: usize) -> Vec<String> {
        let mut lines = vec![String::new(); n];
        for line in &mut lines {
            self.stdout.read_line(line).expect("reading the example's stdout");
        }
        lines
    }

    /// The first `n` lines the example prints before it waits. `None` (skipped) when it exits
    /// first because its binary lacks the backend; any other early exit fails the test.
    pub fn banner(&mut self, n: usize, test: &str) -> Option<Vec<String>> {
        let lines = self.lines(n);
        if !lines[n - 1].is_empty() {
            return Some(lines);
        }
        self.done.store(true, Ordering::Release);
        let status = self.child.wait().expect("waiting for the example");
        let mut stderr = String::new();
        let _ = self.child.stderr.take().expect("piped stderr").read_to_string(&mut stderr);
        if stderr.contains("not compiled in") {
            skip(test, &format!("{} was built without `--features fallback`", self.name));
            return None;
        }
        panic!("{test}: {} exited ({status}) at once, after {lines:?}: {stderr}", self.name);
    }

    /// Waits for the example to exit (the watchdog still armed) and returns its status.
    pub fn wait(&mut self) -> ExitStatus {
        let status = self.child.wait().expect("waiting for the example");
        self.done.store(true, Ordering::Release);
        status
    }

    /// Everything else it prints, up to its exit.
    pub fn rest(&mut self) -> String {
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).expect("reading the example's stdout");
        rest
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `signum` to the example.
pub fn signal(process: &Running, signum: libc::c_int) {
    let pid = process.child.id();
    // SAFETY: kill takes no pointers; the child is not reaped yet, so the pid is ours.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signum) }, 0, "kill {pid}");
}

/// An example server started on a free port, with that port.
pub struct ServerProcess {
    pub process: Running,
    pub port: u16,
}

impl ServerProcess {
    /// The server's next `n` lines, the first `prefix` then a client's port as Python prints a
    /// peer (checked by [`peer_port`]): that port, and the lines after the first.
    pub fn report(&mut self, n: usize, prefix: &str, test: &str) -> (String, Vec<String>) {
        let mut lines = self.process.lines(n);
        let port = peer_port(&lines[0], prefix, test).to_owned();
        lines.remove(0);
        (port, lines)
    }
}

/// Starts the server at `path` on a free port with `extra` arguments and checks its banner:
/// the lines `before`, then `serving on 127.0.0.1:PORT`. `None` (skipped) when its binary
/// lacks `backend`.
pub fn start_server(
    path: &Path,
    backend: Backend,
    extra: &[&str],
    before: &[&str],
    test: &str,
) -> Option<ServerProcess> {
    let args = [&["--backend", backend.name(), "--port", "0"], extra].concat();
    let mut process = Running::spawn(path, &args);
    let mut banner = process.banner(before.len() + 1, test)?;
    let serving = banner.pop().expect("the banner has a line");
    assert_eq!(banner, before, "{test}: the lines before `serving on`");
    let port = serving
        .strip_prefix("serving on 127.0.0.1:")
        .and_then(|p| p.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("{test}: unexpected `serving on` line {serving:?}"));
    Some(ServerProcess { process, port })
}

/// Runs the client at `path` against `port` with `extra` arguments; checks that it succeeds
/// and returns what it printed.
pub fn run_client(path: &Path, backend: Backend, port: u16, extra: &[&str], test: &str) -> String {
    let client = Command::new(path)
        .args(["--backend", backend.name(), "--port", &port.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{test}: running {}: {e}", path.display()));
    let stderr = String::from_utf8_lossy(&client.stderr);
    assert!(client.status.success(), "{test}: client failed ({}): {stderr}", client.status);
    String::from_utf8_lossy(&client.stdout).into_owned()
}

/// Checks that `line` is `prefix` then `PORT)\n`, a client's port as Python prints a peer
/// `('127.0.0.1', PORT)`, and returns the port.
pub fn peer_port<'a>(line: &'a str, prefix: &str, test: &str) -> &'a str {
    let port = line.strip_prefix(prefix).and_then(|rest| rest.strip_suffix(")\n"));
    assert!(port.is_some_and(|p| p.parse::<u16>().is_ok()), "{test}: {line:?}");
    port.unwrap_or("?")
}

/// On every backend: runs `body(test, backend, paths)`, `test` naming the backend and `paths`
/// the compiled examples `names`. Skipped where they are not built.
pub fn with_each_backend(
    test: &str,
    names: &[&str],
    mut body: impl FnMut(&str, Backend, &[PathBuf]),
) {
    let Some(paths) = examples(test, names) else { return };
    for backend in backends(test) {
        body(&format!("{test} on {backend}"), backend, &paths);
    }
}

/// On every backend: starts the example server `names[0]` with `extra` arguments (its banner
/// the lines `before`, then `serving on`), and runs `check(test, backend, server, clients)`
/// with the paths of the other examples in `names`. Skipped where they are not built.
pub fn with_each_server(
    test: &str,
    names: &[&str],
    extra: &[&str],
    before: &[&str],
    mut check: impl FnMut(&str, Backend, &mut ServerProcess, &[PathBuf]),
) {
    with_each_backend(test, names, |test, backend, paths| {
        let Some(mut server) = start_server(&paths[0], backend, extra, before, test) else {
            return;
        };
        check(test, backend, &mut server, &paths[1..]);
    });
}

/// On every backend: starts the example server `names[0]` for 10 seconds at most (its banner
/// the lines `before`, then `serving on`), runs the example client `names[1]` against it,
/// checks that the client prints `want`, then runs `check(test, backend, server, client)`.
pub fn client_against_server(
    test: &str,
    names: [&str; 2],
    before: &[&str],
    want: &str,
    mut check: impl FnMut(&str, Backend, &mut ServerProcess, &Path),
) {
    let max = ["--max-seconds", "10"];
    with_each_server(test, &names, &max, before, |test, backend, server, clients| {
        let stdout = run_client(&clients[0], backend, server.port, &[], test);
        assert_eq!(stdout, want, "{test}: client output");
        check(test, backend, server, &clients[0]);
    });
}
