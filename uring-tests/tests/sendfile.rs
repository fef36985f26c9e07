//! `EventLoop::sendfile` and `EventLoop::sock_sendfile` (asyncio's "Transferring files"):
//! ranges, sizes checked at a real peer, concurrency, the peer closing, cancellation, the
//! transport's rules during a transfer, the fallback and bad input; on both backends.

use std::cell::RefCell;
use std::fs::File;
use std::hash::Hasher;
use std::io::{Read, Seek, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::Duration;

use ringloop::{Backend, BaseProtocol, Error, EventLoop, Protocol, RuntimeKind, Transport};
use uring_tests::*;

/// A file in `dir` holding `data`, open for reading.
fn file_with(dir: &TempDir, name: &str, data: &[u8]) -> File {
    let path = dir.join(name);
    std::fs::write(&path, data).expect("write the file");
    File::open(&path).expect("open the file")
}

/// A file of `size` bytes of [`pattern`] in a fresh directory named for `test`: the directory
/// (removed when dropped), the bytes, and the file open for reading.
fn patterned_file(lp: &EventLoop, test: &str, size: usize) -> (TempDir, Vec<u8>, File) {
    let dir = TempDir::for_test(lp, test);
    let data = pattern(size);
    let file = file_with(&dir, "f", &data);
    (dir, data, file)
}

/// Open fds of this process that are not pipes, and those that are.
fn fds_and_pipes() -> (usize, usize) {
    let (mut others, mut pipes) = (0, 0);
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        match std::fs::read_link(entry.path()) {
            Ok(target) if target.to_string_lossy().starts_with("pipe:") => pipes += 1,
            _ => others += 1,
        }
    }
    (others, pipes)
}

/// The file's position.
fn position(file: &File) -> u64 {
    let mut file = file;
    file.stream_position().expect("stream_position")
}

/// A hash of `data` (SipHash; the peer and the test compare hashes of big files).
fn hash(data: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hasher.write(data);
    hasher.finish()
}

/// Reads `peer` until EOF on a thread, `pace` between 64 KiB reads; the bytes.
fn reader(mut peer: TcpStream, pace: Option<Duration>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        peer.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match peer.read(&mut buf) {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if let Some(pace) = pace {
                std::thread::sleep(pace);
            }
        }
    })
}

/// Reads `peer` until EOF on a thread once the returned sender says go (or is dropped).
fn gated_reader(peer: TcpStream) -> (std::sync::mpsc::Sender<()>, JoinHandle<Vec<u8>>) {
    let (go, gate) = std::sync::mpsc::channel::<()>();
    let handle = std::thread::spawn(move || {
        let _ = gate.recv();
        reader(peer, None).join().unwrap()
    });
    (go, handle)
}

/// A transport on our end of a TCP pair, and the peer's reader.
fn connection(
    lp: &EventLoop,
    pace: Option<Duration>,
) -> (Transport, Rc<RefCell<Received>>, JoinHandle<Vec<u8>>) {
    let (peer, ours) = tcp_pair();
    let (transport, protocol) = connect_accepted(lp, ours, Received::default());
    (transport, protocol, reader(peer, pace))
}

/// `lp.sendfile(...)` run to completion (a 60 s watchdog).
fn sendfile(
    lp: &EventLoop,
    transport: &Transport,
    file: &File,
    offset: u64,
    count: Option<u64>,
    fallback: bool,
) -> Result<u64, Error> {
    let (lp2, transport, file) = (lp.clone(), transport.clone(), file.try_clone().unwrap());
    run_within(
        lp,
        60.0,
        async move { lp2.sendfile(&transport, &file, offset, count, fallback).await },
    )
}

/// `lp.sock_sendfile(...)` run to completion (a 60 s watchdog).
fn sock_sendfile(
    lp: &EventLoop,
    sock: &impl AsFd,
    file: &File,
    offset: u64,
    count: Option<u64>,
    fallback: bool,
) -> Result<u64, Error> {
    let sock: OwnedFd = sock.as_fd().try_clone_to_owned().unwrap();
    let (lp2, file) = (lp.clone(), file.try_clone().unwrap());
    run_within(
        lp,
        60.0,
        async move { lp2.sock_sendfile(&sock, &file, offset, count, fallback).await },
    )
}

