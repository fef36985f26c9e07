//! The driver contract suite: one list of tests of what `driver/mod.rs` promises, each run on
//! every driver configuration of this build, as io-uring's own test crate runs its list on
//! every ring variant.
//!
//! A test is a closure over a [`Driver<u32>`]; [`each_config`] runs it once per configuration
//! of [`configs`] (io_uring with every optimization, io_uring with every optimization off, and,
//! with `fallback`, epoll), each on a fresh driver on a thread named
//! `<test> [<configuration>]`. An io_uring configuration the kernel lacks is skipped with a
//! printed line ([`uring_missing`]). A failure names the configuration it happened on, and the
//! other configurations still run. Where the contract lets the backends differ (io_uring keeps
//! a cancelled op until its final CQE; epoll drops it at once), the test says so by
//! [`Driver::backend`].
//!
//! What only one backend does is tested beside it, with the helpers here: `uring/tests.rs`
//! and `uring/persistent_tests.rs` (ring setup and fd registration, CQ overflow, shutdown, the
//! buffer rings), `epoll/tests.rs` (registrations). A scenario whose end state a backend also
//! checks in its own terms is a `pub(crate)` function here, taking a [`Look`] for that check.
//!
//! * `polls.rs`: `Poll`, readiness and cancelling polls.
//! * `lifecycle.rs`: turns, timeouts, the waker, cancellation at scale, `withdraw`, dropping
//!   the driver.
//! * `sockets.rs`: `Connect` and `Send`.
//! * `read_write.rs`: `Read` and `Write` on pipes, PTYs and regular files.
//! * `persistent.rs`: `RecvMulti` and `AcceptMulti`, `end_gracefully` and `cancel`.
//! * `datagrams.rs`: `SendMsg` and `RecvMsgMulti`.
//! * `send_file.rs`: `SendFile`.
//! * `children.rs`: `WaitId`, reaping child processes.
//! * `fd_numbers.rs`: only the driver closes an fd it handed to the kernel.

mod children;
mod datagrams;
mod fd_numbers;
mod lifecycle;
mod persistent;
mod polls;
mod read_write;
mod send_file;
mod sockets;

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

// The scenarios a backend's own tests also run, to check the end state in its terms.
pub(crate) use self::datagrams::cancel_a_datagram_receive;
#[cfg(feature = "fallback")]
pub(crate) use self::fd_numbers::close_an_fd_after_its_poll;
pub(crate) use self::lifecycle::cancel_right_after_each_submit;
#[cfg(feature = "fallback")]
pub(crate) use self::lifecycle::{cancel_after_the_turn, cancel_before_the_turn};
pub(crate) use self::persistent::cancel_a_recv_multi;
#[cfg(feature = "fallback")]
pub(crate) use self::persistent::receive_past_urgent_data;
#[cfg(feature = "fallback")]
pub(crate) use self::polls::rearm_while_data_is_unread;
#[cfg(feature = "fallback")]
pub(crate) use self::send_file::file_with;
#[cfg(feature = "fallback")]
pub(crate) use self::sockets::{
    cancel_a_stalled_send, read_and_send_on_one_fd, send_to_a_full_socket,
};
use crate::driver::any::Driver;
use crate::driver::uring::UringDriver;
use crate::driver::{Backend, Completion, Interest, Op, OpId, SockAddrBuf};
use crate::test_support::uring_missing;

/// How long a test waits for what must happen.
pub(crate) const LIMIT: Duration = Duration::from_secs(5);
/// `POLLIN` as a result.
pub(crate) const IN: u32 = libc::POLLIN as u32;
/// `POLLOUT` as a result.
pub(crate) const OUT: u32 = libc::POLLOUT as u32;
/// `POLLHUP` as a result.
pub(crate) const HUP: u32 = libc::POLLHUP as u32;

// Configurations.

/// A driver configuration: a backend and, for io_uring, the `RINGLOOP_DISABLE` switches off.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    /// The backend.
    backend: Backend,
    /// The optimizations switched off (io_uring only).
    disabled: &'static [&'static str],
}

