//! The `sock_*` coroutines: BEHAVIOURS items 49–58, plus cancellation that loses no data.
//!
//! Real sockets on loopback (TCP, UDP) and `AF_UNIX` pairs. A connect that stays pending is
//! made by filling a listener's backlog (`listen(0)`, never accepting): the kernel then drops
//! further SYNs until there is room, and the client retransmits its SYN after about a second.

use std::future::Future as StdFuture;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringloop::{Error, EventLoop, Task};
use socket2::{Domain, SockAddr, Socket, Type};
use uring_tests::{
    backend_tests, full_listener, in_child, open_fds, run_ready, run_within, settle, socketpair,
};

/// Runs `future` on `lp` with a 20 s watchdog.
fn run<T: 'static>(lp: &EventLoop, future: impl StdFuture<Output = T> + 'static) -> T {
    run_within(lp, 20.0, future)
}

/// Starts `future` as a task and lets it run until it waits.
fn start<T: 'static>(lp: &EventLoop, future: impl StdFuture<Output = T> + 'static) -> Task<T> {
    let task = lp.create_task(future).unwrap();
    run_ready(lp);
    run_ready(lp);
    task
}

/// Whether `fd` is in non-blocking mode.
fn is_nonblocking(fd: &impl AsFd) -> bool {
    // SAFETY: F_GETFL only reads the file's status flags.
    let flags = unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_GETFL) };
    assert!(flags >= 0);
    flags & libc::O_NONBLOCK != 0
}

/// A non-blocking IPv4 TCP socket.
fn tcp_socket() -> Socket {
    Socket::new(Domain::IPV4, Type::STREAM.nonblocking(), None).unwrap()
}

/// A connected loopback TCP pair made with `sock_connect`: (client, server side).
fn tcp_pair(lp: &EventLoop) -> (Rc<Socket>, Rc<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = Rc::new(tcp_socket());
    let (lp2, c) = (lp.clone(), client.clone());
    run(lp, async move { lp2.sock_connect(&*c, addr).await }).unwrap();
    let (server, from) = listener.accept().unwrap();
    assert_eq!(Some(from), client.local_addr().unwrap().as_socket());
    server.set_nonblocking(true).unwrap();
    (client, Rc::new(server))
}

/// The expected error for a blocking socket.
fn assert_rejected<T: std::fmt::Debug>(result: ringloop::Result<T>, call: &str) {
    match result {
        Err(Error::InvalidArgument { message: msg, .. }) => {
            assert!(msg.contains(call) && msg.contains("must be non-blocking"), "{msg}")
        }
        other => panic!("{call} on a blocking socket: {other:?}"),
    }
}

/// Reads from `sock` until end of stream, on the loop.
async fn recv_to_end(lp: EventLoop, sock: Rc<TcpStream>) -> ringloop::Result<Vec<u8>> {
    let mut all = Vec::new();
    loop {
        let chunk = lp.sock_recv(&*sock, 65536).await?;
        if chunk.is_empty() {
            return Ok(all);
        }
        all.extend_from_slice(&chunk);
    }
}

