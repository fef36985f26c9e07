//! Unit tests of the epoll driver: polls, and socket ops on real sockets over 127.0.0.1.

use super::*;
use crate::driver::{Interest, SockAddrBuf};
use crate::test_support::pipe;
use bytes::Bytes;
use std::io::{ErrorKind, Read, Write};
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::thread;
use std::time::Instant;

const IN: u32 = libc::POLLIN as u32;
const OUT: u32 = libc::POLLOUT as u32;
const HUP: u32 = libc::POLLHUP as u32;
const LONG: Option<Duration> = Some(Duration::from_secs(5));

type Driver = EpollDriver<u32>;

fn driver() -> Driver {
    EpollDriver::new().expect("epoll driver")
}

/// A connected, non-blocking Unix stream socket pair.
fn socketpair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    let kind = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socketpair writes two descriptors into the live 2-element array.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) };
    assert_eq!(rc, 0, "socketpair: {}", io::Error::last_os_error());
    // SAFETY: both descriptors are fresh and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn send(fd: &OwnedFd, data: &[u8]) {
    // SAFETY: writes `data.len()` bytes from a live slice to an open descriptor.
    let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    assert_eq!(n, data.len() as isize);
}

fn recv(fd: &OwnedFd) -> usize {
    let mut buf = [0u8; 64];
    // SAFETY: reads at most 64 bytes into a live local buffer from an open descriptor.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    n.max(0) as usize
}

fn poll(driver: &mut Driver, fd: &OwnedFd, interest: u32, owner: u32) -> OpId {
    let op = Op::Poll { fd: fd.as_raw_fd(), interest: Interest(interest) };
    driver.submit(op, owner)
}

/// One turn; the completions as (id, owner, result).
fn turn(driver: &mut Driver, timeout: Option<Duration>) -> Vec<(OpId, u32, io::Result<u32>)> {
    completions(driver, timeout).into_iter().map(|c| (c.id, c.owner, c.result)).collect()
}

/// One turn; the completions, each final and with its op handed back.
fn completions(driver: &mut Driver, timeout: Option<Duration>) -> Vec<Completion<u32>> {
    let mut out = Vec::new();
    driver.turn(timeout, &mut out).unwrap();
    assert!(out.iter().all(|c| !c.more && c.op.is_some()), "{out:?}");
    out
}

/// One turn with `timeout` that must return within a second, with no help from the waker.
fn turn_promptly(driver: &mut Driver, timeout: Option<Duration>) -> Vec<(OpId, u32, u32)> {
    let start = Instant::now();
    let out = turn(driver, timeout);
    assert!(start.elapsed() < Duration::from_secs(1), "turn blocked");
    out.into_iter().map(|(id, owner, result)| (id, owner, result.unwrap())).collect()
}

fn errno(result: &io::Result<u32>) -> Option<i32> {
    result.as_ref().err().and_then(io::Error::raw_os_error)
}

#[test]
fn poll_completes_pollin_after_a_write() {
    let mut d = driver();
    let (a, b) = socketpair();
    let id = poll(&mut d, &a, IN, 7);
    assert_eq!(d.in_flight(), 1);
    assert!(turn(&mut d, Some(Duration::ZERO)).is_empty());
    send(&b, b"ping");
    assert_eq!(turn_promptly(&mut d, LONG), [(id, 7, IN)]);
    assert_eq!(d.in_flight(), 0);
    assert_eq!(d.cancel(id), None, "a completed op is gone");
}

#[test]
fn poll_on_a_ready_fd_completes_on_the_next_turn() {
    let mut d = driver();
    let (a, b) = socketpair();
    send(&b, b"ping");
    let id = poll(&mut d, &a, IN, 1);
    assert_eq!(turn_promptly(&mut d, None), [(id, 1, IN)]);
}

#[test]
fn reader_and_writer_share_one_registration() {
    let mut d = driver();
    let (a, b) = socketpair();
    let reader = poll(&mut d, &a, IN, 1);
    let writer = poll(&mut d, &a, OUT, 2);
    assert_eq!(turn_promptly(&mut d, LONG), [(writer, 2, OUT)]);
    assert_eq!(d.table.fds[&a.as_raw_fd()].registration, Registration::Epoll(IN | OUT));
    // The reader still waits; the mask shrinks to it at the next turn.
    assert!(turn(&mut d, Some(Duration::ZERO)).is_empty());
    assert_eq!(d.table.fds[&a.as_raw_fd()].registration, Registration::Epoll(IN));
    send(&b, b"x");
    assert_eq!(turn_promptly(&mut d, LONG), [(reader, 1, IN)]);
}

