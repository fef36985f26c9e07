//! The harness of ringloop's integration suite: each test is written once and run on every
//! backend built in (`uring`, plus `epoll` with `--features fallback`).
//!
//! A backend the kernel lacks is skipped with a printed line; `RINGLOOP_REQUIRE_URING=1` turns
//! the io_uring skip into a failure (CI sets it where io_uring is expected).

pub mod logs;
pub mod protocols;
pub mod streams;
pub mod tls;

pub use logs::{install_logger, logged, my_warnings, take_my_logs, Captured, LOGGER_PANIC_MARKER};
pub use protocols::{connect_accepted, Received};
use ringloop::{Backend, Error, EventLoop};

/// The backends compiled into this build.
pub fn built_backends() -> Vec<Backend> {
    let mut backends = vec![Backend::Uring];
    if cfg!(feature = "fallback") {
        backends.push(Backend::Epoll);
    }
    backends
}

/// A new loop on `backend`, or `None` (after printing why) when the kernel lacks it.
pub fn open_loop(backend: Backend, test: &str) -> Option<EventLoop> {
    match EventLoop::with_backend(backend) {
        Ok(event_loop) => Some(event_loop),
        Err(Error::Unsupported(why)) => {
            let required = backend == Backend::Uring
                && std::env::var_os("RINGLOOP_REQUIRE_URING").is_some_and(|v| v == "1");
            assert!(!required, "{test}: io_uring required (RINGLOOP_REQUIRE_URING=1) but: {why}");
            // Written to the stderr handle directly: the test harness captures `println!` of
            // passing tests, and a skip must be seen.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED {test} on {backend}: {why}");
            None
        }
        Err(err) => panic!("{test}: cannot create a loop on {backend}: {err}"),
    }
}

/// Prints `SKIPPED <what>` where the test harness does not capture it (it captures both
/// `println!` and `eprintln!` of passing tests, and a skip must be seen).
pub fn skipped(what: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {what}");
}

/// Runs `body` with a fresh loop on `backend` and closes the loop afterwards.
pub fn with_loop(backend: Backend, test: &str, body: impl FnOnce(&EventLoop)) {
    let Some(event_loop) = open_loop(backend, test) else { return };
    body(&event_loop);
    if !event_loop.is_running() {
        event_loop.close().expect("closing the loop");
    }
}

/// Defines tests that run once per backend: `backend_tests! { fn name(lp) { ... } }` makes
/// `name::uring` and (with `fallback`) `name::epoll`, each given a fresh `&EventLoop`.
#[macro_export]
macro_rules! backend_tests {
    ($($(#[$meta:meta])* fn $name:ident($lp:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                fn body($lp: &::ringloop::EventLoop) $body

                $(#[$meta])*
                #[test]
                fn uring() {
                    $crate::with_loop(::ringloop::Backend::Uring, concat!(stringify!($name), "::uring"), body);
                }

                $(#[$meta])*
                #[cfg(feature = "fallback")]
                #[test]
                fn epoll() {
                    $crate::with_loop(::ringloop::Backend::Epoll, concat!(stringify!($name), "::epoll"), body);
                }
            }
        )*
    };
}

/// Runs the loop until `cond` is true or `timeout_secs` of loop time pass; true if it held.
pub fn run_until(event_loop: &EventLoop, timeout_secs: f64, cond: impl Fn() -> bool) -> bool {
    let deadline = event_loop.time() + timeout_secs;
    while !cond() {
        if event_loop.time() > deadline {
            return false;
        }
        let stopper = event_loop.clone();
        let tick = event_loop.call_later(0.001, move || stopper.stop()).expect("call_later");
        event_loop.run_forever().expect("run_forever");
        tick.cancel();
    }
    true
}

/// Open fds of this process (from `/proc/self/fd`).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// A connected, non-blocking `AF_UNIX` stream socketpair.
pub fn socketpair() -> (std::os::unix::net::UnixStream, std::os::unix::net::UnixStream) {
    let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("nonblocking");
    b.set_nonblocking(true).expect("nonblocking");
    (a, b)
}

/// A pipe `(read end, write end)`, close-on-exec; `flags` as for `pipe2` besides that (0 =
/// blocking).
pub fn pipe(flags: libc::c_int) -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let mut fds = [0 as std::os::fd::RawFd; 2];
    // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), flags | libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    unsafe {
        (std::os::fd::OwnedFd::from_raw_fd(fds[0]), std::os::fd::OwnedFd::from_raw_fd(fds[1]))
    }
}

/// True if `fd` is an open descriptor.
pub fn is_open(fd: std::os::fd::RawFd) -> bool {
    // SAFETY: F_GETFD only inspects the descriptor table; no memory is passed.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Runs the loop until no op is in flight (a cancelled io_uring op needs its final CQE).
pub fn settle(event_loop: &EventLoop) {
    let settled = run_until(event_loop, 2.0, || event_loop.ops_in_flight() == 0);
    assert!(settled, "ops left: {}", event_loop.ops_in_flight());
}

/// A connected TCP pair on loopback: `(peer, our end as an OwnedFd)`. The peer is blocking.
pub fn tcp_pair() -> (std::net::TcpStream, std::os::fd::OwnedFd) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (ours, _) = listener.accept().expect("accept");
    (peer, std::os::fd::OwnedFd::from(ours))
}

