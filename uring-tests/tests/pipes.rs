//! Pipe transports (`EventLoop::connect_read_pipe`, `connect_write_pipe`): BEHAVIOURS section 16
//! (items 140–143) on every backend built in, with real pipes, a FIFO, a PTY and a `cat` child.
//!
//! Notes on the items:
//! * 140: the PTY master ends with `EIO` once the slave is closed; as in asyncio
//!   (`test_read_pty_output`: "It is okay if EOF is missed") that closes the transport with the
//!   `EIO` error and no `eof_received`, and nothing goes to the exception handler.
//! * 142: a partial write, `EAGAIN` and a write of 0 bytes are driver-level results here
//!   (`src/driver/rw_tests.rs`); at this level they show as order kept under backpressure.
//!   "Later writes are counted and a warning is logged after 5": the sixth lost write logs.
//! * 143: "EAGAIN is ignored" is a driver matter (the op keeps waiting); a read `OSError` is
//!   provoked with `ECONNRESET` on a Unix socket (a peer closed with unread data).
//!
//! Every wait is bounded. fd hygiene is checked by identity (no fd of this process still refers
//! to the pipe's inode), which other tests running in parallel cannot disturb.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::rc::Rc;

use ringloop::{
    BaseProtocol, Error, EventLoop, ExtraInfo, Protocol, ReadTransport, WriteTransport,
};
use uring_tests::{
    backend_tests, capture_error_texts, errno_of, my_warnings, pattern, pipe, run_until, spin, Ev,
    TempDir,
};

/// Generous bound for "this must happen" waits (2 shared cores, debug build).
const WAIT: f64 = 20.0;
/// How long "this must not happen" is watched for.
const QUIET: f64 = 0.05;

// ---------------------------------------------------------------------------------------------
// Recording protocols.

/// A read pipe protocol that records callbacks and checks their order (item 104's machine).
#[derive(Default)]
struct ReadRec {
    events: Vec<Ev>,
    data: Vec<u8>,
    transport: Option<ReadTransport>,
    violations: Vec<String>,
    pause_in_made: bool,
    panic_on_data: bool,
}

impl ReadRec {
    fn lost(&self) -> bool {
        self.events.iter().any(|e| matches!(e, Ev::Lost(_)))
    }

    fn lost_errno(&self) -> Option<Option<i32>> {
        self.events.iter().find_map(|e| match e {
            Ev::Lost(errno) => Some(*errno),
            _ => None,
        })
    }

    fn check(&self) {
        assert!(self.violations.is_empty(), "callback order: {:?}", self.violations);
        let lost = self.events.iter().filter(|e| matches!(e, Ev::Lost(_))).count();
        assert_eq!(lost, 1, "connection_lost exactly once: {:?}", self.events);
    }

    fn push(&mut self, ev: Ev) {
        let last = self.events.last().cloned();
        let ok = match (&ev, &last) {
            (Ev::Made, None) => true,
            (Ev::Made, _) => false,
            (_, None) => false,
            (_, Some(Ev::Lost(_))) => false,
            (Ev::Data(_), Some(Ev::Eof)) => false,
            (Ev::Eof, _) => !self.events.contains(&Ev::Eof),
            _ => true,
        };
        if !ok {
            self.violations.push(format!("{ev:?} after {:?}", self.events));
        }
        self.events.push(ev);
    }
}

impl BaseProtocol<ReadTransport> for ReadRec {
    fn connection_made(&mut self, transport: ReadTransport) {
        if self.pause_in_made {
            transport.pause_reading();
        }
        self.transport = Some(transport);
        self.push(Ev::Made);
    }

    fn connection_lost(&mut self, error: Option<Error>) {
        self.push(Ev::Lost(errno_of(&error)));
    }
}

impl Protocol<ReadTransport> for ReadRec {
    fn data_received(&mut self, data: &[u8]) {
        self.data.extend_from_slice(data);
        self.push(Ev::Data(data.len()));
        if self.panic_on_data {
            uring_tests::quiet_panic("data_received failed on purpose");
        }
    }

    fn eof_received(&mut self) -> bool {
        let closing = self.transport.as_ref().is_some_and(|t| t.is_closing());
        if !closing {
            self.violations.push("eof_received while not closing".into());
        }
        self.push(Ev::Eof);
        true // ignored by a read pipe: it closes regardless
    }
}