#[test]
fn cancelling_one_of_two_ops_on_an_fd_keeps_the_other() {
    let mut d = driver();
    let (a, b) = socketpair();
    let reader = poll(&mut d, &a, IN, 1);
    let writer = poll(&mut d, &a, OUT, 2);
    assert_eq!(d.cancel(writer), Some(2));
    assert_eq!(d.cancel(writer), None);
    assert_eq!(d.in_flight(), 1);
    assert!(turn(&mut d, Some(Duration::ZERO)).is_empty(), "no completion for a cancelled op");
    assert_eq!(d.table.fds[&a.as_raw_fd()].registration, Registration::Epoll(IN));
    send(&b, b"x");
    assert_eq!(turn_promptly(&mut d, LONG), [(reader, 1, IN)]);

    let reader = poll(&mut d, &a, IN, 3);
    let writer = poll(&mut d, &a, OUT, 4);
    assert_eq!(d.cancel(reader), Some(3));
    assert_eq!(turn_promptly(&mut d, LONG), [(writer, 4, OUT)]);
    assert_eq!(d.in_flight(), 0);
}

#[test]
fn resubmitting_while_data_is_unread_completes_again() {
    let mut d = driver();
    let (a, b) = socketpair();
    send(&b, b"x");
    for owner in 0..3 {
        let id = poll(&mut d, &a, IN, owner);
        assert_eq!(turn_promptly(&mut d, LONG), [(id, owner, IN)]);
        // Re-armed before the next turn: the registration was kept, not deleted and re-added.
        assert_eq!(d.table.fds[&a.as_raw_fd()].registration, Registration::Epoll(IN));
    }
    assert_eq!(recv(&a), 1);
    let id = poll(&mut d, &a, IN, 9);
    assert!(turn(&mut d, Some(Duration::ZERO)).is_empty(), "drained: no longer ready");
    assert_eq!(d.cancel(id), Some(9));
    assert!(turn(&mut d, Some(Duration::ZERO)).is_empty());
    assert!(d.table.fds.is_empty(), "an idle fd is deleted at the next turn");
}

#[test]
fn ops_waiting_for_the_same_readiness_complete_oldest_first() {
    let mut d = driver();
    let (a, b) = socketpair();
    let ids: Vec<_> = (0..4).map(|owner| poll(&mut d, &a, IN, owner)).collect();
    d.cancel(ids[1]);
    send(&b, b"x");
    let expected: Vec<_> = [0, 2, 3].iter().map(|&i| (ids[i], i as u32, IN)).collect();
    assert_eq!(turn_promptly(&mut d, LONG), expected);
}

#[test]
fn hangup_completes_ops_of_both_directions() {
    let mut d = driver();
    let (rx, tx) = pipe();
    let reader = poll(&mut d, &rx, IN, 1);
    let writer = poll(&mut d, &rx, OUT, 2); // a read end never becomes writable
    assert!(turn(&mut d, Some(Duration::ZERO)).is_empty());
    drop(tx);
    assert_eq!(turn_promptly(&mut d, LONG), [(reader, 1, HUP), (writer, 2, HUP)]);
}

#[test]
fn a_turn_with_nothing_to_do_waits_out_its_timeout() {
    let mut d = driver();
    let (a, _b) = socketpair();
    poll(&mut d, &a, IN, 1);
    for timeout in [Duration::from_millis(10), Duration::from_micros(500)] {
        let start = Instant::now();
        assert!(turn(&mut d, Some(timeout)).is_empty());
        assert!(start.elapsed() >= timeout, "{:?} < {timeout:?}", start.elapsed());
    }
}

#[test]
fn the_waker_interrupts_an_infinite_turn_from_another_thread() {
    let mut d = driver();
    let (a, _b) = socketpair();
    poll(&mut d, &a, IN, 1);
    let waker = d.waker();
    let start = Instant::now();
    let thread = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        waker.wake().unwrap();
    });
    assert!(turn(&mut d, None).is_empty(), "a wake-up is no completion");
    assert!(start.elapsed() >= Duration::from_millis(50));
    thread.join().unwrap();
    assert_eq!(d.waker().drain().unwrap(), 0, "the turn drained the waker");
    assert_eq!(d.in_flight(), 1);
}