/// Every driver configuration this build has: io_uring as it runs by default, io_uring with
/// every optimization off (the registered ring fd, `IORING_OP_WAITID`: each has the other path
/// then, and they do not interact, so one configuration covers both), and, with `fallback`,
/// epoll.
pub(crate) fn configs() -> Vec<Config> {
    let mut configs = vec![
        Config { backend: Backend::Uring, disabled: &[] },
        Config { backend: Backend::Uring, disabled: &["registered_ring", "waitid"] },
    ];
    if cfg!(feature = "fallback") {
        configs.push(Config { backend: Backend::Epoll, disabled: &[] });
    }
    configs
}

impl Config {
    /// The driver, or `None` (after a printed SKIPPED line) for io_uring the kernel lacks.
    fn open(self) -> Option<Driver<u32>> {
        match self.backend {
            Backend::Uring => open_uring(self.disabled, &test_name()).map(Driver::Uring),
            Backend::Epoll => Some(Driver::open(Some(Backend::Epoll)).expect("an epoll driver")),
        }
    }
}

impl fmt::Display for Config {
    /// `uring`, `uring without registered_ring, waitid`, `epoll`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.backend, without(self.disabled))
    }
}

/// Runs `test` on a fresh driver of each configuration, each on a thread of its own named
/// `<test> [<configuration>]` (so the panic line names it, and nothing a driver leaves to its
/// thread, such as io_uring task work interrupting a later wait, reaches the next). A failing
/// configuration does not stop the others; the test then fails, naming each.
pub(crate) fn each_config(test: impl Fn(Driver<u32>) + Sync) {
    run_on(Config::open, test)
}

/// [`each_config`] for the io_uring driver's own tests: each io_uring configuration, as a
/// driver and the switches it has off.
pub(crate) fn each_uring_config(test: impl Fn(UringDriver<u32>, &'static [&'static str]) + Sync) {
    let open = |config: Config| match config.backend {
        Backend::Uring => open_uring(config.disabled, &test_name()).map(|d| (d, config.disabled)),
        Backend::Epoll => None,
    };
    run_on(open, |(d, disabled)| test(d, disabled))
}

/// Runs `test` on what `open` makes of each configuration (`None`: skipped), one configuration
/// at a time, each on its own thread.
fn run_on<D>(open: impl Fn(Config) -> Option<D> + Sync, test: impl Fn(D) + Sync) {
    let name = test_name();
    let failed: Vec<String> = (configs().into_iter())
        .filter_map(|config| {
            let thread = std::thread::Builder::new().name(format!("{name} [{config}]"));
            let run = || open(config).map(&test);
            let outcome = std::thread::scope(|s| thread.spawn_scoped(s, run).unwrap().join());
            let panic = outcome.err()?;
            Some(format!("on {config}: {}", crate::error::panic_message(&*panic)))
        })
        .collect();
    assert!(failed.is_empty(), "{name} failed {}", failed.join("; "));
}

/// An io_uring driver with `disabled` switched off, or `None` after a printed SKIPPED line (a
/// failure under `RINGLOOP_REQUIRE_URING=1`) when the kernel lacks io_uring.
pub(crate) fn uring_driver(disabled: &[&str]) -> Option<UringDriver<u32>> {
    open_uring(disabled, &format!("{}{}", test_name(), without(disabled)))
}

/// [`uring_driver`], skipped as `test`.
fn open_uring(disabled: &[&str], test: &str) -> Option<UringDriver<u32>> {
    UringDriver::with_disabled(disabled).map_err(|err| uring_missing(test, &err)).ok()
}

/// `" without a, b"` for switches `disabled`, else nothing.
fn without(disabled: &[&str]) -> String {
    if disabled.is_empty() {
        String::new()
    } else {
        format!(" without {}", disabled.join(", "))
    }
}

/// The running test's name (the harness names each test's thread after it).
fn test_name() -> String {
    std::thread::current().name().unwrap_or("a driver test").to_owned()
}