/// A write pipe protocol (a `BaseProtocol`) that records callbacks.
#[derive(Default)]
struct WriteRec {
    events: Vec<Ev>,
    transport: Option<WriteTransport>,
    buffer_at_lost: Option<usize>,
}

impl WriteRec {
    fn lost_errno(&self) -> Option<Option<i32>> {
        self.events.iter().find_map(|e| match e {
            Ev::Lost(errno) => Some(*errno),
            _ => None,
        })
    }

    fn count(&self, ev: &Ev) -> usize {
        self.events
            .iter()
            .filter(|e| std::mem::discriminant(*e) == std::mem::discriminant(ev))
            .count()
    }

    fn check(&self) {
        assert_eq!(self.events.first(), Some(&Ev::Made), "{:?}", self.events);
        assert_eq!(self.count(&Ev::Lost(None)), 1, "connection_lost once: {:?}", self.events);
        assert!(matches!(self.events.last(), Some(Ev::Lost(_))), "lost last: {:?}", self.events);
    }
}

impl BaseProtocol<WriteTransport> for WriteRec {
    fn connection_made(&mut self, transport: WriteTransport) {
        self.transport = Some(transport);
        self.events.push(Ev::Made);
    }

    fn connection_lost(&mut self, error: Option<Error>) {
        self.buffer_at_lost = self.transport.as_ref().map(|t| t.get_write_buffer_size());
        self.events.push(Ev::Lost(errno_of(&error)));
    }

    fn pause_writing(&mut self) {
        self.events.push(Ev::Pause);
    }

    fn resume_writing(&mut self) {
        self.events.push(Ev::Resume);
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// The bytes a reader thread read to the end of its pipe. The loop keeps turning meanwhile:
/// after `connection_lost` the write end is closed by an `Op::Close` that the driver runs at
/// its next turn, so joining without turning could wait for ever (it did, now and then, when
/// the turn that delivered `connection_lost` had not submitted the close yet).
fn join_reader(lp: &EventLoop, reader: std::thread::JoinHandle<Vec<u8>>) -> Vec<u8> {
    assert!(run_until(lp, WAIT, || reader.is_finished()), "the reader never saw end of file");
    reader.join().unwrap()
}

/// (device, inode) of the file `fd` refers to.
fn identity(fd: &impl AsRawFd) -> (u64, u64) {
    let meta = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
    (meta.dev(), meta.ino())
}

/// How many fds of this process refer to the file `id`.
fn holders(id: (u64, u64)) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return 0 };
    dir.filter_map(|e| std::fs::metadata(e.ok()?.path()).ok())
        .filter(|m| (m.dev(), m.ino()) == id)
        .count()
}

fn read_pipe(
    lp: &EventLoop,
    rec: ReadRec,
    fd: impl Into<OwnedFd> + 'static,
) -> Rc<RefCell<ReadRec>> {
    let lp2 = lp.clone();
    let (_, proto) = lp
        .run_until_complete(async move { lp2.connect_read_pipe(move || rec, fd).await })
        .expect("run_until_complete")
        .expect("connect_read_pipe");
    proto
}

fn write_pipe(
    lp: &EventLoop,
    fd: impl Into<OwnedFd> + 'static,
) -> (WriteTransport, Rc<RefCell<WriteRec>>) {
    let lp2 = lp.clone();
    lp.run_until_complete(async move { lp2.connect_write_pipe(WriteRec::default, fd).await })
        .expect("run_until_complete")
        .expect("connect_write_pipe")
}

fn write_all(fd: &OwnedFd, data: &[u8]) {
    let mut file = std::fs::File::from(fd.try_clone().unwrap());
    file.write_all(data).unwrap();
}

/// A PTY pair (master, slave) with raw output.
fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two fds into the live ints; the other arguments may be null.
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
    // SAFETY: a zeroed termios is a valid out-argument; tcgetattr fills it for the open slave.
    let mut tio = unsafe { std::mem::zeroed::<libc::termios>() };
    // SAFETY: `tio` is live; the fd is open.
    unsafe {
        assert_eq!(libc::tcgetattr(slave.as_raw_fd(), &mut tio), 0);
        libc::cfmakeraw(&mut tio);
        assert_eq!(libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &tio), 0);
    }
    (master, slave)
}