#[test]
fn an_invalid_fd_completes_with_ebadf_without_blocking() {
    let mut d = driver();
    for fd in [-1, i32::MAX - 1] {
        let id = d.submit(Op::Poll { fd, interest: Interest::READ }, 5);
        let start = Instant::now();
        let out = turn(&mut d, None);
        assert!(start.elapsed() < Duration::from_secs(1), "turn blocked");
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].0, out[0].1, errno(&out[0].2)), (id, 5, Some(libc::EBADF)));
    }
    assert_eq!(d.in_flight(), 0);
    assert!(d.table.fds.is_empty());
}

#[test]
fn a_cancelled_ebadf_op_is_never_delivered() {
    let mut d = driver();
    let id = d.submit(Op::Poll { fd: -1, interest: Interest::READ }, 5);
    assert_eq!(d.cancel(id), Some(5));
    assert!(turn(&mut d, Some(Duration::ZERO)).is_empty());
    assert_eq!(d.in_flight(), 0);
}

#[test]
fn a_regular_file_is_always_ready() {
    let mut d = driver();
    let file: OwnedFd = std::fs::File::open(std::env::current_exe().unwrap()).unwrap().into();
    let reader = poll(&mut d, &file, IN, 1);
    let both = poll(&mut d, &file, IN | OUT, 2);
    assert_eq!(turn_promptly(&mut d, None), [(reader, 1, IN), (both, 2, IN | OUT)]);
    assert!(d.table.fds.is_empty());
    let again = poll(&mut d, &file, IN, 3);
    assert_eq!(turn_promptly(&mut d, None), [(again, 3, IN)]);
}

#[test]
fn an_fd_number_reused_for_a_new_file_is_registered_again() {
    let mut d = driver();
    let (a, b) = socketpair();
    send(&b, b"x");
    let id = poll(&mut d, &a, IN, 1);
    assert_eq!(turn_promptly(&mut d, LONG), [(id, 1, IN)]);
    // Replace the file behind `a`'s number: the kernel drops the registration with it.
    let (c, _d) = socketpair();
    // SAFETY: both descriptors are open; `a` owns its number and will close the new file.
    assert!(unsafe { libc::dup2(c.as_raw_fd(), a.as_raw_fd()) } >= 0);
    drop(c);
    let id = poll(&mut d, &a, OUT, 2); // MOD → ENOENT → ADD
    assert_eq!(turn_promptly(&mut d, LONG), [(id, 2, OUT)]);
    assert_eq!(d.table.fds[&a.as_raw_fd()].registration, Registration::Epoll(OUT));
}

#[test]
fn ten_thousand_submits_and_cancels_leave_nothing_behind() {
    let mut d = driver();
    let (a, _b) = socketpair();
    let (c, _e) = socketpair();
    let ids: Vec<_> = (0..10_000u32)
        .map(|i| {
            poll(&mut d, if i % 2 == 0 { &a } else { &c }, if i % 3 == 0 { OUT } else { IN }, i)
        })
        .collect();
    assert_eq!(d.in_flight(), 10_000);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(d.cancel(*id), Some(i as u32));
    }
    assert_eq!(d.in_flight(), 0);
    assert!(turn(&mut d, Some(Duration::ZERO)).is_empty());
    assert!(d.table.fds.is_empty() && d.table.dirty.is_empty() && d.table.ready.is_empty());

    // Registered first, then cancelled: deleted at the next turn.
    let ids: Vec<_> = (0..10_000).map(|i| poll(&mut d, &a, IN, i)).collect();
    assert!(turn(&mut d, Some(Duration::ZERO)).is_empty());
    assert_eq!(d.table.fds[&a.as_raw_fd()].registration, Registration::Epoll(IN));
    for id in ids.into_iter().rev() {
        assert!(d.cancel(id).is_some());
    }
    assert!(turn(&mut d, Some(Duration::ZERO)).is_empty());
    assert_eq!(d.in_flight(), 0);
    assert!(d.table.fds.is_empty());
}

#[test]
fn features_name_epoll_pwait2_when_in_use() {
    let d = driver();
    assert_eq!(d.features().contains(&"epoll_pwait2"), d.poller.uses_epoll_pwait2());
}

// Socket ops, on TCP over 127.0.0.1.

/// A non-blocking TCP socket, not yet connected.
fn tcp_socket() -> OwnedFd {
    let kind = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_INET, kind, 0) };
    assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
    // SAFETY: `fd` is fresh and owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A listener on an ephemeral port of 127.0.0.1.
fn listener() -> TcpListener {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap()
}

