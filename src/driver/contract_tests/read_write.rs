//! `Read` and `Write` on pipes, PTYs and regular files: at the fd's position, into the spare
//! capacity, short writes, waiting for data or room, errors as results.

use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{collect, each_config, run, run_errno, settle, LIMIT};
use crate::driver::{Completion, Op};
use crate::test_support::pipe;

fn file(fd: OwnedFd) -> std::fs::File {
    std::fs::File::from(fd)
}

fn read_op(fd: &impl AsRawFd, cap: usize) -> Op {
    Op::Read { fd: fd.as_raw_fd(), buf: zeroed_capacity(cap) }
}

/// An empty `Vec` whose `cap` bytes of spare capacity are zeroed: memcheck cannot see io_uring's
/// writes into it, and would otherwise report the bytes read as uninitialised.
fn zeroed_capacity(cap: usize) -> Vec<u8> {
    let mut buf = vec![0; cap];
    buf.clear();
    buf
}

fn read_bytes(c: Completion<u32>) -> Vec<u8> {
    match c.op {
        Some(Op::Read { buf, .. }) => buf,
        other => panic!("not a read: {other:?}"),
    }
}

#[test]
fn read_waits_for_data_then_sees_eof() {
    each_config(|mut d| {
        let (r, w) = pipe();
        let mut w = file(w);
        d.submit(read_op(&r, 16), 7);
        let early = collect(&mut d, 1, Duration::from_millis(50));
        assert!(early.is_empty(), "read of an empty pipe completed: {early:?}");
        w.write_all(b"hello").unwrap();
        let mut out = collect(&mut d, 1, LIMIT);
        let c = out.pop().expect("the read completes once data is there");
        assert_eq!((c.owner, c.more()), (7, false));
        assert_eq!(c.result.as_ref().unwrap(), &5);
        assert_eq!(read_bytes(c), b"hello");
        drop(w);
        let c = run(&mut d, read_op(&r, 16));
        assert_eq!(c.result.unwrap(), 0, "EOF once the writer is gone");
        assert_eq!(d.in_flight(), 0);
    });
}

#[test]
fn read_appends_to_the_spare_capacity() {
    each_config(|mut d| {
        let (r, w) = pipe();
        file(w).write_all(b"def").unwrap();
        let mut buf = zeroed_capacity(8);
        buf.extend_from_slice(b"abc");
        let c = run(&mut d, Op::Read { fd: r.as_raw_fd(), buf });
        assert_eq!(c.result.as_ref().unwrap(), &3);
        assert_eq!(read_bytes(c), b"abcdef");
    });
}

