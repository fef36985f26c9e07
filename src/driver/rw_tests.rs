//! Tests of `Op::Read` and `Op::Write` on pipes, FIFOs, PTYs and regular files, on every
//! backend: io_uring with the `READ`/`WRITE` opcodes, io_uring with their syscall fallback
//! (`op_read,op_write` disabled), and epoll.

use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::any::Driver;
use super::uring::UringDriver;
use super::{Completion, Op};
use crate::test_support::pipe;

const LIMIT: Duration = Duration::from_secs(5);

/// Every driver configuration these ops run on, by name (skips io_uring, printed, if the
/// kernel lacks it and `RINGLOOP_REQUIRE_URING` is not set).
fn each_driver(test: impl Fn(&str, Driver<u32>)) {
    for (name, disabled) in [("uring", &[][..])] {
        match UringDriver::with_disabled(disabled) {
            Ok(d) => test(name, Driver::Uring(d)),
            Err(err) => {
                crate::test_support::uring_missing(&format!("read/write test ({name})"), &err)
            }
        }
    }
    #[cfg(feature = "fallback")]
    test("epoll", Driver::Epoll(super::epoll::EpollDriver::new().expect("epoll driver")));
}

fn file(fd: OwnedFd) -> std::fs::File {
    std::fs::File::from(fd)
}

/// Turns until `want` completions arrived or `limit` passed.
fn collect(d: &mut Driver<u32>, want: usize, limit: Duration) -> Vec<Completion<u32>> {
    let (start, mut out) = (Instant::now(), Vec::new());
    while out.len() < want && start.elapsed() < limit {
        d.turn(Some(limit.saturating_sub(start.elapsed())), &mut out).expect("turn");
    }
    out
}

/// Submits `op` and returns its one completion.
fn run(name: &str, d: &mut Driver<u32>, op: Op) -> Completion<u32> {
    d.submit(op, 7);
    let mut out = collect(d, 1, LIMIT);
    assert_eq!(out.len(), 1, "{name}: {out:?}");
    let c = out.pop().unwrap();
    assert!(!c.more && c.owner == 7, "{name}: {c:?}");
    c
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
    each_driver(|name, mut d| {
        let (r, w) = pipe();
        let mut w = file(w);
        d.submit(read_op(&r, 16), 7);
        let early = collect(&mut d, 1, Duration::from_millis(50));
        assert!(early.is_empty(), "{name}: read of an empty pipe completed: {early:?}");
        w.write_all(b"hello").unwrap();
        let mut out = collect(&mut d, 1, LIMIT);
        let c = out.pop().expect("the read completes once data is there");
        assert_eq!(c.result.as_ref().unwrap(), &5, "{name}");
        assert_eq!(read_bytes(c), b"hello", "{name}");
        drop(w);
        let c = run(name, &mut d, read_op(&r, 16));
        assert_eq!(c.result.unwrap(), 0, "{name}: EOF once the writer is gone");
        assert_eq!(d.in_flight(), 0, "{name}");
    });
}

#[test]
fn read_appends_to_the_spare_capacity() {
    each_driver(|name, mut d| {
        let (r, w) = pipe();
        file(w).write_all(b"def").unwrap();
        let mut buf = zeroed_capacity(8);
        buf.extend_from_slice(b"abc");
        let c = run(name, &mut d, Op::Read { fd: r.as_raw_fd(), buf });
        assert_eq!(c.result.as_ref().unwrap(), &3, "{name}");
        assert_eq!(read_bytes(c), b"abcdef", "{name}");
    });
}

#[test]
fn write_is_in_order_and_a_full_pipe_gives_a_short_write() {
    each_driver(|name, mut d| {
        let (r, w) = pipe();
        let data = Bytes::from((0..200_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let op = Op::Write { fd: w.as_raw_fd(), buf: data.clone(), offset: 1 };
        let n = run(name, &mut d, op).result.unwrap() as usize;
        assert!(n > 0 && n < data.len() - 1, "{name}: short write expected, got {n}");
        let mut got = vec![0; n];
        file(r).read_exact(&mut got).unwrap();
        assert_eq!(got, data[1..1 + n], "{name}");
    });
}

#[test]
fn write_to_a_full_pipe_waits_for_the_reader() {
    each_driver(|name, mut d| {
        let (r, w) = pipe();
        let mut w = file(w);
        let mut r = file(r);
        let chunk = [1u8; 4096];
        while w.write(&chunk).is_ok() {}
        let op = Op::Write { fd: w.as_raw_fd(), buf: Bytes::from_static(b"tail"), offset: 0 };
        d.submit(op, 7);
        let early = collect(&mut d, 1, Duration::from_millis(50));
        assert!(early.is_empty(), "{name}: write to a full pipe completed: {early:?}");
        let mut sink = vec![0; 1 << 20];
        let _ = r.read(&mut sink).unwrap();
        let c = collect(&mut d, 1, LIMIT).pop().expect("write completes once there is room");
        assert_eq!(c.result.unwrap(), 4, "{name}");
    });
}

#[test]
fn write_without_a_reader_is_epipe() {
    each_driver(|name, mut d| {
        let (r, w) = pipe();
        drop(r);
        let op = Op::Write { fd: w.as_raw_fd(), buf: Bytes::from_static(b"x"), offset: 0 };
        let err = run(name, &mut d, op).result.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE), "{name}");
    });
}