/// A connected pair of non-blocking TCP streams: (client, server).
fn tcp_pair() -> (TcpStream, TcpStream) {
    tcp_pair_from(listener())
}

/// A connected pair of non-blocking TCP streams accepted by `listener`: (client, server).
fn tcp_pair_from(listener: TcpListener) -> (TcpStream, TcpStream) {
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    client.set_nonblocking(true).unwrap();
    server.set_nonblocking(true).unwrap();
    (client, server)
}

/// `addr` (IPv4) as the kernel takes it.
fn sockaddr(addr: SocketAddr) -> Box<SockAddrBuf> {
    let SocketAddr::V4(v4) = addr else { panic!("IPv4 only: {addr}") };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
        sin_zero: [0; 8],
    };
    let mut buf = SockAddrBuf::empty();
    // SAFETY: sockaddr_storage is larger than a sockaddr_in and aligned for it.
    unsafe {
        (&mut buf.storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>().write(sin)
    };
    buf.len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    buf
}

/// Turns until a completion arrives (5 s at most) and returns the only one.
fn one_completion(d: &mut Driver) -> Completion<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut out = completions(d, LONG);
        if let Some(c) = out.pop() {
            assert!(out.is_empty(), "more than one completion: {out:?}");
            return c;
        }
        assert!(Instant::now() < deadline, "no completion");
    }
}

fn fd_flags(fd: RawFd, cmd: i32) -> io::Result<i32> {
    // SAFETY: F_GETFL/F_GETFD take no pointers.
    crate::sys::syscall!(unsafe { libc::fcntl(fd, cmd) })
}

/// Shrinks a socket's kernel buffer (`SO_SNDBUF` or `SO_RCVBUF`) so that it fills quickly.
fn shrink(socket: &impl AsRawFd, option: i32) {
    let size: libc::c_int = 64 * 1024;
    let len = mem::size_of::<libc::c_int>() as libc::socklen_t;
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
    assert_eq!(rc, 0, "setsockopt: {}", io::Error::last_os_error());
}