/// A backend's own test looking at the driver (and the scenario's fd) at a set point of a
/// contract scenario; the contract tests pass [`no_look`].
pub(crate) type Look<'a> = &'a dyn Fn(&Driver<u32>, RawFd);

/// The [`Look`] of the contract tests themselves: none.
pub(crate) fn no_look(_: &Driver<u32>, _: RawFd) {}

/// How many ops stay in flight right after cancelling one the kernel holds: io_uring keeps it
/// until its final CQE, epoll drops it at once (the contract's "Cancellation").
pub(crate) fn kept_after_cancel(d: &Driver<u32>) -> usize {
    usize::from(d.backend() == Backend::Uring)
}

// Turning the driver.

/// Turns until `want` completions arrived or `limit` passed.
pub(crate) fn collect(d: &mut Driver<u32>, want: usize, limit: Duration) -> Vec<Completion<u32>> {
    let (start, mut out) = (Instant::now(), Vec::new());
    while out.len() < want && start.elapsed() < limit {
        let wait = limit.saturating_sub(start.elapsed()).min(short_wait());
        d.turn(Some(wait), &mut out).expect("turn");
    }
    out
}

/// 50 ms, or `RINGLOOP_MAX_WAIT_MS` when set: under valgrind (docs/testing.md) a thread
/// waiting in `io_uring_enter` keeps valgrind's lock, and a peer thread needs the gaps.
pub(crate) fn short_wait() -> Duration {
    capped_wait().unwrap_or(Duration::from_millis(50))
}

/// `RINGLOOP_MAX_WAIT_MS`, set when the tests run under valgrind (docs/testing.md).
pub(crate) fn capped_wait() -> Option<Duration> {
    let ms = std::env::var("RINGLOOP_MAX_WAIT_MS").ok()?.parse().ok()?;
    Some(Duration::from_millis(ms))
}

/// Turns until `done(out)` or [`LIMIT`].
pub(crate) fn turn_until(
    d: &mut Driver<u32>,
    out: &mut Vec<Completion<u32>>,
    done: impl Fn(&[Completion<u32>]) -> bool,
) {
    let start = Instant::now();
    while !done(out) && start.elapsed() < LIMIT {
        d.turn(Some(Duration::from_millis(50)), out).expect("turn");
    }
}

/// `n` turns of at most 5 ms each; their completions.
pub(crate) fn turns(d: &mut Driver<u32>, n: usize) -> Vec<Completion<u32>> {
    let mut out = Vec::new();
    for _ in 0..n {
        d.turn(Some(Duration::from_millis(5)), &mut out).expect("turn");
    }
    out
}

/// One turn of at most `timeout`, which must end within a second; its completions, each final
/// and with its op handed back.
pub(crate) fn turn_once(d: &mut Driver<u32>, timeout: Option<Duration>) -> Vec<Completion<u32>> {
    let (start, mut out) = (Instant::now(), Vec::new());
    d.turn(timeout, &mut out).expect("turn");
    assert!(start.elapsed() < Duration::from_secs(1), "the turn blocked: {out:?}");
    assert!(out.iter().all(|c| !c.more() && c.op.is_some()), "{out:?}");
    out
}

/// Turns at least three times, then until no op is in flight (io_uring frees a cancelled op at
/// its final CQE), which it asserts; the completions meanwhile.
pub(crate) fn settle(d: &mut Driver<u32>) -> Vec<Completion<u32>> {
    let (start, mut out) = (Instant::now(), Vec::new());
    for turns in 0.. {
        if (turns >= 3 && d.in_flight() == 0) || start.elapsed() > LIMIT {
            break;
        }
        d.turn(Some(Duration::from_millis(10)), &mut out).expect("turn");
    }
    assert_eq!(d.in_flight(), 0, "ops left in flight");
    out
}