/// A fresh directory `ringloop-<pid>-<name>` in the system's temp dir (a leftover of that name
/// is removed first), removed with what is in it on drop. `name` must differ between the tests
/// that run at once: [`TempDir::for_test`] adds the backend.
#[derive(Debug)]
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// Makes the directory `ringloop-<pid>-<name>`.
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("ringloop-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TempDir(dir)
    }

    /// The directory of `test` on `event_loop`'s backend.
    pub fn for_test(event_loop: &EventLoop, test: &str) -> TempDir {
        TempDir::new(&format!("{test}-{}", event_loop.backend()))
    }

    /// `name` in the directory.
    pub fn join(&self, name: impl AsRef<std::path::Path>) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `len` bytes of a recognisable pattern.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Queues a stop and runs the loop: what is ready now runs (plus what that batch schedules
/// before the stop callback), then `run_forever` returns.
pub fn run_ready(event_loop: &EventLoop) {
    let stopper = event_loop.clone();
    event_loop.call_soon(move || stopper.stop()).expect("call_soon");
    event_loop.run_forever().expect("run_forever");
}

/// Runs `future` to completion, failing the test if a watchdog stops the loop after `secs`.
pub fn run_within<T: 'static>(
    event_loop: &EventLoop,
    secs: f64,
    future: impl std::future::Future<Output = T> + 'static,
) -> T {
    let stopper = event_loop.clone();
    let watchdog = event_loop.call_later(secs, move || stopper.stop()).expect("call_later");
    let out = event_loop.run_until_complete(future).expect("the watchdog fired");
    watchdog.cancel();
    out
}

/// Runs the blocking `client` on the default executor and awaits it.
pub async fn off_loop<T: Send + 'static>(
    event_loop: &EventLoop,
    client: impl FnOnce() -> T + Send + 'static,
) -> T {
    event_loop.run_in_executor(None, client).expect("run_in_executor").await.expect("client thread")
}

/// A streams server (`start_server`) on a free port of 127.0.0.1 whose connections run
/// `client_connected`, and that port.
pub async fn streams_server(
    event_loop: &EventLoop,
    client_connected: impl ringloop::ClientConnected,
) -> (ringloop::Server, u16) {
    let server = event_loop
        .start_server(client_connected, "127.0.0.1:0", ringloop::ServerOptions::default())
        .await
        .expect("start_server");
    let port = server.sockets()[0].as_socket().expect("an inet socket").port();
    (server, port)
}

/// Runs the loop for `secs` seconds of loop time (many iterations).
pub fn spin(event_loop: &EventLoop, secs: f64) {
    run_until(event_loop, secs, || false);
}

/// A timer that stops the loop after `secs` and records that it had to (a watchdog).
pub fn watchdog(
    event_loop: &EventLoop,
    secs: f64,
) -> (ringloop::TimerHandle, std::rc::Rc<std::cell::Cell<bool>>) {
    let fired = std::rc::Rc::new(std::cell::Cell::new(false));
    let (flag, stopper) = (fired.clone(), event_loop.clone());
    let timer = event_loop
        .call_later(secs, move || {
            flag.set(true);
            stopper.stop();
        })
        .expect("call_later");
    (timer, fired)
}

/// Installs an exception handler that records every context it is given.
pub fn capture_exceptions(
    event_loop: &EventLoop,
) -> std::rc::Rc<std::cell::RefCell<Vec<ringloop::ExceptionContext>>> {
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let sink = seen.clone();
    event_loop.set_exception_handler(Some(
        move |_: &EventLoop, ctx: &ringloop::ExceptionContext| sink.borrow_mut().push(ctx.clone()),
    ));
    seen
}

/// Installs an exception handler that records each context as its log text.
pub fn capture_error_texts(event_loop: &EventLoop) -> std::rc::Rc<std::cell::RefCell<Vec<String>>> {
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let sink = seen.clone();
    event_loop.set_exception_handler(Some(
        move |_: &EventLoop, ctx: &ringloop::ExceptionContext| {
            sink.borrow_mut().push(ctx.to_string())
        },
    ));
    seen
}

/// What callbacks appended, in order (see [`rec`]).
pub type Log<T> = std::rc::Rc<std::cell::RefCell<Vec<T>>>;

/// A new, empty [`Log`].
pub fn log<T>() -> Log<T> {
    std::rc::Rc::new(std::cell::RefCell::new(Vec::new()))
}

/// A callback appending `value` to `log`.
pub fn rec<T: 'static>(log: &Log<T>, value: T) -> impl FnOnce() + 'static {
    let log = log.clone();
    move || log.borrow_mut().push(value)
}

/// A callback appending `first` to `log` and scheduling (`call_soon`) one that appends `then`.
pub fn rec_then_schedule<T: 'static>(
    event_loop: &EventLoop,
    log: &Log<T>,
    first: T,
    then: T,
) -> impl FnOnce() + 'static {
    let (event_loop, log) = (event_loop.clone(), log.clone());
    move || {
        log.borrow_mut().push(first);
        event_loop.call_soon(rec(&log, then)).expect("call_soon");
    }
}

