//! fd-number integrity through the public API, on every backend: no operation of the loop ever
//! acts on an fd number that was closed and reused. Each test puts a new socket on the number
//! the loop freed, deliberately, and checks the loop never connects, writes to, reads from or
//! shuts down that socket. Also: one readiness event runs its callback once, and connections
//! accepted as the loop closes are closed, not leaked.
//!
//! Tests that predict fd numbers re-run themselves in a child process ([`in_child`]): there
//! fds are allocated lowest first by this test alone.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::Duration;

use ringloop::{
    BaseProtocol, ConnectOptions, EventLoop, Protocol, ReadTransport, Transport, UnixConnectOptions,
};
use uring_tests::{backend_tests, in_child, pattern, run_ready, run_until, spin};

/// Generous bound for "this must happen" waits (2 shared cores).
const WAIT: f64 = 10.0;

/// A protocol that does nothing.
struct Quiet;
impl BaseProtocol for Quiet {}
impl Protocol for Quiet {}

/// Where [`GrabsOnDrop`] leaves the socket pair it opened.
type Grabbed = Rc<RefCell<Option<(UnixStream, UnixStream)>>>;

/// A protocol that, when dropped (as the loop closes), opens a new socket pair: the first
/// number free then may be the one its transport's socket just gave up.
struct GrabsOnDrop {
    grabbed: Grabbed,
}
impl BaseProtocol for GrabsOnDrop {}
impl Protocol for GrabsOnDrop {}
impl Drop for GrabsOnDrop {
    fn drop(&mut self) {
        *self.grabbed.borrow_mut() = Some(UnixStream::pair().expect("socketpair"));
    }
}

/// Polls `future` once with a waker that does nothing.
fn poll_once<F: Future + ?Sized>(future: Pin<&mut F>) -> Poll<F::Output> {
    const VTABLE: RawWakerVTable =
        RawWakerVTable::new(|_| RawWaker::new(std::ptr::null(), &VTABLE), |_| {}, |_| {}, |_| {});
    // SAFETY: every function of the vtable ignores the (null) data pointer.
    let waker = unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) };
    future.poll(&mut Context::from_waker(&waker))
}

/// The number the next new fd of this (single-threaded, child) process will get.
fn next_fd() -> RawFd {
    let probe = std::fs::File::open("/dev/null").unwrap();
    probe.as_raw_fd()
}

/// Whether `accept` on a non-blocking listener finds a connection.
fn has_connection(accepted: std::io::Result<()>) -> bool {
    match accepted {
        Ok(()) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept: {e}"),
    }
}

/// Whether `socket` is connected to anything.
fn is_connected(socket: &impl AsRawFd) -> bool {
    // SAFETY: a sockaddr_storage is large enough for any address; getpeername writes at most
    // `len` bytes into it.
    unsafe {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of_val(&addr) as libc::socklen_t;
        libc::getpeername(
            socket.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        ) == 0
    }
}

/// What arrived on a non-blocking `socket` so far.
fn received(mut socket: &UnixStream) -> usize {
    let mut total = 0;
    let mut buf = [0; 65536];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return total,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// A peer that reads little, and our transport to it with 16 MiB written, stopped right after
/// the loop dispatched a send's completion: the next send is queued, not yet submitted. The
/// protocol grabs a socket pair when dropped.
fn transport_with_a_send_queued(lp: &EventLoop) -> ((TcpListener, TcpStream), Transport, Grabbed) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&listener).set_recv_buffer_size(4096).unwrap();
    let port = listener.local_addr().unwrap().port();
    let grabbed = Rc::new(RefCell::new(None));
    let (lp2, slot) = (lp.clone(), grabbed.clone());
    let connect = async move {
        let factory = move || GrabsOnDrop { grabbed: slot };
        lp2.create_connection(factory, ("127.0.0.1", port), ConnectOptions::new()).await
    };
    let (transport, _protocol) = lp.run_until_complete(connect).unwrap().expect("connect");
    let (peer, _) = listener.accept().unwrap();
    peer.set_nonblocking(true).unwrap();
    transport.write(&pattern(16 << 20)).unwrap();
    assert!(run_until(lp, WAIT, || transport.get_write_buffer_size() > 0), "buffered");
    spin(lp, 0.05); // the send waits in the kernel (io_uring) or for POLLOUT (epoll)
    let stalled = transport.get_write_buffer_size();
    let mut sink = vec![0; 1 << 16];
    for _ in 0..1000 {
        let _ = (&peer).read(&mut sink); // room for the waiting send
        run_ready(lp);
        if transport.get_write_buffer_size() < stalled {
            return ((listener, peer), transport, grabbed);
        }
    }
    panic!("no send completed");
}