/// Submits `op` (owner 9) and returns its one completion, checked final, with the op handed
/// back and nothing left in flight.
pub(crate) fn run(d: &mut Driver<u32>, op: Op) -> Completion<u32> {
    run_within(d, op, LIMIT)
}

/// [`run`], the completion due within `limit`.
pub(crate) fn run_within(d: &mut Driver<u32>, op: Op, limit: Duration) -> Completion<u32> {
    let id = d.submit(op, 9);
    let mut out = collect(d, 1, limit);
    assert_eq!(out.len(), 1, "{out:?}");
    let c = out.pop().unwrap();
    assert_eq!((c.id, c.owner, c.more()), (id, 9, false), "{c:?}");
    assert!(c.op.is_some(), "a final completion hands the op back");
    assert_eq!(d.in_flight(), 0);
    c
}

/// [`run`] for an op that must fail: its errno.
pub(crate) fn run_errno(d: &mut Driver<u32>, op: Op) -> Option<i32> {
    run(d, op).result.expect_err("an error").raw_os_error()
}

/// `(id, owner, result)` of each completion, in the order delivered; panics on an error.
pub(crate) fn outcomes(out: &[Completion<u32>]) -> Vec<(OpId, u32, u32)> {
    (out.iter())
        .map(|c| match &c.result {
            Ok(n) => (c.id, c.owner, *n),
            Err(e) => panic!("op {:?} (owner {}) failed: {e}", c.id, c.owner),
        })
        .collect()
}

/// [`outcomes`] sorted by owner: for completions the contract does not order.
pub(crate) fn outcomes_by_owner(out: &[Completion<u32>]) -> Vec<(OpId, u32, u32)> {
    let mut outcomes = outcomes(out);
    outcomes.sort_by_key(|&(_, owner, _)| owner);
    outcomes
}

/// A `Poll` of `fd` for `interest`.
pub(crate) fn poll(fd: &(impl AsRawFd + ?Sized), interest: Interest) -> Op {
    Op::Poll { fd: fd.as_raw_fd(), interest }
}

// Fds to run ops on.

/// Writes all of `data` to `fd` in one `write(2)`.
pub(crate) fn write(fd: &impl AsRawFd, data: &[u8]) {
    // SAFETY: writes `data.len()` bytes from a live slice to an open descriptor.
    let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    assert_eq!(n, data.len() as isize, "write: {}", std::io::Error::last_os_error());
}

/// Reads what `fd` holds, up to 64 bytes, in one `read(2)`: the count (0 on an error).
pub(crate) fn read_some(fd: &impl AsRawFd) -> usize {
    let mut buf = [0u8; 64];
    // SAFETY: reads at most 64 bytes into a live local buffer from an open descriptor.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    n.max(0) as usize
}

/// A connected, non-blocking Unix stream socket pair.
pub(crate) fn unix_stream_pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// A connected Unix datagram pair: (peer, ours), ours non-blocking.
pub(crate) fn unix_datagram_pair() -> (UnixDatagram, UnixDatagram) {
    let (peer, ours) = UnixDatagram::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    (peer, ours)
}

/// A non-blocking UDP socket on an ephemeral port of 127.0.0.1.
pub(crate) fn udp() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_nonblocking(true).unwrap();
    socket
}