/// A call counter and a callback that adds one to it (clone the callback to count more calls).
pub fn counting_callback() -> (std::rc::Rc<std::cell::Cell<usize>>, impl Fn() + Clone + 'static) {
    let calls = std::rc::Rc::new(std::cell::Cell::new(0));
    let counter = calls.clone();
    (calls, move || counter.set(counter.get() + 1))
}

/// Sets its flag when dropped: shows when a future, task or callback is released.
#[derive(Debug)]
pub struct DropFlag(pub std::rc::Rc<std::cell::Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// A new [`DropFlag`] and the flag it sets.
pub fn drop_flag() -> (DropFlag, std::rc::Rc<std::cell::Cell<bool>>) {
    let dropped = std::rc::Rc::new(std::cell::Cell::new(false));
    (DropFlag(dropped.clone()), dropped)
}

/// Panics without going through the panic hook (no noise on stderr); the payload is a `&str`,
/// so the loop reports it as `Error::Panic("<msg>")`.
pub fn quiet_panic(msg: &'static str) -> ! {
    std::panic::resume_unwind(Box::new(msg))
}

/// Set in the child process of [`in_child`].
const CHILD_ENV: &str = "RINGLOOP_TEST_CHILD";

/// In the parent: runs the test `test` (a `backend_tests!` name) alone in a child process on
/// `lp`'s backend and checks it ran and passed (returns false). In the child: returns true,
/// and the caller runs the body.
pub fn in_child(lp: &EventLoop, test: &str) -> bool {
    if std::env::var_os(CHILD_ENV).is_some() {
        return true;
    }
    let name = format!("{test}::{}", lp.backend());
    // The child's stdout goes to a file: its summary line says whether the test ran (a name
    // that matches no test runs nothing, and that passes too).
    let out_path = std::env::temp_dir().join(format!(
        "ringloop-child-{}-{}.out",
        std::process::id(),
        name.replace("::", "-")
    ));
    let out = std::fs::File::create(&out_path).expect("the child's stdout file");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdout(out)
        .spawn()
        .expect("spawning the child test");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
            let _ = std::fs::remove_file(&out_path);
            assert!(status.success(), "child {name} failed: {status}");
            let ran = stdout.contains("test result: ok. 1 passed;");
            assert!(ran, "child {name} ran no test (is `{test}` the test's name?)");
            return false;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&out_path);
            panic!("child {name} timed out");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Sets `SO_LINGER` 0 on `fd`: closing it then sends an RST instead of a FIN.
pub fn linger_zero(fd: std::os::fd::RawFd) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: `linger` is a valid SO_LINGER value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

/// A TCP listener on `addr` with a full backlog, plus the connections filling it; `None` if
/// the kernel accepts everything (the caller then skips, saying so).
pub fn full_listener(
    addr: std::net::SocketAddr,
) -> Option<(std::net::TcpListener, Vec<std::net::TcpStream>)> {
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind(addr).unwrap();
    // SAFETY: a valid listening socket's fd; listen(2) only changes its backlog.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
    let addr = listener.local_addr().unwrap();
    let mut filling = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)) {
            Ok(stream) => filling.push(stream),
            Err(_) => return Some((listener, filling)),
        }
    }
    None
}

/// How many connections `listener` (made non-blocking) accepts in the next `window`, polled
/// every 20 ms.
pub fn accepts_within(listener: &std::net::TcpListener, window: std::time::Duration) -> usize {
    listener.set_nonblocking(true).expect("nonblocking");
    let mut accepted = 0;
    let deadline = std::time::Instant::now() + window;
    while std::time::Instant::now() < deadline {
        if listener.accept().is_ok() {
            accepted += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    accepted
}

/// One callback of a stream or pipe protocol, as a recording protocol keeps it.
#[derive(Clone, Debug, PartialEq)]
pub enum Ev {
    /// `connection_made`.
    Made,
    /// `data_received` with this many bytes.
    Data(usize),
    /// `eof_received`.
    Eof,
    /// `connection_lost`: [`errno_of`] its error.
    Lost(Option<i32>),
    /// `pause_writing`.
    Pause,
    /// `resume_writing`.
    Resume,
}

/// The errno of `connection_lost`'s error: `None` without one, -1 for a non-OS error.
pub fn errno_of(error: &Option<Error>) -> Option<i32> {
    error.as_ref().map(|e| e.io_error().and_then(|e| e.raw_os_error()).unwrap_or(-1))
}

/// A streams server's callback that writes every line back (draining after each) and closes
/// the connection at end of file.
pub async fn echo_lines(
    reader: ringloop::StreamReader,
    writer: ringloop::StreamWriter,
) -> ringloop::Result<()> {
    loop {
        let line = reader.readline().await?;
        if line.is_empty() {
            break;
        }
        writer.write(&line)?;
        writer.drain().await?;
    }
    writer.close();
    writer.wait_closed().await
}