fn is_nonblocking(fd: RawFd) -> bool {
    // SAFETY: F_GETFL takes no pointer.
    unsafe { libc::fcntl(fd, libc::F_GETFL) & libc::O_NONBLOCK != 0 }
}

// ---------------------------------------------------------------------------------------------
// Read pipes: items 140 and 143.

backend_tests! {
    fn read_pipe_delivers_incrementally_then_eof_then_lost(lp) {
        // Item 140 (test_read_pipe).
        let (r, w) = pipe(0);
        let id = identity(&r);
        let raw = r.as_raw_fd();
        let proto = read_pipe(lp, ReadRec::default(), r);
        assert_eq!(proto.borrow().events, [Ev::Made], "connected when connect_read_pipe returns");
        let transport = proto.borrow().transport.clone().unwrap();
        assert!(matches!(transport.get_extra_info("pipe"), Some(ExtraInfo::Fd(fd)) if fd == raw));
        assert!(transport.get_extra_info("peername").is_none());
        assert!(is_nonblocking(raw), "the pipe was made non-blocking");
        assert!(transport.is_reading() && !transport.is_closing());
        write_all(&w, b"1");
        assert!(run_until(lp, WAIT, || proto.borrow().data.len() == 1));
        write_all(&w, b"2345");
        assert!(run_until(lp, WAIT, || proto.borrow().data.len() == 5));
        assert_eq!(proto.borrow().data, b"12345");
        assert!(!proto.borrow().events.contains(&Ev::Eof));
        drop(w);
        assert!(run_until(lp, WAIT, || proto.borrow().lost()));
        let events = proto.borrow().events.clone();
        assert_eq!(&events[events.len() - 2..], [Ev::Eof, Ev::Lost(None)]);
        assert!(transport.is_closing() && !transport.is_reading());
        spin(lp, QUIET);
        proto.borrow().check();
        assert_eq!(holders(id), 0, "the read end is closed");
        assert!(transport.get_extra_info("pipe").is_none());
        assert!(transport.get_protocol::<ReadRec>().is_none(), "protocol released after lost");
    }

    fn read_pty_master_output(lp) {
        // Item 140 (test_read_pty_output).
        let (master, slave) = openpty();
        let errors = capture_error_texts(lp);
        let proto = read_pipe(lp, ReadRec::default(), master);
        write_all(&slave, b"1");
        assert!(run_until(lp, WAIT, || proto.borrow().data.len() == 1));
        write_all(&slave, b"2345");
        assert!(run_until(lp, WAIT, || proto.borrow().data.len() == 5));
        assert_eq!(proto.borrow().data, b"12345");
        drop(slave);
        assert!(run_until(lp, WAIT, || proto.borrow().lost()));
        let errno = proto.borrow().lost_errno().unwrap();
        assert!(matches!(errno, None | Some(libc::EIO)), "PTY end: {errno:?}");
        spin(lp, QUIET);
        proto.borrow().check();
        assert!(errors.borrow().is_empty(), "EIO is not reported: {:?}", errors.borrow());
    }

    fn fifo_read_until_eof(lp) {
        let dir = TempDir::for_test(lp, "fifo");
        let path = dir.0.join("fifo");
        let cpath = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(cpath.as_ptr(), 0o600) }, 0);
        // Opening the read side non-blocking succeeds without a writer.
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        let id = identity(&reader);
        let proto = read_pipe(lp, ReadRec::default(), reader);
        spin(lp, QUIET);
        assert_eq!(proto.borrow().events, [Ev::Made], "no EOF before a writer ever came");
        let data = pattern(300_000);
        let expected = data.clone();
        let writer = std::thread::spawn(move || {
            let mut w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            for chunk in data.chunks(7_000) {
                w.write_all(chunk).unwrap();
            }
        });
        assert!(run_until(lp, WAIT, || proto.borrow().lost()));
        writer.join().unwrap();
        assert!(proto.borrow().data == expected, "all bytes, in order");
        let events = proto.borrow().events.clone();
        assert_eq!(&events[events.len() - 2..], [Ev::Eof, Ev::Lost(None)]);
        spin(lp, QUIET);
        proto.borrow().check();
        assert_eq!(holders(id), 0, "the FIFO is closed");
    }

    fn pause_and_resume_reading(lp) {
        // Items 112/143: idempotent, pausing in connection_made works, no-ops once closed.
        let (r, w) = pipe(0);
        let rec = ReadRec { pause_in_made: true, ..ReadRec::default() };
        let proto = read_pipe(lp, rec, r);
        let transport = proto.borrow().transport.clone().unwrap();
        assert!(!transport.is_reading(), "paused in connection_made");
        write_all(&w, b"abc");
        spin(lp, QUIET);
        assert!(proto.borrow().data.is_empty(), "nothing delivered while paused");
        transport.pause_reading();
        transport.resume_reading();
        transport.resume_reading();
        assert!(transport.is_reading());
        assert!(run_until(lp, WAIT, || proto.borrow().data == b"abc"));
        transport.pause_reading();
        transport.pause_reading();
        write_all(&w, b"def");
        spin(lp, QUIET);
        assert_eq!(proto.borrow().data, b"abc", "paused again");
        transport.resume_reading();
        assert!(run_until(lp, WAIT, || proto.borrow().data == b"abcdef"));
        transport.close();
        transport.close();
        assert!(transport.is_closing() && !transport.is_reading());
        transport.pause_reading();
        transport.resume_reading();
        assert!(!transport.is_reading(), "resume after close does nothing");
        write_all(&w, b"late");
        spin(lp, QUIET);
        assert_eq!(proto.borrow().events.last(), Some(&Ev::Lost(None)));
        assert_eq!(proto.borrow().data, b"abcdef");
        proto.borrow().check();
    }

    fn close_with_a_read_pending_releases_the_fd(lp) {
        // The read in flight is cancelled and the fd closed behind it (a blocking pipe given
        // to the transport was made non-blocking, so no kernel worker sits in read(2)).
        let (r, w) = pipe(0);
        let id = identity(&r);
        let proto = read_pipe(lp, ReadRec::default(), r);
        spin(lp, QUIET);
        assert_eq!(holders(id), 2, "both ends open");
        let transport = proto.borrow().transport.clone().unwrap();
        transport.close();
        assert!(run_until(lp, WAIT, || proto.borrow().lost()));
        assert_eq!(proto.borrow().lost_errno(), Some(None));
        assert!(run_until(lp, WAIT, || holders(id) == 1), "only our write end is left");
        let err = std::fs::File::from(w).write_all(b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE), "the read end is really closed");
        assert_eq!(proto.borrow().data, b"");
        proto.borrow().check();
    }

    fn eof_while_paused_is_delivered_on_resume(lp) {
        let (r, w) = pipe(0);
        let proto = read_pipe(lp, ReadRec::default(), r);
        let transport = proto.borrow().transport.clone().unwrap();
        write_all(&w, b"xy");
        assert!(run_until(lp, WAIT, || proto.borrow().data.len() == 2));
        transport.pause_reading();
        drop(w);
        spin(lp, QUIET);
        assert!(!proto.borrow().lost(), "EOF held while paused");
        transport.resume_reading();
        assert!(run_until(lp, WAIT, || proto.borrow().lost()));
        assert_eq!(proto.borrow().events[proto.borrow().events.len() - 2], Ev::Eof);
        proto.borrow().check();
    }

    fn read_error_is_fatal_and_reported(lp) {
        // Item 143: a read OSError → "Fatal read error on pipe transport", closed with it.
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let errors = capture_error_texts(lp);
        let proto = read_pipe(lp, ReadRec::default(), a.try_clone().unwrap());
        // `b` closes with a byte unread: its peer's next read fails with ECONNRESET.
        (&a).write_all(b"u").unwrap();
        drop(b);
        assert!(run_until(lp, WAIT, || proto.borrow().lost()));
        assert_eq!(proto.borrow().lost_errno(), Some(Some(libc::ECONNRESET)));
        assert!(!proto.borrow().events.contains(&Ev::Eof));
        let errors = errors.borrow();
        assert!(
            errors.len() == 1 && errors[0].contains("Fatal read error on pipe transport"),
            "{errors:?}"
        );
        proto.borrow().check();
    }

    fn panic_in_data_received_closes_the_pipe(lp) {
        let (r, w) = pipe(0);
        let errors = capture_error_texts(lp);
        let rec = ReadRec { panic_on_data: true, ..ReadRec::default() };
        let proto = read_pipe(lp, rec, r);
        write_all(&w, b"boom");
        assert!(run_until(lp, WAIT, || proto.borrow().lost()));
        assert_eq!(proto.borrow().lost_errno(), Some(Some(-1)), "lost with the panic");
        assert!(errors.borrow().iter().any(|e| e.contains("protocol.data_received() call failed")));
        proto.borrow().check();
    }

    fn a_regular_file_is_refused(lp) {
        let dir = TempDir::for_test(lp, "regular");
        let file = std::fs::File::create(dir.0.join("f")).unwrap();
        let id = identity(&file);
        let lp2 = lp.clone();
        let result = lp
            .run_until_complete(async move {
                lp2.connect_read_pipe(ReadRec::default, file).await.map(|_| ())
            })
            .unwrap();
        match result {
            Err(Error::InvalidArgument { message: msg, .. }) => assert!(msg.contains("pipes/sockets only"), "{msg}"),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        assert_eq!(holders(id), 0, "the refused file is closed");
        let dir_fd = std::fs::File::open(&dir.0).unwrap();
        let lp2 = lp.clone();
        let result = lp
            .run_until_complete(async move {
                lp2.connect_write_pipe(WriteRec::default, dir_fd).await.map(|_| ())
            })
            .unwrap();
        assert!(matches!(result, Err(Error::InvalidArgument { .. })), "{result:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Write pipes: items 141 and 142.

backend_tests! {
    fn write_pipe_writes_arrive_in_order(lp) {
        // Item 141 (test_write_pipe), with enough data to fill the pipe many times over.
        let (r, w) = pipe(0);
        let id = identity(&w);
        let raw = w.as_raw_fd();
        let (transport, proto) = write_pipe(lp, w);
        assert!(is_nonblocking(raw), "the pipe was made non-blocking");
        assert!(transport.can_write_eof());
        assert!(transport.get_extra_info("pipe").is_some());
        let data = pattern(1_000_000);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            std::fs::File::from(r).read_to_end(&mut got).unwrap();
            got
        });
        for chunk in data.chunks(3_333) {
            transport.write(chunk);
        }
        transport.writelines([&b""[..], &b"!"[..]]);
        transport.write_bytes(bytes::Bytes::from_static(b"?"));
        transport.close();
        assert!(transport.is_closing());
        assert!(run_until(lp, WAIT, || proto.borrow().lost_errno().is_some()));
        assert_eq!(proto.borrow().lost_errno(), Some(None));
        let got = join_reader(lp, reader);
        assert_eq!(got.len(), data.len() + 2);
        assert!(got[..data.len()] == data[..] && &got[data.len()..] == b"!?", "in order");
        spin(lp, QUIET);
        proto.borrow().check();
        assert_eq!(holders(id), 0, "the write end is closed");
    }

    fn write_pipe_notices_its_reader_closing(lp) {
        // Item 141 (test_write_pipe_disconnect_on_close): nothing written, the reader goes.
        let (r, w) = pipe(0);
        let id = identity(&w);
        let (transport, proto) = write_pipe(lp, w);
        spin(lp, QUIET);
        assert_eq!(proto.borrow().events, [Ev::Made]);
        drop(r);
        assert!(run_until(lp, WAIT, || proto.borrow().lost_errno().is_some()));
        // asyncio's `_read_ready`: nothing was buffered, so a clean close.
        assert_eq!(proto.borrow().lost_errno(), Some(None), "nothing buffered: no error");
        assert!(transport.is_closing());
        spin(lp, QUIET);
        proto.borrow().check();
        assert_eq!(holders(id), 0);
    }

    fn write_pipe_closed_by_its_reader_with_data_buffered(lp) {
        let (r, w) = pipe(0);
        let (transport, proto) = write_pipe(lp, w);
        transport.write(&pattern(500_000));
        spin(lp, QUIET);
        assert!(transport.get_write_buffer_size() > 0, "a pipe holds less than 500 KB");
        drop(r);
        assert!(run_until(lp, WAIT, || proto.borrow().lost_errno().is_some()));
        assert_eq!(proto.borrow().lost_errno(), Some(Some(libc::EPIPE)));
        assert_eq!(proto.borrow().buffer_at_lost, Some(0), "the buffer is dropped");
        proto.borrow().check();
    }

    fn a_write_after_the_reader_left_fails_with_epipe(lp) {
        let (r, w) = pipe(0);
        let (transport, proto) = write_pipe(lp, w);
        let errors = capture_error_texts(lp);
        drop(r);
        transport.write(b"into the void"); // before the loop saw anything
        assert!(transport.is_closing(), "the direct write failed and closed the transport");
        for _ in 0..6 {
            transport.write(b"lost"); // counted, dropped
        }
        assert!(run_until(lp, WAIT, || proto.borrow().lost_errno().is_some()));
        assert_eq!(proto.borrow().lost_errno(), Some(Some(libc::EPIPE)));
        assert!(errors.borrow().is_empty(), "an OS error is not sent to the handler");
        spin(lp, QUIET);
        proto.borrow().check();
    }

    fn flow_control_with_a_reader_that_does_not_read(lp) {
        let (r, w) = pipe(0);
        let (transport, proto) = write_pipe(lp, w);
        assert_eq!(transport.get_write_buffer_limits(), (16 * 1024, 64 * 1024));
        assert!(matches!(
            transport.set_write_buffer_limits(Some(1), Some(2)),
            Err(Error::InvalidArgument { .. })
        ));
        transport.set_write_buffer_limits(Some(8192), None).unwrap();
        assert_eq!(transport.get_write_buffer_limits(), (2048, 8192));
        let data = pattern(400_000);
        for chunk in data.chunks(1000) {
            transport.write(chunk);
        }
        spin(lp, QUIET);
        assert_eq!(proto.borrow().count(&Ev::Pause), 1, "{:?}", proto.borrow().events);
        assert_eq!(proto.borrow().count(&Ev::Resume), 0);
        let buffered = transport.get_write_buffer_size();
        assert!(buffered > 8192, "buffered {buffered}");
        // Now read it all: resume_writing comes once the buffer drains to the low mark.
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            std::fs::File::from(r).read_to_end(&mut got).unwrap();
            got
        });
        assert!(run_until(lp, WAIT, || transport.get_write_buffer_size() == 0));
        assert_eq!(proto.borrow().count(&Ev::Resume), 1, "{:?}", proto.borrow().events);
        transport.write_eof();
        assert!(run_until(lp, WAIT, || proto.borrow().lost_errno().is_some()));
        assert!(join_reader(lp, reader) == data, "all bytes, in order");
        proto.borrow().check();
    }

    fn lowering_the_high_mark_pauses_at_once(lp) {
        let (_r, w) = pipe(0);
        let (transport, proto) = write_pipe(lp, w);
        transport.write(&pattern(200_000));
        assert!(transport.get_write_buffer_size() > 1000);
        assert_eq!(proto.borrow().count(&Ev::Pause), 1, "200 KB > 64 KiB high mark");
        transport.abort();
        assert!(run_until(lp, WAIT, || proto.borrow().lost_errno().is_some()));
        let (_r, w) = pipe(0);
        let (transport, proto) = write_pipe(lp, w);
        transport.write(&pattern(70_000)); // the pipe takes 64 KiB, 4464 bytes buffered
        assert_eq!(proto.borrow().count(&Ev::Pause), 0);
        transport.set_write_buffer_limits(Some(100), None).unwrap();
        assert_eq!(proto.borrow().count(&Ev::Pause), 1);
        transport.abort();
        assert!(run_until(lp, WAIT, || proto.borrow().lost_errno().is_some()));
        proto.borrow().check();
    }

    fn write_eof_with_pending_data_waits_for_the_drain(lp) {
        // Item 142: close() = write_eof(); connection_lost only after the flush; twice is fine.
        let (r, w) = pipe(0);
        let (transport, proto) = write_pipe(lp, w);
        let data = pattern(200_000);
        transport.write(&data);
        transport.close();
        transport.close();
        transport.write_eof();
        transport.write(b"after close"); // dropped
        spin(lp, QUIET);
        assert_eq!(proto.borrow().lost_errno(), None, "not lost while data is pending");
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            std::fs::File::from(r).read_to_end(&mut got).unwrap();
            got
        });
        assert!(run_until(lp, WAIT, || proto.borrow().lost_errno().is_some()));
        assert_eq!(proto.borrow().lost_errno(), Some(None));
        assert!(join_reader(lp, reader) == data, "exactly the data written before close");
        proto.borrow().check();
    }

    fn writes_after_close_are_dropped_and_logged_from_the_sixth(lp) {
        // Item 142 (and 106's threshold): lost writes are counted, a warning after 5.
        let (r, w) = pipe(0);
        let (transport, proto) = write_pipe(lp, w);
        let text = "write: the pipe is closed or closing; the data is dropped";
        let before = my_warnings(text);
        transport.close();
        for _ in 0..5 {
            transport.write(b"lost");
        }
        assert_eq!(my_warnings(text), before, "five lost writes are not logged");
        transport.write(b"lost");
        assert_eq!(my_warnings(text), before + 1, "the sixth is");
        assert!(run_until(lp, WAIT, || proto.borrow().lost_errno().is_some()));
        let mut got = Vec::new();
        std::fs::File::from(r).read_to_end(&mut got).unwrap();
        assert!(got.is_empty(), "nothing was written: {got:?}");
        proto.borrow().check();
    }

    fn abort_drops_the_buffer(lp) {
        // Item 142: abort() drops the buffer and calls connection_lost(None) without writing.
        let (r, w) = pipe(0);
        let id = identity(&r);
        let (transport, proto) = write_pipe(lp, w);
        transport.write(&pattern(300_000));
        let buffered = transport.get_write_buffer_size();
        assert!(buffered > 0);
        transport.abort();
        transport.abort();
        assert_eq!(transport.get_write_buffer_size(), 0);
        assert!(run_until(lp, WAIT, || proto.borrow().lost_errno().is_some()));
        assert_eq!(proto.borrow().lost_errno(), Some(None));
        let mut got = Vec::new();
        std::fs::File::from(r).read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), 300_000 - buffered, "only what the pipe took at once");
        proto.borrow().check();
        assert_eq!(holders(id), 0);
    }

    fn writes_to_a_cat_child_come_back_in_order(lp) {
        use std::process::{Command, Stdio};
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn cat");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (writer, wproto) = write_pipe(lp, stdin);
        let rproto = read_pipe(lp, ReadRec::default(), stdout);
        let mut expected = Vec::new();
        for i in 0..5000 {
            let line = format!("line {i}\n");
            expected.extend_from_slice(line.as_bytes());
            writer.write(line.as_bytes());
        }
        writer.write_eof();
        assert!(run_until(lp, WAIT, || rproto.borrow().lost() && wproto.borrow().lost_errno().is_some()));
        assert!(rproto.borrow().data == expected, "cat echoed every line, in order");
        assert_eq!(wproto.borrow().lost_errno(), Some(None));
        assert!(child.wait().unwrap().success());
        rproto.borrow().check();
        wproto.borrow().check();
    }

    fn a_pty_slave_as_a_write_pipe(lp) {
        // A character device: written, and not watched for readability (its input).
        let (master, slave) = openpty();
        let (transport, proto) = write_pipe(lp, slave);
        write_all(&master, b"input for the tty\n"); // must not close the write pipe
        transport.write(b"to the master");
        // SAFETY: F_SETFL with an int on the open master: reads below must not block.
        unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        let got = RefCell::new(Vec::new());
        let m = std::fs::File::from(master);
        let arrived = run_until(lp, WAIT, || {
            let mut buf = [0u8; 64];
            if let Ok(n) = (&m).read(&mut buf) {
                got.borrow_mut().extend_from_slice(&buf[..n]);
            }
            got.borrow().len() >= 13
        });
        assert!(arrived && &got.borrow()[..] == b"to the master", "{:?}", got.borrow());
        spin(lp, QUIET);
        assert_eq!(proto.borrow().events, [Ev::Made], "still open");
        transport.close();
        assert!(run_until(lp, WAIT, || proto.borrow().lost_errno().is_some()));
        proto.borrow().check();
    }
}
