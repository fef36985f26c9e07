//! `SendFile`: a file's bytes to a socket without a copy through user space (two linked
//! splices through a pooled pipe on io_uring, `sendfile(2)` on epoll): counts, offsets, the end
//! of the file, chunks of a big file in order, cancelling a chunk the peer does not take, and
//! the fds it names.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::{capped_wait, each_config, is_open, run, run_errno, run_within, settle, tcp_pair};
use super::{turns, LIMIT};
use crate::driver::any::Driver;
use crate::driver::{Op, OpId};

/// A temporary regular file holding `data`, its position at 0.
pub(crate) fn file_with(data: &[u8]) -> std::fs::File {
    let path = std::env::temp_dir().join(format!(
        "ringloop-sendfile-{}-{}",
        std::process::id(),
        super::unique()
    ));
    let mut file =
        std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    file.write_all(data).unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    file
}

/// `len` bytes of a pattern that shows misplaced bytes.
pub(crate) fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn send_file(socket: &impl AsRawFd, file: &impl AsRawFd, offset: u64, len: u32) -> Op {
    Op::SendFile { fd: socket.as_raw_fd(), file: file.as_raw_fd(), offset, len }
}

/// Sends `file` (of `size` bytes) in chunks (owner 7) to `socket`, whose peer does not read,
/// until a chunk stays pending; returns the bytes the completed chunks reported and the
/// pending chunk's id.
fn send_until_pending(
    d: &mut Driver<u32>,
    socket: &impl AsRawFd,
    file: &impl AsRawFd,
    size: u64,
) -> (u64, OpId) {
    let mut offset = 0u64;
    loop {
        let id = d.submit(send_file(socket, file, offset, 1 << 30), 7);
        match turns(d, 3).pop() {
            Some(c) => offset += u64::from(c.result.expect("a chunk")),
            None => return (offset, id),
        }
        assert!(offset < size, "the peer took everything");
    }
}

#[test]
fn send_file_sends_from_the_offset_and_leaves_the_file_position() {
    each_config(|mut d| {
        let data = pattern(10_000);
        let mut file = file_with(&data);
        let (ours, mut peer) = tcp_pair();
        let c = run(&mut d, send_file(&ours, &file, 100, 500));
        assert_eq!(c.result.unwrap(), 500);
        assert!(matches!(c.op, Some(Op::SendFile { offset: 100, len: 500, .. })));
        let mut got = vec![0; 500];
        peer.read_exact(&mut got).unwrap();
        assert!(got == data[100..600], "the bytes at the offset, in order");
        assert_eq!(file.stream_position().unwrap(), 0, "the file's position did not move");
    });
}

#[test]
fn send_file_at_the_end_of_the_file_sends_nothing() {
    each_config(|mut d| {
        let file = file_with(b"abc");
        let (ours, _peer) = tcp_pair();
        assert_eq!(run(&mut d, send_file(&ours, &file, 3, 100)).result.unwrap(), 0);
        assert_eq!(run(&mut d, send_file(&ours, &file, 1, 100)).result.unwrap(), 2, "the rest");
        let empty = file_with(b"");
        assert_eq!(run(&mut d, send_file(&ours, &empty, 0, 100)).result.unwrap(), 0);
    });
}

#[test]
fn chunks_of_a_big_file_arrive_whole_and_in_order() {
    each_config(|mut d| {
        // Under valgrind (waits capped, docs/testing.md) the reader runs only in the sender's
        // gaps and takes ~200 KB/s: 2 MiB there, still two pipes' worth and more than the
        // socket's buffers take at first.
        let data = pattern(if capped_wait().is_some() { 2 << 20 } else { 8 << 20 });
        let file = file_with(&data);
        let (ours, peer) = tcp_pair();
        // One bound for the whole transfer, not LIMIT per read or per chunk: a reader the
        // machine starves lets the receive buffer fill, the kernel drops segments the loopback
        // peer sent, and TCP's retransmit timer backs off for seconds (`ss -ti`: drops and
        // `backoff:4` under valgrind; CI once saw a reader wait 5 s). The test is about order
        // and completeness, not latency; reading into room for the whole file keeps the reads
        // large from the first.
        let bound = LIMIT * 4;
        let deadline = Instant::now() + bound;
        peer.set_read_timeout(Some(bound)).unwrap();
        let len = data.len();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::with_capacity(len);
            match (&peer).read_to_end(&mut got) {
                Ok(_) => Ok(got),
                Err(e) => Err(format!("{e} after {} bytes", got.len())),
            }
        });
        let mut offset = 0u64;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let n = run_within(&mut d, send_file(&ours, &file, offset, 1 << 30), left);
            let n = n.result.unwrap();
            if n == 0 {
                break;
            }
            offset += u64::from(n);
        }
        assert_eq!(offset, data.len() as u64);
        drop(ours);
        let got = reader.join().unwrap().unwrap();
        assert!(got == data, "{} of {} bytes, or out of order", got.len(), data.len());
    });
}

#[test]
fn a_write_only_file_is_an_error_and_sends_nothing() {
    each_config(|mut d| {
        let path = std::env::temp_dir().join(format!(
            "ringloop-sendfile-wo-{}-{}",
            std::process::id(),
            super::unique()
        ));
        let file = std::fs::File::create(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let (ours, mut peer) = tcp_pair();
        assert_eq!(run_errno(&mut d, send_file(&ours, &file, 0, 10)), Some(libc::EBADF));
        peer.set_nonblocking(true).unwrap();
        let nothing = peer.read(&mut [0; 8]).map_err(|e| e.kind());
        assert_eq!(nothing, Err(std::io::ErrorKind::WouldBlock), "nothing was sent");
    });
}

#[test]
fn a_chunk_the_peer_does_not_take_can_be_cancelled() {
    each_config(|mut d| {
        let file = file_with(&pattern(16 << 20));
        let (ours, mut peer) = tcp_pair();
        // Fill the socket until a chunk stays pending (the peer does not read).
        let (offset, pending) = send_until_pending(&mut d, &ours, &file, 16 << 20);
        assert_eq!(d.cancel(pending), Some(7));
        let out = settle(&mut d);
        assert!(out.is_empty(), "nothing after the cancel: {} completions", out.len());
        // The peer gets at least what the completed chunks reported, all of it in order.
        drop(ours);
        peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert!(got.len() as u64 >= offset, "{} < {offset}", got.len());
        assert!(got == pattern(got.len()), "the bytes arrived in order");
    });
}

#[test]
fn close_fd_waits_for_a_send_file_naming_the_socket_or_the_file() {
    each_config(|mut d| {
        let file = super::high(file_with(&pattern(16 << 20)));
        let (ours, _peer) = tcp_pair();
        let socket = super::high(ours);
        let (s, f) = (socket.as_raw_fd(), file.as_raw_fd());
        let (_, pending) = send_until_pending(&mut d, &socket, &file, 16 << 20);
        d.close_fd(socket);
        d.close_fd(file);
        assert!(is_open(s) && is_open(f), "closed while the op names them");
        d.cancel(pending);
        settle(&mut d);
        assert!(!is_open(s) && !is_open(f), "closed once the op ended");
    });
}