/// The socket pair the protocol opened as it was dropped (on the transport's number `number`
/// if that was free then: the loop may also keep it allocated until a cancelled op ended)
/// received nothing, and `number` is closed unless that pair holds it.
fn check_grabbed(grabbed: &RefCell<Option<(UnixStream, UnixStream)>>, number: RawFd) {
    let (mine, theirs) = grabbed.borrow_mut().take().expect("the protocol was dropped");
    theirs.set_nonblocking(true).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(received(&theirs), 0, "the transport's bytes reached an unrelated socket");
    if mine.as_raw_fd() != number {
        // SAFETY: F_GETFD only reads the flags of a number.
        assert_eq!(unsafe { libc::fcntl(number, libc::F_GETFD) }, -1, "fd {number} leaked");
    }
}

backend_tests! {
    fn a_unix_connect_dropped_before_the_turn_never_connects_the_socket_that_reuses_its_number(lp) {
        if !in_child(lp, "a_unix_connect_dropped_before_the_turn_never_connects_the_socket_that_reuses_its_number") {
            return;
        }
        let dir = std::env::temp_dir().join(format!("ringloop-fd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (path_a, path_b) = (dir.join("a.sock"), dir.join("b.sock"));
        let (a, b) = (UnixListener::bind(&path_a).unwrap(), UnixListener::bind(&path_b).unwrap());
        a.set_nonblocking(true).unwrap();
        let number = next_fd();
        let (lp2, path) = (lp.clone(), path_a.clone());
        let mut first = Box::pin(async move {
            lp2.create_unix_connection(|| Quiet, path, UnixConnectOptions::new()).await
        });
        assert!(poll_once(first.as_mut()).is_pending(), "the connect is under way");
        drop(first); // as a `select` whose other branch was ready, or a timeout, would
        // The next connect starts in the same step, before the loop turns again.
        let (lp2, path) = (lp.clone(), path_b.clone());
        let mut second = Box::pin(async move {
            lp2.create_unix_connection(|| Quiet, path, UnixConnectOptions::new()).await
        });
        assert!(poll_once(second.as_mut()).is_pending(), "the second connect is under way");
        let (transport, _) = lp.run_until_complete(second).unwrap().expect("the second connect");
        assert_eq!(transport.socket_fd(), Some(number), "the second socket reuses the number");
        spin(lp, 0.05);
        assert!(has_connection(b.accept().map(drop)), "B got its connection");
        assert!(!has_connection(a.accept().map(drop)), "A got a connection nobody asked for");
        transport.close();
        spin(lp, 0.02);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn a_tcp_connect_dropped_never_connects_the_socket_that_reuses_its_number(lp) {
        if !in_child(lp, "a_tcp_connect_dropped_never_connects_the_socket_that_reuses_its_number") {
            return;
        }
        let target = TcpListener::bind("127.0.0.1:0").unwrap();
        target.set_nonblocking(true).unwrap();
        let port = target.local_addr().unwrap().port();
        // Dropped before the loop turned (a zero timeout), then after its connect reached the
        // kernel; in both cases a new socket is opened at once, before the loop turns again.
        for turns_before_drop in [0, 1] {
            let number = next_fd();
            let lp2 = lp.clone();
            let mut attempt = Box::pin(async move {
                let options = ConnectOptions::new();
                lp2.create_connection(|| Quiet, ("127.0.0.1", port), options).await
            });
            assert!(poll_once(attempt.as_mut()).is_pending(), "the connect is under way");
            for _ in 0..turns_before_drop {
                run_ready(lp);
            }
            drop(attempt);
            let someone_elses =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            if turns_before_drop == 0 {
                // Withdrawn before the kernel saw it: its socket closed at once.
                assert_eq!(someone_elses.as_raw_fd(), number, "the new socket reuses the number");
            }
            assert!(run_until(lp, WAIT, || lp.ops_in_flight() == 0), "the connect ended");
            // Accepted while it was in the kernel, the connection is closed: it reads EOF.
            if let Ok((mut conn, _)) = target.accept() {
                assert!(turns_before_drop > 0, "connected although withdrawn");
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                assert_eq!(conn.read(&mut [0; 8]).unwrap(), 0, "the abandoned socket closed");
            }
            spin(lp, 0.05);
            assert!(!is_connected(&someone_elses), "a stale connect connected the new socket");
            assert!(!has_connection(target.accept().map(drop)), "a stale connect reached it");
            // SAFETY: F_GETFD only reads the flags of a number.
            let open = unsafe { libc::fcntl(number, libc::F_GETFD) } >= 0;
            assert_eq!(open, someone_elses.as_raw_fd() == number, "fd {number} leaked");
        }
    }

    fn closing_the_loop_with_a_send_queued_writes_nothing_to_the_socket_that_reuses_the_number(lp) {
        if !in_child(lp, "closing_the_loop_with_a_send_queued_writes_nothing_to_the_socket_that_reuses_the_number") {
            return;
        }
        let (_peer, transport, grabbed) = transport_with_a_send_queued(lp);
        let number = transport.socket_fd().unwrap();
        drop(transport);
        lp.close().unwrap();
        check_grabbed(&grabbed, number);
    }

    fn abort_then_close_with_no_turn_between_writes_nothing_to_the_socket_that_reuses_the_number(lp) {
        if !in_child(lp, "abort_then_close_with_no_turn_between_writes_nothing_to_the_socket_that_reuses_the_number") {
            return;
        }
        let (_peer, transport, grabbed) = transport_with_a_send_queued(lp);
        let number = transport.socket_fd().unwrap();
        transport.abort();
        drop(transport);
        lp.close().unwrap();
        check_grabbed(&grabbed, number);
    }

    fn one_readiness_event_runs_its_callback_once_when_another_fd_closes_in_the_batch(lp) {
        let (watched, feeder) = UnixStream::pair().unwrap();
        watched.set_nonblocking(true).unwrap();
        let (calls, empty_calls) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let (c, e, w) = (calls.clone(), empty_calls.clone(), watched.try_clone().unwrap());
        lp.add_reader(watched.as_raw_fd(), move || {
            c.set(c.get() + 1);
            if received(&w) == 0 {
                e.set(e.get() + 1);
            }
        })
        .unwrap();
        for round in 0..30 {
            // A pipe transport, closed in the same batch as the reader's callback.
            let (pipe_r, _pipe_w) = std::io::pipe().unwrap();
            let lp2 = lp.clone();
            let (pipe, _) = lp
                .run_until_complete(async move { lp2.connect_read_pipe(|| QuietPipe, OwnedFd::from(pipe_r)).await })
                .unwrap()
                .expect("connect_read_pipe");
            spin(lp, 0.002);
            let before = calls.get();
            // The pipe's `connection_lost`, and the close of its fd after it, run in the next
            // batch: the one that also runs the reader's callback for this byte, after them.
            let feeder = feeder.try_clone().unwrap();
            lp.call_soon(move || {
                (&feeder).write_all(b"x").unwrap();
                pipe.close();
            })
            .unwrap();
            for _ in 0..4 {
                run_ready(lp);
            }
            assert_eq!(calls.get(), before + 1, "round {round}: one event, one callback");
        }
        assert_eq!(empty_calls.get(), 0, "a callback ran again with nothing to read");
        lp.remove_reader(watched.as_raw_fd());
    }

    fn connections_accepted_as_the_loop_closes_are_closed_not_leaked(lp) {
        let lp2 = lp.clone();
        let server = lp
            .run_until_complete(async move {
                let options = ringloop::ServerOptions::default();
                lp2.create_server(|| Quiet, ("127.0.0.1", 0), options).await
            })
            .unwrap()
            .expect("create_server");
        let addr = server.sockets()[0].as_socket().unwrap();
        spin(lp, 0.02); // accepting
        let mut clients: Vec<TcpStream> =
            (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
        drop(server);
        lp.close().unwrap();
        for client in &mut clients {
            client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            match client.read(&mut [0; 8]) {
                Ok(0) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                other => panic!("a connection accepted at close was leaked: {other:?}"),
            }
        }
    }
}

/// A pipe protocol that does nothing.
struct QuietPipe;
impl BaseProtocol<ReadTransport> for QuietPipe {}
impl Protocol<ReadTransport> for QuietPipe {}