#[test]
fn write_is_in_order_and_a_full_pipe_gives_a_short_write() {
    each_config(|mut d| {
        let (r, w) = pipe();
        let data = Bytes::from((0..200_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let op = Op::Write { fd: w.as_raw_fd(), buf: data.clone(), offset: 1 };
        let n = run(&mut d, op).result.unwrap() as usize;
        assert!(n > 0 && n < data.len() - 1, "short write expected, got {n}");
        let mut got = vec![0; n];
        file(r).read_exact(&mut got).unwrap();
        assert!(got == data[1..1 + n], "{n} bytes from offset 1 differ");
    });
}

#[test]
fn write_to_a_full_pipe_waits_for_the_reader() {
    each_config(|mut d| {
        let (r, w) = pipe();
        let mut w = file(w);
        let mut r = file(r);
        let chunk = [1u8; 4096];
        while w.write(&chunk).is_ok() {}
        let op = Op::Write { fd: w.as_raw_fd(), buf: Bytes::from_static(b"tail"), offset: 0 };
        d.submit(op, 7);
        let early = collect(&mut d, 1, Duration::from_millis(50));
        assert!(early.is_empty(), "write to a full pipe completed: {early:?}");
        let mut sink = vec![0; 1 << 20];
        let _ = r.read(&mut sink).unwrap();
        let c = collect(&mut d, 1, LIMIT).pop().expect("write completes once there is room");
        assert_eq!(c.result.unwrap(), 4);
    });
}

#[test]
fn write_without_a_reader_is_epipe() {
    each_config(|mut d| {
        let (r, w) = pipe();
        drop(r);
        let op = Op::Write { fd: w.as_raw_fd(), buf: Bytes::from_static(b"x"), offset: 0 };
        assert_eq!(run_errno(&mut d, op), Some(libc::EPIPE));
    });
}

#[test]
fn bad_offset_and_bad_fd_are_errors_not_panics() {
    each_config(|mut d| {
        let op = Op::Write { fd: -1, buf: Bytes::from_static(b"ab"), offset: 0 };
        assert_eq!(run_errno(&mut d, op), Some(libc::EBADF));
        let (_r, w) = pipe();
        let op = Op::Write { fd: w.as_raw_fd(), buf: Bytes::from_static(b"ab"), offset: 3 };
        assert_eq!(run_errno(&mut d, op), Some(libc::EINVAL));
    });
}

#[test]
fn a_regular_file_reads_at_its_current_position() {
    each_config(|mut d| {
        let mut f = tempfile();
        f.write_all(b"0123456789").unwrap();
        f.seek(std::io::SeekFrom::Start(4)).unwrap();
        let c = run(&mut d, read_op(&f, 3));
        assert_eq!(c.result.as_ref().unwrap(), &3);
        assert_eq!(read_bytes(c), b"456");
        assert_eq!(f.stream_position().unwrap(), 7, "the read moved the position");
        let op = Op::Write { fd: f.as_raw_fd(), buf: Bytes::from_static(b"xy"), offset: 0 };
        assert_eq!(run(&mut d, op).result.unwrap(), 2);
        let c = run(&mut d, read_op(&f, 16));
        assert_eq!(read_bytes(c), b"9", "the write went at position 7");
    });
}

#[test]
fn a_cancelled_read_reports_nothing() {
    each_config(|mut d| {
        let (r, w) = pipe();
        let id = d.submit(read_op(&r, 16), 7);
        collect(&mut d, 1, Duration::from_millis(20));
        assert_eq!(d.cancel(id), Some(7));
        file(w).write_all(b"late").unwrap();
        let out = collect(&mut d, 1, Duration::from_millis(50));
        assert!(out.is_empty(), "{out:?}");
        let out = settle(&mut d);
        assert!(out.is_empty(), "{out:?}");
    });
}

#[test]
fn a_pty_master_reads_what_the_slave_writes() {
    each_config(|mut d| {
        let (master, slave) = openpty();
        d.submit(read_op(&master, 64), 7);
        let early = collect(&mut d, 1, Duration::from_millis(30));
        assert!(early.is_empty(), "{early:?}");
        file(slave).write_all(b"pty").unwrap();
        let c = collect(&mut d, 1, LIMIT).pop().expect("pty read completes");
        assert_eq!(c.result.as_ref().unwrap(), &3);
        assert_eq!(read_bytes(c), b"pty");
        // Slave closed: the master reads EIO, the tty's end of stream.
        assert_eq!(run_errno(&mut d, read_op(&master, 64)), Some(libc::EIO));
    });
}

/// A new, already unlinked file in the temporary directory, open for reading and writing.
fn tempfile() -> std::fs::File {
    let path = std::env::temp_dir().join(format!(
        "ringloop-rw-{}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path);
    let f = f.expect("temp file");
    std::fs::remove_file(&path).unwrap();
    f
}

/// A PTY pair from `/dev/ptmx`: the master (non-blocking) and the slave.
fn openpty() -> (OwnedFd, OwnedFd) {
    let master = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/ptmx")
        .expect("/dev/ptmx");
    // SAFETY: unlockpt and the TIOCGPTPEER ioctl take the open master and integer flags; the
    // ioctl returns a new fd for the slave, which nothing else owns.
    let slave = unsafe {
        assert_eq!(libc::unlockpt(master.as_raw_fd()), 0, "unlockpt");
        let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
        let slave = libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags);
        assert!(slave >= 0, "TIOCGPTPEER: {}", std::io::Error::last_os_error());
        OwnedFd::from_raw_fd(slave)
    };
    (master.into(), slave)
}