/// A non-blocking listener on an ephemeral port of 127.0.0.1, and its address.
pub(crate) fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// The next connection of the non-blocking `listener` (waiting for it), non-blocking.
pub(crate) fn accept(listener: &TcpListener) -> TcpStream {
    let start = Instant::now();
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(true).unwrap();
                return stream;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && start.elapsed() < LIMIT => {
                std::thread::yield_now()
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// A connected TCP pair: ours non-blocking (the driver's side), the peer blocking with a read
/// timeout of [`LIMIT`].
pub(crate) fn tcp_pair() -> (TcpStream, TcpStream) {
    tcp_pair_on(listener().0)
}

/// [`tcp_pair`], ours accepted by `listener`.
fn tcp_pair_on(listener: TcpListener) -> (TcpStream, TcpStream) {
    let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    peer.set_read_timeout(Some(LIMIT)).unwrap();
    (accept(&listener), peer)
}

/// A fresh non-blocking, close-on-exec TCP socket, not connected.
pub(crate) fn tcp_socket() -> OwnedFd {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_nonblocking(true).unwrap();
    OwnedFd::from(socket)
}

/// `addr` as the kernel takes it.
pub(crate) fn sockaddr(addr: SocketAddr) -> Box<SockAddrBuf> {
    let addr = socket2::SockAddr::from(addr);
    let mut buf = SockAddrBuf::empty();
    // SAFETY: a `SockAddr` holds at most a `sockaddr_storage`, which `buf.storage` is.
    unsafe {
        std::ptr::copy_nonoverlapping(
            addr.as_ptr().cast::<u8>(),
            (&mut buf.storage as *mut libc::sockaddr_storage).cast::<u8>(),
            addr.len() as usize,
        )
    };
    buf.len = addr.len();
    buf
}

/// A number no other call in this process got (for unique temporary names).
pub(crate) fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Moves `fd` to a number of 2000 or more that no other call in this process got, away from
/// the numbers other tests get (fds are allocated lowest first), so that the test can watch
/// the number and reuse it on purpose while tests run in parallel.
pub(crate) fn high(fd: impl Into<OwnedFd>) -> OwnedFd {
    static NEXT: AtomicI32 = AtomicI32::new(2000);
    let (fd, floor) = (fd.into(), NEXT.fetch_add(1, Ordering::Relaxed));
    // SAFETY: F_DUPFD_CLOEXEC takes no pointers; the new fd is fresh and ours alone.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, floor) };
    assert!(new >= floor, "F_DUPFD_CLOEXEC: {}", std::io::Error::last_os_error());
    NEXT.fetch_max(new + 1, Ordering::Relaxed);
    // SAFETY: `new` was just created and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(new) }
}

/// Whether the number `fd` is allocated.
pub(crate) fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Reads what the non-blocking `stream` holds now; the count.
pub(crate) fn drain(mut stream: &TcpStream) -> usize {
    let mut buf = vec![0; 1 << 16];
    let mut total = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return total,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// A TCP pair (ours, the peer; both non-blocking) whose sending side is full: an 8 MiB `Send`
/// through `d` (the peer not reading) was short, and writes fill what is left.
pub(crate) fn backed_up_pair(d: &mut Driver<u32>) -> (TcpStream, TcpStream) {
    // A small receive buffer from the start, so the window the peer advertises stays small.
    let (listener, _) = listener();
    shrink(&listener, libc::SO_RCVBUF);
    let (ours, peer) = tcp_pair_on(listener);
    peer.set_nonblocking(true).unwrap();
    shrink(&ours, libc::SO_SNDBUF);
    let big = Bytes::from(vec![7u8; 8 << 20]);
    let c = run(d, Op::Send { fd: ours.as_raw_fd(), buf: big.into(), offset: 0 });
    let sent = c.result.unwrap() as usize;
    assert!(0 < sent && sent < 8 << 20, "a partial send, not {sent}");
    assert!(matches!(c.op, Some(Op::Send { offset: 0, .. })));
    // Loopback moves some of it on to the peer meanwhile, delayed acks (up to 40 ms) free more,
    // and small writes fit in the tail of the last segment: fill until the socket stays full.
    for _ in 0..50 {
        while (&ours).write(&[7; 1 << 16]).is_ok() {}
        while (&ours).write(&[7]).is_ok() {}
        std::thread::sleep(Duration::from_millis(100));
        if (&ours).write(&[7]).is_err() {
            break;
        }
    }
    (ours, peer)
}

/// Shrinks a socket's kernel buffer (`SO_SNDBUF` or `SO_RCVBUF`) so that it fills quickly.
fn shrink(socket: &impl AsRawFd, option: i32) {
    let size: libc::c_int = 64 * 1024;
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel reads `len` bytes from the live c_int `size`.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&size as *const i32).cast(),
            len,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
}