/// Reads what `stream` holds now; the count.
fn drain(mut stream: &TcpStream) -> usize {
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

/// A client whose sending side is full: an 8 MiB send (the peer not reading) was short.
fn backed_up_pair(d: &mut Driver) -> (TcpStream, TcpStream) {
    // A small receive buffer from the start, so the window the peer advertises stays small.
    let listener = listener();
    shrink(&listener, libc::SO_RCVBUF);
    let (client, server) = tcp_pair_from(listener);
    shrink(&client, libc::SO_SNDBUF);
    let big = Bytes::from(vec![7u8; 8 << 20]);
    d.submit(Op::Send { fd: client.as_raw_fd(), buf: big, offset: 0 }, 1);
    let c = one_completion(d);
    let sent = c.result.unwrap() as usize;
    assert!(0 < sent && sent < 8 << 20, "a partial send, not {sent}");
    assert!(matches!(c.op, Some(Op::Send { offset: 0, .. })));
    // Loopback moves some of it on to the peer meanwhile, delayed acks (up to 40 ms) free more,
    // and small writes fit in the tail of the last segment: fill until the socket stays full.
    for _ in 0..50 {
        while (&client).write(&[7; 1 << 16]).is_ok() {}
        while (&client).write(&[7]).is_ok() {}
        thread::sleep(Duration::from_millis(100));
        if (&client).write(&[7]).is_err() {
            break;
        }
    }
    (client, server)
}

#[test]
fn connect_completes_with_0_or_the_refusal() {
    let mut d = driver();
    let listener = listener();
    let socket = tcp_socket();
    d.submit(
        Op::Connect { fd: socket.as_raw_fd(), addr: sockaddr(listener.local_addr().unwrap()) },
        1,
    );
    let c = one_completion(&mut d);
    assert_eq!(c.result.unwrap(), 0);
    assert!(listener.accept().is_ok(), "the listener has the connection");

    let closed = listener.local_addr().unwrap();
    drop(listener);
    let socket = tcp_socket();
    d.submit(Op::Connect { fd: socket.as_raw_fd(), addr: sockaddr(closed) }, 2);
    let c = one_completion(&mut d);
    assert_eq!((c.owner, errno(&c.result)), (2, Some(libc::ECONNREFUSED)));
    assert_eq!(d.in_flight(), 0);
}

#[test]
fn send_from_an_offset_reaches_the_peer() {
    let mut d = driver();
    let (client, server) = tcp_pair();
    let buf = Bytes::from_static(b"--hello");
    d.submit(Op::Send { fd: client.as_raw_fd(), buf, offset: 2 }, 1);
    let c = one_completion(&mut d);
    assert_eq!(c.result.unwrap(), 5);
    let mut got = [0; 5];
    server.set_nonblocking(false).unwrap();
    (&server).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");
}

#[test]
fn a_send_that_would_block_waits_until_the_peer_reads() {
    let mut d = driver();
    let (client, server) = backed_up_pair(&mut d);
    let id = d.submit(
        Op::Send { fd: client.as_raw_fd(), buf: Bytes::from_static(b"more"), offset: 0 },
        2,
    );
    for i in 0..3 {
        let out = turn(&mut d, Some(Duration::from_millis(10)));
        assert!(out.is_empty(), "the send waits: {i} {out:?}");
    }
    assert_eq!(d.table.fds[&client.as_raw_fd()].registration, Registration::Epoll(OUT));
    let deadline = Instant::now() + Duration::from_secs(5);
    let c = loop {
        drain(&server);
        if let Some(c) = completions(&mut d, Some(Duration::from_millis(10))).pop() {
            break c;
        }
        assert!(Instant::now() < deadline, "the send never completed");
    };
    assert_eq!((c.id, c.owner, c.result.unwrap()), (id, 2, 4));
}

#[test]
fn a_cancelled_pending_send_delivers_nothing() {
    let mut d = driver();
    let (client, server) = backed_up_pair(&mut d);
    let id =
        d.submit(Op::Send { fd: client.as_raw_fd(), buf: Bytes::from_static(b"x"), offset: 0 }, 2);
    assert!(turn(&mut d, Some(Duration::ZERO)).is_empty());
    assert_eq!(d.cancel(id), Some(2));
    assert_eq!(d.in_flight(), 0);
    drain(&server);
    assert!(turn(&mut d, Some(Duration::from_millis(20))).is_empty());
    assert!(d.table.fds.is_empty(), "the registration went with the op");
}

#[test]
fn close_fd_forgets_and_closes_the_fd() {
    let mut d = driver();
    let (client, server) = tcp_pair();
    (&client).write_all(b"x").unwrap();
    // A number far above the others, so a test running in parallel does not reuse it the
    // moment it is closed (the EBADF check below would then see that test's fd).
    // SAFETY: F_DUPFD_CLOEXEC takes no pointers; the new fd is ours, closed by the op below.
    let fd = unsafe { libc::fcntl(server.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 1000) };
    assert!(fd >= 1000, "F_DUPFD_CLOEXEC: {}", io::Error::last_os_error());
    drop(server);
    d.submit(Op::Poll { fd, interest: Interest::READ }, 1);
    assert_eq!(one_completion(&mut d).result.unwrap(), IN);
    assert!(d.table.fds.contains_key(&fd), "registered");
    // SAFETY: `fd` was made above and nothing else owns it; the driver closes it.
    d.close_fd(unsafe { OwnedFd::from_raw_fd(fd) });
    assert!(!d.table.fds.contains_key(&fd));
    assert_eq!(fd_flags(fd, libc::F_GETFD).unwrap_err().raw_os_error(), Some(libc::EBADF));
    // The socket itself is gone: closed with "x" unread, it resets the connection.
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    match (&client).read(&mut [0; 8]) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("the peer still sees a live socket: {other:?}"),
    }
}

#[test]
fn read_and_send_waiting_on_one_fd_both_complete() {
    let mut d = driver();
    let (client, server) = backed_up_pair(&mut d);
    let fd = client.as_raw_fd();
    let read = d.submit(Op::Read { fd, buf: Vec::with_capacity(16) }, 2);
    let send = d.submit(Op::Send { fd, buf: Bytes::from_static(b"tail"), offset: 0 }, 3);
    assert!(turn(&mut d, Some(Duration::ZERO)).is_empty());
    assert_eq!(d.table.fds[&fd].registration, Registration::Epoll(IN | OUT));
    (&server).write_all(b"hi").unwrap();
    let mut done = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while done.len() < 2 {
        drain(&server);
        let out = completions(&mut d, Some(Duration::from_millis(10)));
        done.extend(out.into_iter().map(|c| (c.id, c.result.unwrap())));
        assert!(Instant::now() < deadline, "only {done:?}");
    }
    done.sort_by_key(|&(id, _)| id.0);
    let mut expected = [(read, 2), (send, 4)];
    expected.sort_by_key(|&(id, _)| id.0);
    assert_eq!(done, expected);
}