/// Closes `transport`, runs the loop until the connection is lost, and gives what the peer
/// read.
fn finish(
    lp: &EventLoop,
    transport: &Transport,
    protocol: &Rc<RefCell<Received>>,
    peer: JoinHandle<Vec<u8>>,
) -> Vec<u8> {
    transport.close();
    assert!(run_until(lp, 30.0, || protocol.borrow().lost), "connection_lost never came");
    peer.join().expect("reader thread")
}

/// A non-blocking socket from a TCP pair for `sock_sendfile`, and the peer's reader.
fn socket_pair(pace: Option<Duration>) -> (OwnedFd, JoinHandle<Vec<u8>>) {
    let (peer, ours) = tcp_pair();
    socket2::SockRef::from(&ours).set_nonblocking(true).unwrap();
    (ours, reader(peer, pace))
}

const SIZE: usize = 100_000;

backend_tests! {
    fn ranges_send_what_they_name_and_leave_the_position_after_it(lp) {
        let (_dir, data, file) = patterned_file(lp, "sendfile-ranges", SIZE);
        // (offset, count, what arrives)
        let cases: [(u64, Option<u64>, std::ops::Range<usize>); 5] = [
            (0, None, 0..SIZE),
            (1000, None, 1000..SIZE),
            (1000, Some(5000), 1000..6000),
            (90_000, Some(50_000), 90_000..SIZE),
            (SIZE as u64 - 1, None, SIZE - 1..SIZE),
        ];
        for (offset, count, want) in cases {
            let (transport, protocol, peer) = connection(lp, None);
            let sent = sendfile(lp, &transport, &file, offset, count, false).expect("sendfile");
            assert_eq!(sent, want.len() as u64, "offset {offset} count {count:?}");
            assert_eq!(position(&file), want.end as u64, "the position after offset {offset}");
            let got = finish(lp, &transport, &protocol, peer);
            assert!(got == data[want.clone()], "offset {offset} count {count:?}: wrong bytes");
        }
    }

    fn sock_sendfile_ranges_send_what_they_name(lp) {
        let (_dir, data, file) = patterned_file(lp, "sock-sendfile-ranges", SIZE);
        for (offset, count, want) in [(0, None, 0..SIZE), (7, Some(70_000), 7..70_007), (99_000, Some(5000), 99_000..SIZE)] {
            let (sock, peer) = socket_pair(None);
            let sent = sock_sendfile(lp, &sock, &file, offset, count, false).expect("sock_sendfile");
            assert_eq!(sent, want.len() as u64);
            assert_eq!(position(&file), want.end as u64);
            drop(sock);
            assert!(peer.join().unwrap() == data[want], "offset {offset}: wrong bytes");
        }
    }

    fn an_empty_range_sends_nothing_and_returns_zero(lp) {
        let dir = TempDir::for_test(lp, "sendfile-empty");
        let empty = file_with(&dir, "empty", b"");
        let file = file_with(&dir, "f", &pattern(1000));
        let (transport, protocol, peer) = connection(lp, None);
        assert_eq!(sendfile(lp, &transport, &empty, 0, None, false).unwrap(), 0);
        assert_eq!(sendfile(lp, &transport, &file, 10, Some(0), false).unwrap(), 0);
        assert_eq!(position(&file), 10, "count 0 still sets the position to the offset");
        assert_eq!(sendfile(lp, &transport, &file, 5000, None, false).unwrap(), 0, "offset past the end");
        let (sock, sock_peer) = socket_pair(None);
        assert_eq!(sock_sendfile(lp, &sock, &empty, 0, None, false).unwrap(), 0);
        assert_eq!(sock_sendfile(lp, &sock, &file, 0, Some(0), false).unwrap(), 0);
        drop(sock);
        assert!(sock_peer.join().unwrap().is_empty());
        transport.write(b"after").unwrap();
        assert_eq!(finish(lp, &transport, &protocol, peer), b"after");
    }

    fn files_of_every_size_arrive_whole(lp) {
        let dir = TempDir::for_test(lp, "sendfile-sizes");
        for size in [0usize, 1, 64 * 1024 + 1, 32 << 20] {
            let data = pattern(size);
            let file = file_with(&dir, &format!("f{size}"), &data);
            let (transport, protocol, peer) = connection(lp, None);
            assert_eq!(sendfile(lp, &transport, &file, 0, None, false).unwrap(), size as u64);
            let got = finish(lp, &transport, &protocol, peer);
            assert_eq!((got.len(), hash(&got)), (size, hash(&data)), "transport, {size} bytes");

            let (sock, peer) = socket_pair(None);
            assert_eq!(sock_sendfile(lp, &sock, &file, 0, None, false).unwrap(), size as u64);
            drop(sock);
            let got = peer.join().unwrap();
            assert_eq!((got.len(), hash(&got)), (size, hash(&data)), "socket, {size} bytes");
        }
    }

    fn eight_transfers_run_together_while_another_connection_echoes(lp) {
        let (_dir, data, file) = patterned_file(lp, "sendfile-eight", EIGHT_SIZE);
        // The echo: a loop-side protocol that writes back what it gets; a client thread
        // counts round trips until told to stop.
        let (echo_peer, echo_ours) = tcp_pair();
        let (_echo, _) = connect_accepted(lp, echo_ours, Echo::default());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let trips = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let echo_client = {
            let (stop, trips, mut peer) = (stop.clone(), trips.clone(), echo_peer);
            std::thread::spawn(move || {
                peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut byte = [0u8; 1];
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    peer.write_all(b"x").unwrap();
                    peer.read_exact(&mut byte).expect("the echo answers");
                    trips.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        };
        // Eight transfers to peers that do not read yet: each fills its socket and waits.
        let connections: Vec<_> = (0..8)
            .map(|_| {
                let (peer, ours) = tcp_pair();
                let (transport, protocol) = connect_accepted(lp, ours, Received::default());
                let (go, reader) = gated_reader(peer);
                (transport, protocol, go, reader)
            })
            .collect();
        let done = Rc::new(std::cell::Cell::new(0));
        for (transport, _, _, _) in &connections {
            let (lp2, transport, file) = (lp.clone(), transport.clone(), file.try_clone().unwrap());
            let done = done.clone();
            lp.create_task(async move {
                let sent = lp2.sendfile(&transport, &file, 0, None, false).await.expect("sendfile");
                assert_eq!(sent, EIGHT_SIZE as u64);
                done.set(done.get() + 1);
            })
            .unwrap();
        }
        let answered = run_until(lp, 30.0, || trips.load(std::sync::atomic::Ordering::SeqCst) >= 20);
        assert!(answered, "the echo answered {} times in 30 s", trips.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(done.get(), 0, "the transfers were still running while the echo answered");
        let mut readers = Vec::new();
        for (transport, protocol, go, reader) in connections {
            go.send(()).unwrap();
            readers.push((transport, protocol, reader));
        }
        assert!(run_until(lp, 60.0, || done.get() == 8), "transfers left: {}", 8 - done.get());
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(run_until(lp, 10.0, || echo_client.is_finished()));
        echo_client.join().unwrap();
        for (transport, protocol, reader) in readers {
            let got = finish(lp, &transport, &protocol, reader);
            assert_eq!((got.len(), hash(&got)), (data.len(), hash(&data)));
        }
    }

    fn the_peer_closing_mid_transfer_is_an_error_with_the_position_updated(lp) {
        let dir = TempDir::for_test(lp, "sendfile-peer-close");
        let file = file_with(&dir, "f", &pattern(32 << 20));
        let (peer, ours) = tcp_pair();
        let (transport, _protocol) = connect_accepted(lp, ours, Received::default());
        let closer = std::thread::spawn(move || {
            let mut peer = peer;
            let mut buf = vec![0u8; 100 * 1024];
            peer.read_exact(&mut buf).unwrap();
            // Reset rather than FIN: unread data makes the close an RST.
            drop(peer);
        });
        let err = sendfile(lp, &transport, &file, 1000, None, false).expect_err("the peer closed");
        closer.join().unwrap();
        // The OS's error, whichever side noticed first (the transfer, or the transport's read).
        let errno = err.raw_os_error();
        assert!(matches!(errno, Some(libc::EPIPE | libc::ECONNRESET)), "{err}");
        let at = position(&file);
        assert!(at > 1000 + 100 * 1024 - 1 && at < 1000 + (32 << 20), "position {at}");
        assert!(transport.is_closing(), "the reset closed the transport");

        let (peer, sock) = tcp_pair();
        socket2::SockRef::from(&sock).set_nonblocking(true).unwrap();
        let closer = std::thread::spawn(move || {
            let mut peer = peer;
            let mut buf = vec![0u8; 100 * 1024];
            peer.read_exact(&mut buf).unwrap();
        });
        let err = sock_sendfile(lp, &sock, &file, 0, None, false).expect_err("the peer closed");
        closer.join().unwrap();
        assert!(matches!(err.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)), "{err}");
        let at = position(&file);
        assert!((100 * 1024..32 << 20).contains(&at), "position {at}");
    }

    fn the_peer_closing_after_receiving_everything_leaves_the_full_count(lp) {
        let (_dir, data, file) = patterned_file(lp, "sendfile-peer-close-after", 3 << 20);
        let (peer, ours) = tcp_pair();
        let (transport, _protocol) = connect_accepted(lp, ours, Received::default());
        let len = data.len();
        let closer = std::thread::spawn(move || {
            let mut peer = peer;
            let mut got = vec![0u8; len];
            peer.read_exact(&mut got).unwrap();
            drop(peer);
            got
        });
        assert_eq!(sendfile(lp, &transport, &file, 0, None, false).expect("sent"), len as u64);
        let got = closer.join().unwrap();
        assert_eq!(hash(&got), hash(&data));
        assert_eq!(position(&file), len as u64);
    }

    fn a_dropped_transfer_leaves_the_stream_whole(lp) {
        let (_dir, data, file) = patterned_file(lp, "sendfile-drop", 8 << 20);
        let (peer, ours) = tcp_pair();
        let (transport, protocol) = connect_accepted(lp, ours, Received::default());
        let (go, peer) = gated_reader(peer);
        let (lp2, t2, f2) = (lp.clone(), transport.clone(), file.try_clone().unwrap());
        let outcome = run_within(lp, 30.0, async move {
            let transfer = lp2.sendfile(&t2, &f2, 100, None, false);
            ringloop::wait_for(transfer, 0.3).await
        });
        assert!(matches!(outcome, Err(Error::Timeout(_))), "{outcome:?}");
        // Each epoll chunk is one syscall inside a turn: the waiting one is withdrawn and the
        // transfer ends with the drop. On io_uring a chunk under way ends first.
        let taken_at_once = transport.write(b"TAIL").is_ok();
        assert!(taken_at_once || lp.backend() == Backend::Uring, "writes refused after the drop");
        go.send(()).unwrap();
        // Writes are taken once the chunk in flight ended; they follow it in the stream.
        assert!(
            taken_at_once || run_until(lp, 30.0, || transport.write(b"TAIL").is_ok()),
            "writes stay refused"
        );
        let sent = position(&file) - 100;
        assert!(sent > 0 && sent < data.len() as u64 - 100, "sent {sent}");
        let got = finish(lp, &transport, &protocol, peer);
        let mut want = data[100..100 + sent as usize].to_vec();
        want.extend_from_slice(b"TAIL");
        assert_eq!((got.len(), hash(&got)), (want.len(), hash(&want)), "a hole or a repeat in the stream");
    }

    fn a_dropped_sock_sendfile_leaves_no_hole(lp) {
        let (_dir, data, file) = patterned_file(lp, "sock-sendfile-drop", 8 << 20);
        let (peer, sock) = tcp_pair();
        socket2::SockRef::from(&sock).set_nonblocking(true).unwrap();
        let (go, peer) = gated_reader(peer);
        let sock = Rc::new(sock);
        let (lp2, s2, f2) = (lp.clone(), sock.clone(), file.try_clone().unwrap());
        let outcome = run_within(lp, 30.0, async move {
            ringloop::wait_for(lp2.sock_sendfile(&*s2, &f2, 0, None, false), 0.3).await
        });
        assert!(matches!(outcome, Err(Error::Timeout(_))), "{outcome:?}");
        go.send(()).unwrap();
        settle(lp);
        let sent = position(&file);
        let (lp2, s2) = (lp.clone(), sock.clone());
        let tail = run_within(lp, 30.0, async move { lp2.sock_sendall(&*s2, b"TAIL").await });
        drop(sock);
        let got = peer.join().unwrap();
        let mut want = data[..sent as usize].to_vec();
        match (lp.backend(), tail) {
            // A chunk not yet made was withdrawn (always, on epoll): the socket is intact.
            (_, Ok(())) => want.extend_from_slice(b"TAIL"),
            // A chunk was in the kernel: the socket was shut down rather than risk a hole.
            (Backend::Uring, Err(_)) => {}
            (_, Err(e)) => panic!("the socket is intact on epoll: {e}"),
        }
        assert_eq!((got.len(), hash(&got)), (want.len(), hash(&want)), "a hole or a repeat in the stream");
    }

    fn a_thousand_cancelled_transfers_leave_no_fd(lp) {
        if !in_child(lp, "a_thousand_cancelled_transfers_leave_no_fd") {
            return; // counted in a process of its own: other tests open fds meanwhile
        }
        let dir = TempDir::for_test(lp, "sendfile-cancel-many");
        let file = file_with(&dir, "f", &pattern(4 << 20));
        let cancel_one = |sock_level: bool| {
            let (peer, ours) = tcp_pair(); // the peer never reads: chunks stall
            // Small fixed buffers: with autotuning, loopback can take 4 MiB in one call.
            socket2::SockRef::from(&ours).set_send_buffer_size(64 << 10).unwrap();
            socket2::SockRef::from(&peer).set_recv_buffer_size(64 << 10).unwrap();
            let lp2 = lp.clone();
            let file = file.try_clone().unwrap();
            if sock_level {
                socket2::SockRef::from(&ours).set_nonblocking(true).unwrap();
                let outcome = run_within(lp, 10.0, async move {
                    ringloop::wait_for(lp2.sock_sendfile(&ours, &file, 0, None, false), 0.0).await
                });
                assert!(outcome.is_err());
            } else {
                let (transport, _) = connect_accepted(lp, ours, Received::default());
                let t2 = transport.clone();
                let outcome = run_within(lp, 10.0, async move {
                    ringloop::wait_for(lp2.sendfile(&t2, &file, 0, None, false), 0.0).await
                });
                assert!(outcome.is_err());
                transport.abort();
            }
            drop(peer);
        };
        cancel_one(false);
        cancel_one(true);
        settle(lp);
        run_ready(lp);
        let (before, pipes_before) = fds_and_pipes();
        for i in 0..1000 {
            cancel_one(i % 2 == 0);
        }
        settle(lp);
        run_ready(lp);
        let (after, pipes_after) = fds_and_pipes();
        assert_eq!(after, before, "fds other than pipes leaked by 1,000 cancelled transfers");
        // The driver keeps up to 8 empty pipes for later transfers; nothing more.
        assert!(pipes_after <= pipes_before.max(16), "pipes: {pipes_before} before, {pipes_after} after");
    }

    fn writes_are_refused_while_a_transfer_runs_and_reading_goes_on(lp) {
        let (_dir, data, file) = patterned_file(lp, "sendfile-write-refused", 4 << 20);
        let (mut peer, ours) = tcp_pair();
        let (transport, protocol) = connect_accepted(lp, ours, Received::default());
        transport.write(b"HEAD").unwrap();
        let (lp2, t2, f2) = (lp.clone(), transport.clone(), file.try_clone().unwrap());
        let task = lp.create_task(async move { lp2.sendfile(&t2, &f2, 0, None, false).await }).unwrap();
        run_ready(lp);
        let err = transport.write(b"no").expect_err("write during sendfile");
        assert!(err.to_string().contains("sendfile is in progress"), "{err}");
        assert_eq!(err.runtime_kind(), Some(RuntimeKind::SendfileInProgress), "{err}");
        // The peer talks while the transfer waits for it to read: reading goes on.
        peer.write_all(b"ping").unwrap();
        assert!(run_until(lp, 10.0, || protocol.borrow().data == b"ping"), "reading stopped");
        let reader = reader(peer, None);
        let sent = lp.run_until_complete(task).unwrap().unwrap().unwrap();
        assert_eq!(sent, data.len() as u64);
        // Flow control is coherent afterwards: the buffer is empty and writes go again.
        assert_eq!(transport.get_write_buffer_size(), 0);
        transport.write(b"TAIL").unwrap();
        let got = finish(lp, &transport, &protocol, reader);
        let mut want = b"HEAD".to_vec();
        want.extend_from_slice(&data);
        want.extend_from_slice(b"TAIL");
        assert_eq!((got.len(), hash(&got)), (want.len(), hash(&want)));
    }

    fn a_pipe_is_not_available_without_fallback_and_copied_with_it(lp) {
        let (transport, protocol, peer) = connection(lp, None);
        let (read_end, write_end) = pipe(0);
        socket2::SockRef::from(&read_end).set_nonblocking(true).unwrap();
        let mut writer = File::from(write_end);
        writer.write_all(b"from the pipe").unwrap();
        let file = File::from(read_end);
        let err = sendfile(lp, &transport, &file, 0, None, false).expect_err("a pipe");
        assert!(matches!(err, Error::SendfileNotAvailable(_)), "{err}");
        let (sock, sock_peer) = socket_pair(None);
        let err = sock_sendfile(lp, &sock, &file, 0, None, false).expect_err("a pipe");
        assert!(matches!(err, Error::SendfileNotAvailable(_)), "{err}");
        // Nothing was read from the pipe either.
        let big = pattern(1 << 20);
        let feeder = {
            let big = big.clone();
            std::thread::spawn(move || writer.write_all(&big).unwrap())
        };
        let sent = sendfile(lp, &transport, &file, 0, Some(13 + (1 << 19)), true).expect("fallback");
        assert_eq!(sent, 13 + (1 << 19));
        let sent = sock_sendfile(lp, &sock, &file, 0, None, true).expect("fallback, to EOF");
        feeder.join().unwrap();
        assert_eq!(sent, 1 << 19);
        drop(sock);
        let got = finish(lp, &transport, &protocol, peer);
        let mut want = b"from the pipe".to_vec();
        want.extend_from_slice(&big[..1 << 19]);
        assert!(got == want, "transport: {} bytes", got.len());
        assert!(sock_peer.join().unwrap() == big[1 << 19..], "socket");
    }

    fn close_during_a_transfer_lets_it_finish_then_closes(lp) {
        let (_dir, data, file) = patterned_file(lp, "sendfile-close-during", EIGHT_SIZE);
        let (peer, ours) = tcp_pair();
        let (transport, protocol) = connect_accepted(lp, ours, Received::default());
        let (go, reader) = gated_reader(peer);
        let (lp2, t2, f2) = (lp.clone(), transport.clone(), file.try_clone().unwrap());
        let task = lp.create_task(async move { lp2.sendfile(&t2, &f2, 0, None, false).await }).unwrap();
        run_ready(lp);
        // close() as the buffer would be flushed: the transfer runs to its end first.
        transport.close();
        assert!(transport.is_closing());
        go.send(()).unwrap();
        let sent = run_within(lp, 60.0, task).expect("the task").expect("sendfile");
        assert_eq!(sent, data.len() as u64);
        assert!(run_until(lp, 30.0, || protocol.borrow().lost), "connection_lost after the transfer");
        let got = reader.join().unwrap();
        assert_eq!((got.len(), hash(&got)), (data.len(), hash(&data)));
    }

    fn bad_input_is_a_clear_error_and_sends_nothing(lp) {
        let dir = TempDir::for_test(lp, "sendfile-bad");
        let path = dir.join("f");
        std::fs::write(&path, pattern(1000)).unwrap();
        let write_only = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let file = File::open(&path).unwrap();
        let (transport, protocol, peer) = connection(lp, None);
        let err = sendfile(lp, &transport, &write_only, 0, None, true).expect_err("write-only");
        assert!(matches!(err, Error::InvalidArgument { message: ref m, .. } if m.contains("writing only")), "{err}");
        let (sock, sock_peer) = socket_pair(None);
        let err = sock_sendfile(lp, &sock, &write_only, 0, None, true).expect_err("write-only");
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        let datagram = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        datagram.set_nonblocking(true).unwrap();
        let err = sock_sendfile(lp, &datagram, &file, 0, None, true).expect_err("a datagram socket");
        assert!(matches!(err, Error::InvalidArgument { message: ref m, .. } if m.contains("SOCK_STREAM")), "{err}");
        let blocking = tcp_pair().1;
        let err = sock_sendfile(lp, &blocking, &file, 0, None, true).expect_err("a blocking socket");
        assert!(matches!(err, Error::InvalidArgument { message: ref m, .. } if m.contains("non-blocking")), "{err}");
        drop(sock);
        assert!(sock_peer.join().unwrap().is_empty());
        let got = finish(lp, &transport, &protocol, peer);
        assert!(got.is_empty(), "{} bytes sent", got.len());
        let err = sendfile(lp, &transport, &file, 0, None, true).expect_err("a closed transport");
        let closing = RuntimeKind::TransportClosing;
        assert!(matches!(err, Error::Runtime { kind, message: ref m } if kind == closing && m.contains("closing")), "{err}");
        assert_eq!(position(&file), 0);
    }
}

#[test]
fn a_closed_loop_refuses_sendfile() {
    for backend in built_backends() {
        let Some(lp) = open_loop(backend, "a_closed_loop_refuses_sendfile") else { continue };
        let (_peer, ours) = tcp_pair();
        let (transport, _) = connect_accepted(&lp, ours, Received::default());
        let file = File::open("/proc/self/exe").unwrap();
        transport.abort();
        run_ready(&lp);
        lp.close().unwrap();
        let future = lp.sendfile(&transport, &file, 0, None, true);
        let err = futures_executor_block_on(future).expect_err("closed loop");
        assert!(matches!(err, Error::Closed), "{backend}: {err}");
        let sock = tcp_pair().1;
        let err = futures_executor_block_on(lp.sock_sendfile(&sock, &file, 0, None, true))
            .expect_err("closed loop");
        assert!(matches!(err, Error::Closed), "{backend}: {err}");
        let _ = file.as_raw_fd();
    }
}

/// Polls `future` once: the calls on a closed loop fail before their first await.
fn futures_executor_block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    let waker = std::task::Waker::noop();
    match future.as_mut().poll(&mut std::task::Context::from_waker(waker)) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("the call waited on a closed loop"),
    }
}

/// What each of the eight transfers sends: more than loopback's socket buffers hold, so a
/// transfer to a peer that does not read cannot end.
const EIGHT_SIZE: usize = 16 << 20;

/// Writes back what it receives.
#[derive(Default)]
struct Echo(Option<Transport>);

impl BaseProtocol for Echo {
    fn connection_made(&mut self, transport: Transport) {
        self.0 = Some(transport);
    }
}

impl Protocol for Echo {
    fn data_received(&mut self, data: &[u8]) {
        if let Some(transport) = &self.0 {
            transport.write(data).expect("echo");
        }
    }
}