#[test]
fn bad_offset_and_bad_fd_are_errors_not_panics() {
    each_driver(|name, mut d| {
        let op = Op::Write { fd: -1, buf: Bytes::from_static(b"ab"), offset: 0 };
        let err = run(name, &mut d, op).result.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{name}");
        let (_r, w) = pipe();
        let op = Op::Write { fd: w.as_raw_fd(), buf: Bytes::from_static(b"ab"), offset: 3 };
        let err = run(name, &mut d, op).result.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{name}");
    });
}

#[test]
fn a_regular_file_reads_at_its_current_position() {
    each_driver(|name, mut d| {
        let mut f = tempfile();
        f.write_all(b"0123456789").unwrap();
        f.seek(std::io::SeekFrom::Start(4)).unwrap();
        let c = run(name, &mut d, read_op(&f, 3));
        assert_eq!(c.result.as_ref().unwrap(), &3, "{name}");
        assert_eq!(read_bytes(c), b"456", "{name}");
        assert_eq!(f.stream_position().unwrap(), 7, "{name}: the read moved the position");
        let op = Op::Write { fd: f.as_raw_fd(), buf: Bytes::from_static(b"xy"), offset: 0 };
        assert_eq!(run(name, &mut d, op).result.unwrap(), 2, "{name}");
        let c = run(name, &mut d, read_op(&f, 16));
        assert_eq!(read_bytes(c), b"9", "{name}: the write went at position 7");
    });
}

#[test]
fn a_cancelled_read_reports_nothing() {
    each_driver(|name, mut d| {
        let (r, w) = pipe();
        let id = d.submit(read_op(&r, 16), 7);
        collect(&mut d, 1, Duration::from_millis(20));
        assert_eq!(d.cancel(id), Some(7), "{name}");
        file(w).write_all(b"late").unwrap();
        let out = collect(&mut d, 1, Duration::from_millis(50));
        assert!(out.is_empty(), "{name}: {out:?}");
        let deadline = Instant::now() + LIMIT;
        while d.in_flight() > 0 && Instant::now() < deadline {
            collect(&mut d, 1, Duration::from_millis(10));
        }
        assert_eq!(d.in_flight(), 0, "{name}: the cancelled read's slot is freed");
    });
}

#[test]
fn a_pty_master_reads_what_the_slave_writes() {
    each_driver(|name, mut d| {
        let (master, slave) = openpty();
        set_nonblocking(&master);
        d.submit(read_op(&master, 64), 7);
        let early = collect(&mut d, 1, Duration::from_millis(30));
        assert!(early.is_empty(), "{name}: {early:?}");
        file(slave).write_all(b"pty").unwrap();
        let c = collect(&mut d, 1, LIMIT).pop().expect("pty read completes");
        assert_eq!(c.result.as_ref().unwrap(), &3, "{name}");
        assert_eq!(read_bytes(c), b"pty", "{name}");
        // Slave closed: the master reads EIO, the tty's end of stream.
        let err = run(name, &mut d, read_op(&master, 64)).result.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{name}");
    });
}

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

/// A PTY pair (master, slave) with raw output (no `\n` → `\r\n`).
fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two fds into the live ints; the name, termios and winsize
    // arguments may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just created and nothing else owns them.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    // SAFETY: a zeroed termios is a valid out-argument for tcgetattr, which fills it.
    let mut tio = unsafe { std::mem::zeroed::<libc::termios>() };
    // SAFETY: `tio` is a live termios; the fd is open.
    unsafe {
        libc::tcgetattr(slave.as_raw_fd(), &mut tio);
        libc::cfmakeraw(&mut tio);
        libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &tio);
    }
    (master, slave)
}

fn set_nonblocking(fd: &OwnedFd) {
    // SAFETY: fcntl on an open fd with integer arguments.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}