backend_tests! {
    /// Item 49: each sock_* call on a blocking socket is rejected, without touching it.
    fn item49_blocking_sockets_are_rejected(lp) {
        let (stream, mut peer) = UnixStream::pair().unwrap();
        peer.write_all(b"kept").unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let lp2 = lp.clone();
        let (stream, udp, listener) = run(lp, async move {
            let mut buf = [0u8; 8];
            let to: SockAddr = target.into();
            assert_rejected(lp2.sock_recv(&stream, 8).await, "sock_recv");
            assert_rejected(lp2.sock_recv_into(&stream, &mut buf).await, "sock_recv_into");
            assert_rejected(lp2.sock_sendall(&stream, b"x").await, "sock_sendall");
            assert_rejected(lp2.sock_recvfrom(&udp, 8).await, "sock_recvfrom");
            assert_rejected(lp2.sock_recvfrom_into(&udp, &mut buf, 0).await, "sock_recvfrom_into");
            assert_rejected(lp2.sock_sendto(&udp, b"x", &to).await, "sock_sendto");
            assert_rejected(lp2.sock_accept(&listener).await, "sock_accept");
            let blocking = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            assert_rejected(lp2.sock_connect(&blocking, target).await, "sock_connect");
            (stream, udp, listener)
        });
        assert_eq!(lp.ops_in_flight(), 0, "nothing was submitted");
        // Nothing was read, sent or accepted.
        stream.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!((&stream).read(&mut buf).unwrap(), 4);
        peer.set_nonblocking(true).unwrap();
        assert_eq!(peer.read(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
        drop((udp, listener));
    }

    /// Item 50: `sock_recv_into` fills the slice given; calls into the rest accumulate.
    fn item50_recv_into_sub_slices_accumulate(lp) {
        let (mine, mut theirs) = socketpair();
        let lp2 = lp.clone();
        let writer = std::thread::spawn(move || {
            for part in [&b"hello "[..], b"sub-", b"slices"] {
                theirs.write_all(part).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let buf = run(lp, async move {
            let mut buf = vec![b'.'; 24];
            let mut filled = 2;
            while filled < 18 {
                let n = lp2.sock_recv_into(&mine, &mut buf[filled..20]).await.unwrap();
                assert!(n > 0, "no early end of stream");
                filled += n;
            }
            buf
        });
        writer.join().unwrap();
        assert_eq!(&buf, b"..hello sub-slices......");
    }

    /// `sock_recv` dropped while it waits loses nothing: the data written afterwards is all
    /// returned by the next call. The same for `sock_recv_into`, whose buffer is untouched.
    fn cancelled_recv_loses_no_data(lp) {
        let (mine, mut theirs) = socketpair();
        let mine = Rc::new(mine);
        let (lp2, m) = (lp.clone(), mine.clone());
        let task = start(lp, async move { lp2.sock_recv(&*m, 100).await });
        assert!(!task.done(), "waiting for data");
        task.cancel();
        run_ready(lp);
        assert!(task.cancelled());
        settle(lp);
        let (lp2, m) = (lp.clone(), mine.clone());
        let task = start(lp, async move {
            let mut buf = [0u8; 16];
            let n = lp2.sock_recv_into(&*m, &mut buf).await;
            (n, buf)
        });
        task.cancel();
        run_ready(lp);
        settle(lp);
        theirs.write_all(b"nothing lost").unwrap();
        let (lp2, m) = (lp.clone(), mine.clone());
        let got = run(lp, async move { lp2.sock_recv(&*m, 100).await }).unwrap();
        assert_eq!(got, b"nothing lost");
        // The race a completion-based recv loses: the data arrives while the call waits, and
        // the call is cancelled before it runs again.
        let (lp2, m) = (lp.clone(), mine.clone());
        let task = start(lp, async move { lp2.sock_recv(&*m, 100).await });
        theirs.write_all(b"raced").unwrap();
        task.cancel();
        run_ready(lp);
        assert!(task.cancelled());
        settle(lp);
        let (lp2, m) = (lp.clone(), mine.clone());
        assert_eq!(run(lp, async move { lp2.sock_recv(&*m, 100).await }).unwrap(), b"raced");
        drop(theirs);
        let (lp2, m) = (lp.clone(), mine.clone());
        assert_eq!(run(lp, async move { lp2.sock_recv(&*m, 100).await }).unwrap(), b"");
    }

    /// Item 52: a `sock_sendall` cancelled while blocked on a full send buffer, then another:
    /// the later payload arrives intact at the end of the stream, after at most a prefix of
    /// the cancelled one, with no byte duplicated.
    fn item52_cancelled_sendall_then_send_again(lp) {
        let (client, server) = tcp_pair(lp);
        client.set_send_buffer_size(4096).unwrap();
        let first: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let expected_first = first.clone();
        let (lp2, c) = (lp.clone(), client.clone());
        let task = start(lp, async move { lp2.sock_sendall(&*c, &first).await });
        spin_a_bit(lp);
        assert!(!task.done(), "blocked: the server does not read");
        task.cancel();
        run_ready(lp);
        assert!(task.cancelled());
        let reader = lp.create_task(recv_to_end(lp.clone(), server.clone())).unwrap();
        let (lp2, c) = (lp.clone(), client.clone());
        run(lp, async move {
            lp2.sock_sendall(&*c, b"WORLD").await.unwrap();
            c.shutdown(Shutdown::Write).unwrap();
        });
        let got = run(lp, reader).unwrap().unwrap();
        assert!(got.ends_with(b"WORLD"), "the later payload is last");
        let prefix = &got[..got.len() - 5];
        assert!(prefix.len() < expected_first.len(), "the cancelled send stopped");
        assert_eq!(prefix, &expected_first[..prefix.len()], "a clean prefix, no duplicate");
    }

    /// Item 53: cancel a `sock_connect` in progress, then retry: the retry connects.
    fn item53_cancelled_connect_then_retry(lp) {
        let Some((listener, filling)) = full_listener("127.0.0.1:0".parse().unwrap()) else {
            uring_tests::skipped(format_args!("item53: the kernel accepted every connect"));
            return;
        };
        let addr = listener.local_addr().unwrap();
        let sock = Rc::new(tcp_socket());
        let (lp2, s) = (lp.clone(), sock.clone());
        let task = start(lp, async move { lp2.sock_connect(&*s, addr).await });
        spin_a_bit(lp);
        assert!(!task.done(), "the connect is pending (backlog full)");
        task.cancel();
        run_ready(lp);
        assert!(task.cancelled());
        settle(lp);
        // Make room: accept what filled the backlog.
        listener.set_nonblocking(true).unwrap();
        while listener.accept().is_ok() {}
        drop(filling);
        let (lp2, s) = (lp.clone(), sock.clone());
        run(lp, async move { lp2.sock_connect(&*s, addr).await }).expect("the retry connects");
        assert_eq!(sock.peer_addr().unwrap().as_socket(), Some(addr));
        let deadline = Instant::now() + Duration::from_secs(5);
        let accepted = loop {
            match listener.accept() {
                Ok((_, from)) => break from,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Err(err) => panic!("the connection never reached the listener: {err}"),
            }
        };
        assert_eq!(Some(accepted), sock.local_addr().unwrap().as_socket());
        // Connecting a connected socket to the same address again is success.
        let (lp2, s) = (lp.clone(), sock.clone());
        run(lp, async move { lp2.sock_connect(&*s, addr).await }).unwrap();
    }

    /// Item 54: a 1,000,000-byte `sock_sendall` alongside `sock_recv` on the same socket
    /// (an echo peer): every byte comes back in order and the send completes.
    fn item54_huge_sendall_alongside_recv(lp) {
        const SIZE: usize = 1_000_000;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 65536];
            loop {
                match stream.read(&mut buf).unwrap() {
                    0 => break,
                    n => stream.write_all(&buf[..n]).unwrap(),
                }
            }
        });
        let sock = Rc::new(tcp_socket());
        let data: Vec<u8> = b"0123456789".iter().copied().cycle().take(SIZE).collect();
        let lp2 = lp.clone();
        let got = run(lp, async move {
            lp2.sock_connect(&*sock, addr).await.unwrap();
            let (lp3, s) = (lp2.clone(), sock.clone());
            let sender = lp2
                .create_task(async move {
                    lp3.sock_sendall(&*s, &data).await?;
                    s.shutdown(Shutdown::Write).map_err(|e| Error::io("shutdown", e))
                })
                .unwrap();
            let mut got = Vec::with_capacity(SIZE);
            loop {
                let chunk = lp2.sock_recv(&*sock, SIZE).await.unwrap();
                if chunk.is_empty() {
                    break;
                }
                got.extend_from_slice(&chunk);
            }
            sender.await.unwrap().unwrap();
            got
        });
        echo.join().unwrap();
        assert_eq!(got.len(), SIZE);
        let expected: Vec<u8> = b"0123456789".iter().copied().cycle().take(SIZE).collect();
        assert!(got == expected, "every byte in order");
    }

    /// Item 55: a refused connect carries `ConnectionRefused`; `sock_accept` gives a
    /// non-blocking socket and the client's address.
    fn item55_refused_connect_and_accept(lp) {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let closed: SocketAddr = ([127, 0, 0, 1], port).into();
        let lp2 = lp.clone();
        let err = run(lp, async move { lp2.sock_connect(&tcp_socket(), closed).await }).unwrap_err();
        assert_eq!(err.io_error().map(|e| e.kind()), Some(ErrorKind::ConnectionRefused), "{err}");
        assert!(err.to_string().contains(&format!("Connect call failed {closed}")), "{err}");

        let listener = tcp_socket();
        listener.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        listener.listen(8).unwrap();
        let at = listener.local_addr().unwrap().as_socket().unwrap();
        let lp2 = lp.clone();
        let ((conn, from), client) = run(lp, async move {
            let client = tcp_socket();
            let accepting = lp2.sock_accept(&listener);
            let connecting = lp2.sock_connect(&client, at);
            let (accepted, connected) = futures_util::future::join(accepting, connecting).await;
            connected.unwrap();
            (accepted.unwrap(), client)
        });
        assert!(is_nonblocking(&conn), "the accepted socket is non-blocking");
        assert_eq!(from.as_socket(), client.local_addr().unwrap().as_socket());
        assert_eq!(conn.peer_addr().unwrap().as_socket(), from.as_socket());
    }

    /// Item 56: a cancelled `sock_accept` leaves nothing registered and accepts nothing; the
    /// connection stays queued for the next accept; once closed, the listener refuses.
    fn item56_cancelled_accept(lp) {
        let listener = Rc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        listener.set_nonblocking(true).unwrap();
        let at = listener.local_addr().unwrap();
        let (lp2, l) = (lp.clone(), listener.clone());
        let task = start(lp, async move { lp2.sock_accept(&*l).await });
        assert!(!task.done());
        assert_eq!(lp.ops_in_flight(), 1, "one poll while waiting");
        task.cancel();
        run_ready(lp);
        assert!(task.cancelled());
        settle(lp);
        // The race a completion-based accept loses: a client connects while the call waits,
        // and the call is cancelled before it runs again; the connection stays queued.
        let (lp2, l) = (lp.clone(), listener.clone());
        let task = start(lp, async move { lp2.sock_accept(&*l).await });
        let client = TcpStream::connect(at).unwrap();
        task.cancel();
        run_ready(lp);
        assert!(task.cancelled());
        settle(lp);
        let (lp2, l) = (lp.clone(), listener.clone());
        let (_conn, from) = run(lp, async move { lp2.sock_accept(&*l).await }).unwrap();
        assert_eq!(from.as_socket(), Some(client.local_addr().unwrap()));
        drop(listener);
        settle(lp);
        let err = TcpStream::connect(at).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    }

    /// Item 57: UDP `sock_sendto` / `sock_recvfrom` give the data and the sender;
    /// `sock_recvfrom_into` honours `nbytes`; a too-large `nbytes` is refused.
    fn item57_udp_sendto_recvfrom(lp) {
        let server = Rc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let client = Rc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        server.set_nonblocking(true).unwrap();
        client.set_nonblocking(true).unwrap();
        let (server_at, client_at) = (server.local_addr().unwrap(), client.local_addr().unwrap());
        // A recvfrom waiting before the datagram is sent.
        let (lp2, s) = (lp.clone(), server.clone());
        let waiting = start(lp, async move { lp2.sock_recvfrom(&*s, 100).await });
        assert!(!waiting.done());
        let (lp2, c) = (lp.clone(), client.clone());
        let sent = run(lp, async move { lp2.sock_sendto(&*c, b"hello", &server_at.into()).await });
        assert_eq!(sent.unwrap(), 5);
        let (data, from) = run(lp, waiting).unwrap().unwrap();
        assert_eq!((data.as_slice(), from.as_socket()), (&b"hello"[..], Some(client_at)));

        let (lp2, s, c) = (lp.clone(), server.clone(), client.clone());
        let (n, from, buf) = run(lp, async move {
            lp2.sock_sendto(&*s, b"world!", &client_at.into()).await.unwrap();
            let mut buf = [b'.'; 10];
            let (n, from) = lp2.sock_recvfrom_into(&*c, &mut buf, 3).await.unwrap();
            (n, from, buf)
        });
        assert_eq!((n, from.as_socket(), &buf), (3, Some(server_at), b"wor......."));

        let (lp2, c) = (lp.clone(), client.clone());
        let err = run(lp, async move {
            let mut buf = [0u8; 4];
            lp2.sock_recvfrom_into(&*c, &mut buf, 5).await
        });
        assert!(matches!(err, Err(Error::InvalidArgument { message: ref m, .. }) if m.contains("nbytes")), "{err:?}");
    }

    /// An `nbytes` too large to allocate is an error, not an abort.
    fn huge_nbytes_is_an_error(lp) {
        let (mine, _theirs) = socketpair();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_nonblocking(true).unwrap();
        let lp2 = lp.clone();
        let (recv, recvfrom) = run(lp, async move {
            (lp2.sock_recv(&mine, usize::MAX).await, lp2.sock_recvfrom(&udp, usize::MAX).await)
        });
        assert!(matches!(recv, Err(Error::InvalidArgument { message: ref m, .. }) if m.contains("allocate")));
        assert!(matches!(recvfrom, Err(Error::InvalidArgument { message: ref m, .. }) if m.contains("allocate")));
    }

    /// Item 57: `sock_sendto` waits and retries while the peer's queue is full (an
    /// `AF_UNIX` datagram socket, where the kernel reports `EAGAIN` for that).
    fn item57_sendto_retries_after_eagain(lp) {
        let path = std::env::temp_dir()
            .join(format!("ringloop-sock-ops-{}-{:?}.sock", std::process::id(), lp.backend()));
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).unwrap();
        let sender = Rc::new(UnixDatagram::unbound().unwrap());
        sender.connect(&path).unwrap();
        sender.set_nonblocking(true).unwrap();
        let mut queued = 0;
        while sender.send(b"fill").is_ok() {
            queued += 1;
        }
        let to = SockAddr::unix(&path).unwrap();
        let (lp2, s) = (lp.clone(), sender.clone());
        let task = start(lp, async move { lp2.sock_sendto(&*s, b"last", &to).await });
        spin_a_bit(lp);
        assert!(!task.done(), "waiting for room");
        let mut buf = [0u8; 8];
        receiver.recv(&mut buf).unwrap();
        assert_eq!(run(lp, task).unwrap().unwrap(), 4);
        let mut seen = Vec::new();
        for _ in 0..queued {
            let n = receiver.recv(&mut buf).unwrap();
            seen.push(buf[..n].to_vec());
        }
        assert_eq!(seen.last().map(Vec::as_slice), Some(&b"last"[..]));
        std::fs::remove_file(&path).unwrap();
    }

    /// A failed connect to a `AF_UNIX` path names the path, as asyncio's message does.
    fn a_failed_unix_connect_names_the_path(lp) {
        let path = std::env::temp_dir()
            .join(format!("ringloop-nobody-{}-{:?}.sock", std::process::id(), lp.backend()));
        let _ = std::fs::remove_file(&path);
        let sock = Rc::new(Socket::new(Domain::UNIX, Type::STREAM.nonblocking(), None).unwrap());
        let (lp2, s, to) = (lp.clone(), sock.clone(), SockAddr::unix(&path).unwrap());
        let err = run(lp, async move { lp2.sock_connect(&*s, to).await }).unwrap_err();
        assert_eq!(err.io_error().map(|e| e.kind()), Some(ErrorKind::NotFound), "{err}");
        let expected = format!("Connect call failed {}", path.display());
        assert!(err.to_string().contains(&expected), "{err} lacks {expected}");
    }

    /// Item 58: a host name is resolved with the socket's own family, type and protocol: an
    /// IPv4 socket connects to `localhost` over IPv4 even where `localhost` is `::1` first.
    fn item58_connect_resolves_with_the_socket_params(lp) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sock = Rc::new(tcp_socket());
        let (lp2, s) = (lp.clone(), sock.clone());
        run(lp, async move { lp2.sock_connect(&*s, ("localhost", port)).await }).unwrap();
        let peer = sock.peer_addr().unwrap().as_socket().unwrap();
        assert_eq!(peer, listener.local_addr().unwrap());
        // A datagram socket resolves with SOCK_DGRAM (a stream-only answer would fail).
        let udp = Rc::new(Socket::new(Domain::IPV4, Type::DGRAM.nonblocking(), None).unwrap());
        let (lp2, u) = (lp.clone(), udp.clone());
        run(lp, async move { lp2.sock_connect(&*u, ("localhost", 9)).await }).unwrap();
        assert_eq!(udp.peer_addr().unwrap().as_socket(), Some(([127, 0, 0, 1], 9).into()));
        // A host and port for a unix socket is refused.
        let (unix, _peer) = socketpair();
        let lp2 = lp.clone();
        let err = run(lp, async move { lp2.sock_connect(&unix, ("localhost", 9)).await });
        assert!(matches!(err, Err(Error::InvalidArgument { .. })), "{err:?}");
        drop(listener);
    }

    /// No fd is left open: many rounds of connect, accept, echo and cancelled calls (run in a
    /// child process, alone, so other tests' fds do not count).
    fn no_fd_leaked(lp) {
        if !in_child(lp, "no_fd_leaked") {
            return;
        }
        let listener = Rc::new(tcp_socket());
        listener.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        listener.listen(8).unwrap();
        let at = listener.local_addr().unwrap().as_socket().unwrap();
        round(lp, &listener, at);
        settle(lp);
        let before = open_fds();
        for _ in 0..20 {
            round(lp, &listener, at);
        }
        settle(lp);
        assert_eq!(open_fds(), before, "no fd left open");
    }
}

/// One round for `no_fd_leaked`: a cancelled accept, an accept with a connect, data both ways,
/// a cancelled recv, a refused connect.
fn round(lp: &EventLoop, listener: &Rc<Socket>, at: SocketAddr) {
    let (lp2, l) = (lp.clone(), listener.clone());
    let cancelled = start(lp, async move { lp2.sock_accept(&*l).await.map(drop) });
    cancelled.cancel();
    run_ready(lp);
    let (lp2, l) = (lp.clone(), listener.clone());
    run(lp, async move {
        let client = Rc::new(tcp_socket());
        let (accepted, connected) =
            futures_util::future::join(lp2.sock_accept(&*l), lp2.sock_connect(&*client, at)).await;
        connected.unwrap();
        let (conn, _) = accepted.unwrap();
        lp2.sock_sendall(&conn, b"ping").await.unwrap();
        assert_eq!(lp2.sock_recv(&*client, 10).await.unwrap(), b"ping");
        let (lp3, c) = (lp2.clone(), client.clone());
        let pending = lp2.create_task(async move { lp3.sock_recv(&*c, 10).await }).unwrap();
        pending.cancel();
        let refused = tcp_socket();
        let closed: SocketAddr = ([127, 0, 0, 1], 1).into();
        assert!(lp2.sock_connect(&refused, closed).await.is_err());
    });
}

/// Runs the loop for a few tens of milliseconds.
fn spin_a_bit(lp: &EventLoop) {
    uring_tests::spin(lp, 0.05);
}
