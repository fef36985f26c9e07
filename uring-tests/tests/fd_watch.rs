//! `add_reader`, `add_writer`, `remove_reader`, `remove_writer`: BEHAVIOURS section 6 (items
//! 43–48) and the fd part of item 11, on every backend built in.
//!
//! Not applicable / not yet:
//! * BEHAVIOURS 46, first half ("an object with no fileno → ValueError"): impossible by types,
//!   the methods take a `RawFd`. What does translate (a negative fd → `InvalidArgument`, the
//!   ValueError analogue) is tested below.
//! * BEHAVIOURS 46, second half ("an fd owned by a transport → RuntimeError"): not yet — ringloop
//!   has no transports; the test comes with them.
//! * BEHAVIOURS 47 does not exist (gap in the numbering).
//!
//! Every wait is bounded (`run_until` with a timeout); "does not fire" is checked by running
//! the loop for a fixed short time.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;

use ringloop::{Error, EventLoop};
use uring_tests::{backend_tests, capture_error_texts, is_open, run_until, socketpair, spin};

/// Generous bound for "this must happen" waits (2 shared cores).
const WAIT: f64 = 5.0;
/// How long "this must not happen" is watched for.
const QUIET: f64 = 0.05;

fn counter() -> Rc<Cell<usize>> {
    Rc::new(Cell::new(0))
}

/// A callback that counts its calls in `count`.
fn bump(count: &Rc<Cell<usize>>) -> impl FnMut() + 'static {
    let count = count.clone();
    move || count.set(count.get() + 1)
}

/// Reads everything available from a non-blocking socket; returns the byte count.
fn drain(sock: &UnixStream) -> usize {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match (&*sock).read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return total,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Writes into a non-blocking socket until the kernel refuses more.
fn fill(sock: &UnixStream) {
    let chunk = [0u8; 65536];
    loop {
        match (&*sock).write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => panic!("write: {e}"),
        }
    }
}

/// A pipe `(read end, write end)`; `flags` as for `pipe2` (0 = blocking).
fn pipe(flags: libc::c_int) -> (File, File) {
    let (r, w) = uring_tests::pipe(flags);
    (File::from(r), File::from(w))
}

/// The fd's status flags (`F_GETFL`).
fn status_flags(fd: RawFd) -> libc::c_int {
    // SAFETY: F_GETFL only reads the open file description's flags; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert!(flags >= 0, "F_GETFL on fd {fd}: {}", std::io::Error::last_os_error());
    flags
}

/// A descriptor number that was open a moment ago and is closed now, picked high so that no
/// other test thread reuses it meanwhile (new fds take the lowest free number).
/// Each call takes its own base number, so tests running in parallel never pick the same one.
fn just_closed_fd() -> RawFd {
    static NEXT_BASE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(10_000);
    let base = NEXT_BASE.fetch_add(16, std::sync::atomic::Ordering::Relaxed);
    let (a, _b) = socketpair();
    // SAFETY: F_DUPFD_CLOEXEC duplicates the open fd `a` onto the lowest free number >= base;
    // no memory is passed.
    let fd = unsafe { libc::fcntl(a.as_raw_fd(), libc::F_DUPFD_CLOEXEC, base) };
    assert!(fd >= 0, "F_DUPFD_CLOEXEC: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just returned by fcntl and nothing else owns it.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    assert!(!is_open(fd));
    fd
}

/// Raises the soft fd limit to at least `needed` if the hard limit allows; false if it cannot.
fn ensure_fd_limit(needed: u64) -> bool {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return false;
    }
    if lim.rlim_cur >= needed {
        return true;
    }
    if lim.rlim_max < needed {
        return false;
    }
    lim.rlim_cur = needed;
    // SAFETY: `lim` is a valid rlimit with rlim_cur <= rlim_max.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 }
}

/// One direction of an fd watch, for the tests that do the same to readers and writers.
#[derive(Clone, Copy, Debug)]
enum Side {
    Reader,
    Writer,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Reader => Side::Writer,
            Side::Writer => Side::Reader,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Side::Reader => "reader",
            Side::Writer => "writer",
        }
    }

    fn add(self, lp: &EventLoop, fd: RawFd, callback: impl FnMut() + 'static) {
        match self {
            Side::Reader => lp.add_reader(fd, callback).unwrap(),
            Side::Writer => lp.add_writer(fd, callback).unwrap(),
        }
    }

    fn remove(self, lp: &EventLoop, fd: RawFd) -> bool {
        match self {
            Side::Reader => lp.remove_reader(fd),
            Side::Writer => lp.remove_writer(fd),
        }
    }
}

/// BEHAVIOURS 44: a new `side` callback replaces the old one (cancelled: never runs again,
/// its captures dropped at once) and keeps the other side's.
fn add_again_replaces_and_keeps_the_other(lp: &EventLoop, side: Side) {
    let (name, other_name) = (side.name(), side.other().name());
    let (a, b) = socketpair();
    let fd = a.as_raw_fd();
    (&b).write_all(b"data").unwrap();
    let token = Rc::new(());
    let (first, second, other) = (counter(), counter(), counter());
    {
        let (token, first) = (token.clone(), first.clone());
        side.add(lp, fd, move || {
            let _keep = &token;
            first.set(first.get() + 1);
        });
    }
    side.other().add(lp, fd, bump(&other));
    assert!(run_until(lp, WAIT, || first.get() >= 1 && other.get() >= 1));
    side.add(lp, fd, bump(&second));
    assert_eq!(Rc::strong_count(&token), 1, "the replaced {name}'s captures were kept");
    let first_at_replace = first.get();
    let other_at_replace = other.get();
    assert!(
        run_until(lp, WAIT, || second.get() >= 3 && other.get() >= other_at_replace + 3),
        "after the replacement: second {name} {} calls, {other_name} {} new calls",
        second.get(),
        other.get() - other_at_replace
    );
    assert_eq!(first.get(), first_at_replace, "the replaced {name} ran again");
    assert!(side.remove(lp, fd));
    assert!(side.other().remove(lp, fd));
}

/// BEHAVIOURS 44: removing the `side` callback of an fd with both keeps the other working.
fn remove_keeps_the_other(lp: &EventLoop, side: Side) {
    let (a, b) = socketpair();
    let fd = a.as_raw_fd();
    (&b).write_all(b"data").unwrap();
    let (reader, writer) = (counter(), counter());
    lp.add_reader(fd, bump(&reader)).unwrap();
    lp.add_writer(fd, bump(&writer)).unwrap();
    assert!(run_until(lp, WAIT, || reader.get() >= 1 && writer.get() >= 1));
    assert!(side.remove(lp, fd));
    let (removed, kept) = match side {
        Side::Reader => (&reader, &writer),
        Side::Writer => (&writer, &reader),
    };
    let (r, k) = (removed.get(), kept.get());
    assert!(
        run_until(lp, WAIT, || kept.get() >= k + 3),
        "{} stopped with the {}",
        side.other().name(),
        side.name()
    );
    assert_eq!(removed.get(), r, "the removed {} ran", side.name());
    assert!(side.other().remove(lp, fd));
}

backend_tests! {
    // BEHAVIOURS 43
    fn reader_fires_on_readability(lp) {
        let (a, b) = socketpair();
        let a = Rc::new(a);
        let got = Rc::new(RefCell::new(Vec::new()));
        let calls = counter();
        {
            let (a, got, calls) = (a.clone(), got.clone(), calls.clone());
            lp.add_reader(a.as_raw_fd(), move || {
                calls.set(calls.get() + 1);
                let mut buf = [0u8; 16];
                if let Ok(n) = (&*a).read(&mut buf) {
                    got.borrow_mut().extend_from_slice(&buf[..n]);
                }
            })
            .unwrap();
        }
        spin(lp, QUIET);
        assert_eq!(calls.get(), 0, "the reader ran before the fd was readable");
        (&b).write_all(b"xyz").unwrap();
        assert!(run_until(lp, WAIT, || !got.borrow().is_empty()), "reader never ran");
        assert_eq!(&got.borrow()[..], b"xyz");
        assert!(lp.remove_reader(a.as_raw_fd()));
    }

    // BEHAVIOURS 43
    fn writer_fires_on_writable_socket(lp) {
        let (a, _b) = socketpair();
        let calls = counter();
        lp.add_writer(a.as_raw_fd(), bump(&calls)).unwrap();
        assert!(run_until(lp, WAIT, || calls.get() >= 1), "writer never ran");
        assert!(lp.remove_writer(a.as_raw_fd()));
    }

    // BEHAVIOURS 43: a writer waits while the socket buffer is full, fires once it drains.
    fn writer_waits_for_buffer_space(lp) {
        let (a, b) = socketpair();
        fill(&a);
        let calls = counter();
        lp.add_writer(a.as_raw_fd(), bump(&calls)).unwrap();
        spin(lp, QUIET);
        assert_eq!(calls.get(), 0, "the writer ran while the send buffer was full");
        drain(&b);
        assert!(run_until(lp, WAIT, || calls.get() >= 1), "writer never ran after the drain");
        assert!(lp.remove_writer(a.as_raw_fd()));
    }

    // BEHAVIOURS 43
    fn remove_returns_true_then_false(lp) {
        let (a, b) = socketpair();
        let fd = a.as_raw_fd();
        lp.add_reader(fd, || {}).unwrap();
        lp.add_writer(fd, || {}).unwrap();
        assert!(lp.remove_reader(fd));
        assert!(!lp.remove_reader(fd));
        assert!(lp.remove_writer(fd));
        assert!(!lp.remove_writer(fd));
        // Unknown fds: open but never watched, not open, negative.
        assert!(!lp.remove_reader(b.as_raw_fd()));
        assert!(!lp.remove_writer(b.as_raw_fd()));
        assert!(!lp.remove_reader(999_999));
        assert!(!lp.remove_writer(999_999));
        assert!(!lp.remove_reader(-1));
        assert!(!lp.remove_writer(-1));
    }

    // BEHAVIOURS 43: removing the direction that is not watched returns false and leaves the
    // watched one alone.
    fn remove_other_direction_keeps_watch(lp) {
        let (a, b) = socketpair();
        let calls = counter();
        lp.add_reader(a.as_raw_fd(), bump(&calls)).unwrap();
        assert!(!lp.remove_writer(a.as_raw_fd()));
        (&b).write_all(b"x").unwrap();
        assert!(run_until(lp, WAIT, || calls.get() >= 1), "reader lost by remove_writer");
        assert!(lp.remove_reader(a.as_raw_fd()));
    }

    // BEHAVIOURS 44: a new reader replaces the old one (cancelled: never runs again, its
    // captures dropped at once) and keeps the writer.
    fn add_reader_again_replaces_and_keeps_writer(lp) {
        add_again_replaces_and_keeps_the_other(lp, Side::Reader);
    }

    // BEHAVIOURS 44: writers behave the same way.
    fn add_writer_again_replaces_and_keeps_reader(lp) {
        add_again_replaces_and_keeps_the_other(lp, Side::Writer);
    }

    // BEHAVIOURS 44: removing the reader of an fd with both keeps the writer working.
    fn remove_reader_keeps_writer(lp) {
        remove_keeps_the_other(lp, Side::Reader);
    }

    // BEHAVIOURS 44: and the other way round.
    fn remove_writer_keeps_reader(lp) {
        remove_keeps_the_other(lp, Side::Writer);
    }

    // BEHAVIOURS 45: handles cannot be cancelled by hand here (add_reader returns none), so a
    // "cancelled handle" is one removed while its readiness is already queued: two readers
    // ready together, each removing the other. Whichever runs first, the other never runs.
    fn reader_removed_while_ready_does_not_run(lp) {
        let (a1, b1) = socketpair();
        let (a2, b2) = socketpair();
        (&b1).write_all(b"1").unwrap();
        (&b2).write_all(b"2").unwrap();
        let (fd1, fd2) = (a1.as_raw_fd(), a2.as_raw_fd());
        let (c1, c2) = (counter(), counter());
        let removed_other = Rc::new(RefCell::new(Vec::new()));
        for (own, other, sock, count) in [(fd1, fd2, a1, c1.clone()), (fd2, fd1, a2, c2.clone())] {
            let (lp2, removed_other) = (lp.clone(), removed_other.clone());
            lp.add_reader(own, move || {
                count.set(count.get() + 1);
                drain(&sock);
                removed_other.borrow_mut().push(lp2.remove_reader(other));
            })
            .unwrap();
        }
        assert!(run_until(lp, WAIT, || c1.get() + c2.get() >= 1));
        spin(lp, QUIET);
        let mut counts = [c1.get(), c2.get()];
        counts.sort_unstable();
        assert_eq!(counts, [0, 1], "exactly one reader may run, once: {c1:?} {c2:?}");
        assert_eq!(*removed_other.borrow(), [true], "the first removal finds the other reader");
        let left = if c1.get() == 1 { fd1 } else { fd2 };
        let gone = if c1.get() == 1 { fd2 } else { fd1 };
        assert!(!lp.remove_reader(gone), "the removed direction is still registered");
        assert!(lp.remove_reader(left));
    }

    // BEHAVIOURS 45: the same with a replacement: the old, already-ready handle of the other fd
    // is skipped (and its captures dropped); the new one runs.
    fn reader_replaced_while_ready_runs_new_callback_only(lp) {
        let (a1, b1) = socketpair();
        let (a2, b2) = socketpair();
        (&b1).write_all(b"1").unwrap();
        (&b2).write_all(b"2").unwrap();
        let socks = [Rc::new(a1), Rc::new(a2)];
        let fds = [socks[0].as_raw_fd(), socks[1].as_raw_fd()];
        let (old, new) = (counter(), counter());
        let token = Rc::new(());
        for i in 0..2 {
            let (lp2, old, new, token) = (lp.clone(), old.clone(), new.clone(), token.clone());
            let own = socks[i].clone();
            let other = socks[1 - i].clone();
            lp.add_reader(fds[i], move || {
                let _keep = &token;
                old.set(old.get() + 1);
                drain(&own);
                let (new, other2) = (new.clone(), other.clone());
                lp2.add_reader(other.as_raw_fd(), move || {
                    new.set(new.get() + 1);
                    drain(&other2);
                })
                .unwrap();
            })
            .unwrap();
        }
        assert!(run_until(lp, WAIT, || new.get() >= 1), "the replacing reader never ran");
        spin(lp, QUIET);
        assert_eq!(old.get(), 1, "the replaced (already ready) reader ran");
        assert_eq!(new.get(), 1, "the new reader ran again after draining its fd");
        // The first reader still lives (one token copy in it), the replaced one was dropped.
        assert_eq!(Rc::strong_count(&token), 2, "the replaced reader's captures were kept");
        assert!(lp.remove_reader(fds[0]));
        assert!(lp.remove_reader(fds[1]));
        assert_eq!(Rc::strong_count(&token), 1);
    }

    // BEHAVIOURS 45, literally: a reader's handle reaches user code through the exception
    // handler's context; cancelling it there makes the next readiness event unregister the
    // read direction instead of running the callback. The writer of the same fd stays.
    fn cancelled_handle_unregisters_its_direction(lp) {
        let (a, b) = socketpair();
        let fd = a.as_raw_fd();
        (&b).write_all(b"stays unread").unwrap();
        let cancelled = Rc::new(Cell::new(0));
        {
            let cancelled = cancelled.clone();
            lp.set_exception_handler(Some(move |_: &EventLoop, ctx: &ringloop::ExceptionContext| {
                if let Some(handle) = &ctx.handle {
                    handle.cancel();
                    cancelled.set(cancelled.get() + 1);
                }
            }));
        }
        let (reader, writer) = (counter(), counter());
        let token = Rc::new(());
        {
            let (reader, token) = (reader.clone(), token.clone());
            lp.add_reader(fd, move || {
                let _keep = &token;
                reader.set(reader.get() + 1);
                panic!("reader fails so that its handle reaches the exception handler");
            })
            .unwrap();
        }
        lp.add_writer(fd, bump(&writer)).unwrap();
        assert!(run_until(lp, WAIT, || cancelled.get() >= 1), "the reader never ran");
        let w = writer.get();
        assert!(run_until(lp, WAIT, || writer.get() >= w + 3), "the writer stopped");
        assert_eq!(reader.get(), 1, "a cancelled reader handle ran");
        assert_eq!(cancelled.get(), 1);
        assert_eq!(Rc::strong_count(&token), 1, "the cancelled reader's captures were kept");
        assert!(!lp.remove_reader(fd), "the cancelled reader is still registered");
        assert!(lp.remove_writer(fd));
        assert!(
            run_until(lp, WAIT, || lp.ops_in_flight() == 0),
            "{} ops in flight with nothing watched",
            lp.ops_in_flight()
        );
    }

    // BEHAVIOURS 46 (the part that translates): a negative fd is an argument error.
    fn negative_fd_is_invalid_argument(lp) {
        for result in [lp.add_reader(-1, || {}), lp.add_writer(-1, || {})] {
            assert!(
                matches!(result, Err(Error::InvalidArgument { .. })),
                "expected InvalidArgument, got {result:?}"
            );
        }
        assert!(!lp.remove_reader(-1));
        assert!(!lp.remove_writer(-1));
    }

    // BEHAVIOURS 48: add_reader/add_writer leave the fd's blocking mode alone.
    fn watching_keeps_blocking_mode(lp) {
        let (r, w) = pipe(0);
        let r = Rc::new(r);
        let (rfd, wfd) = (r.as_raw_fd(), w.as_raw_fd());
        let (r_flags, w_flags) = (status_flags(rfd), status_flags(wfd));
        assert_eq!(r_flags & libc::O_NONBLOCK, 0);
        assert_eq!(w_flags & libc::O_NONBLOCK, 0);
        let (reader, writer) = (counter(), counter());
        {
            let (r, reader) = (r.clone(), reader.clone());
            lp.add_reader(rfd, move || {
                reader.set(reader.get() + 1);
                let mut buf = [0u8; 16];
                // The data is there, so this blocking read returns at once.
                let _ = (&*r).read(&mut buf);
            })
            .unwrap();
        }
        lp.add_writer(wfd, bump(&writer)).unwrap();
        assert_eq!(status_flags(rfd), r_flags, "add_reader changed the flags");
        assert_eq!(status_flags(wfd), w_flags, "add_writer changed the flags");
        (&w).write_all(b"x").unwrap();
        assert!(run_until(lp, WAIT, || reader.get() >= 1 && writer.get() >= 1));
        assert_eq!(status_flags(rfd), r_flags, "running the reader changed the flags");
        assert_eq!(status_flags(wfd), w_flags, "running the writer changed the flags");
        assert!(lp.remove_reader(rfd));
        assert!(lp.remove_writer(wfd));
        spin(lp, QUIET);
        assert_eq!(status_flags(rfd), r_flags, "remove_reader changed the flags");
        assert_eq!(status_flags(wfd), w_flags, "remove_writer changed the flags");
    }

    // BEHAVIOURS 48: and a non-blocking fd stays non-blocking.
    fn watching_keeps_nonblocking_mode(lp) {
        let (a, _b) = socketpair();
        let fd = a.as_raw_fd();
        let flags = status_flags(fd);
        assert_ne!(flags & libc::O_NONBLOCK, 0);
        let calls = counter();
        lp.add_writer(fd, bump(&calls)).unwrap();
        lp.add_reader(fd, || {}).unwrap();
        assert!(run_until(lp, WAIT, || calls.get() >= 1));
        assert!(lp.remove_writer(fd));
        assert!(lp.remove_reader(fd));
        assert_eq!(status_flags(fd), flags);
    }

    // BEHAVIOURS 11: after close, the watches are gone (captures dropped, the fds left open:
    // the loop does not own them), add_* is refused with Closed and remove_* returns false.
    fn close_drops_watches_and_refuses_new_ones(lp) {
        let (a, b) = socketpair();
        let fd = a.as_raw_fd();
        (&b).write_all(b"x").unwrap();
        let token = Rc::new(());
        let calls = counter();
        {
            let (token, calls) = (token.clone(), calls.clone());
            lp.add_reader(fd, move || {
                let _keep = &token;
                calls.set(calls.get() + 1);
            })
            .unwrap();
        }
        {
            let token = token.clone();
            lp.add_writer(fd, move || {
                let _keep = &token;
            })
            .unwrap();
        }
        assert!(run_until(lp, WAIT, || calls.get() >= 1));
        lp.close().unwrap();
        assert!(lp.is_closed());
        assert_eq!(Rc::strong_count(&token), 1, "close kept the watch callbacks alive");
        assert!(is_open(fd), "close closed a watched fd it does not own");
        assert!(is_open(b.as_raw_fd()));
        assert!(matches!(lp.add_reader(fd, || {}), Err(Error::Closed)));
        assert!(matches!(lp.add_writer(fd, || {}), Err(Error::Closed)));
        assert!(matches!(lp.add_reader(b.as_raw_fd(), || {}), Err(Error::Closed)));
        assert!(!lp.remove_reader(fd));
        assert!(!lp.remove_writer(fd));
        assert!(!lp.remove_reader(b.as_raw_fd()));
        assert_eq!(lp.ops_in_flight(), 0);
        lp.close().unwrap();
    }

    // Level-triggered: a reader that leaves data in the fd runs again at following
    // iterations, and stops once it drains the fd.
    fn reader_is_level_triggered(lp) {
        let (a, b) = socketpair();
        let a = Rc::new(a);
        (&b).write_all(b"level").unwrap();
        let calls = counter();
        let drained_at = Rc::new(Cell::new(None));
        {
            let (a, calls, drained_at) = (a.clone(), calls.clone(), drained_at.clone());
            lp.add_reader(a.as_raw_fd(), move || {
                calls.set(calls.get() + 1);
                if calls.get() == 3 {
                    drained_at.set(Some(drain(&a)));
                }
            })
            .unwrap();
        }
        assert!(
            run_until(lp, WAIT, || drained_at.get().is_some()),
            "an undrained reader did not run again: {} calls",
            calls.get()
        );
        assert_eq!(drained_at.get(), Some(5), "the data was not all there at the third call");
        spin(lp, QUIET);
        assert_eq!(calls.get(), 3, "the reader ran after its fd was drained");
        (&b).write_all(b"more").unwrap();
        assert!(run_until(lp, WAIT, || calls.get() >= 4), "no call for new data after a drain");
        assert!(lp.remove_reader(a.as_raw_fd()));
    }

    // Level-triggered writers: a writable fd keeps firing until the writer is removed.
    fn writer_is_level_triggered(lp) {
        let (a, _b) = socketpair();
        let fd = a.as_raw_fd();
        let calls = counter();
        let removed = Rc::new(Cell::new(None));
        {
            let (lp2, calls, removed) = (lp.clone(), calls.clone(), removed.clone());
            lp.add_writer(fd, move || {
                calls.set(calls.get() + 1);
                if calls.get() == 3 {
                    removed.set(Some(lp2.remove_writer(fd)));
                }
            })
            .unwrap();
        }
        assert!(run_until(lp, WAIT, || removed.get().is_some()), "{} writer calls", calls.get());
        assert_eq!(removed.get(), Some(true));
        spin(lp, QUIET);
        assert_eq!(calls.get(), 3, "the writer ran after removing itself");
    }

    // A callback that removes its own reader is not called again (the fd stays readable), and
    // what it captured is dropped once it returns.
    fn reader_removing_itself_is_not_called_again(lp) {
        let (a, b) = socketpair();
        let fd = a.as_raw_fd();
        (&b).write_all(b"stays unread").unwrap();
        let calls = counter();
        let token = Rc::new(());
        let removed = Rc::new(Cell::new(None));
        {
            let (lp2, calls, removed, token) =
                (lp.clone(), calls.clone(), removed.clone(), token.clone());
            lp.add_reader(fd, move || {
                let _keep = &token;
                calls.set(calls.get() + 1);
                removed.set(Some(lp2.remove_reader(fd)));
            })
            .unwrap();
        }
        assert!(run_until(lp, WAIT, || calls.get() >= 1));
        spin(lp, QUIET);
        assert_eq!(calls.get(), 1, "a reader that removed itself ran again");
        assert_eq!(removed.get(), Some(true));
        assert_eq!(Rc::strong_count(&token), 1, "the removed reader's captures were kept");
        assert!(!lp.remove_reader(fd));
    }

    // A callback that removes its reader and adds a new one for the same fd: the new one runs,
    // the old one never again (the old poll's completion is not mistaken for the new one's).
    fn reader_replacing_itself_from_callback(lp) {
        let (a, b) = socketpair();
        let fd = a.as_raw_fd();
        (&b).write_all(b"stays unread").unwrap();
        let (old, new) = (counter(), counter());
        let steps = Rc::new(RefCell::new(Vec::new()));
        {
            let (lp2, old, new, steps) = (lp.clone(), old.clone(), new.clone(), steps.clone());
            lp.add_reader(fd, move || {
                old.set(old.get() + 1);
                let removed = lp2.remove_reader(fd);
                let added = lp2.add_reader(fd, bump(&new)).map_err(|e| e.to_string());
                steps.borrow_mut().push((removed, added));
            })
            .unwrap();
        }
        assert!(run_until(lp, WAIT, || new.get() >= 3), "new reader: {} calls", new.get());
        assert_eq!(old.get(), 1);
        assert_eq!(*steps.borrow(), [(true, Ok(()))]);
        assert!(lp.remove_reader(fd));
    }

    // A reader callback that registers a reader for another fd.
    fn reader_callback_adds_another_reader(lp) {
        let (a1, b1) = socketpair();
        let (a2, b2) = socketpair();
        let a1 = Rc::new(a1);
        let fd2 = a2.as_raw_fd();
        (&b2).write_all(b"second").unwrap();
        let (first, second) = (counter(), counter());
        {
            let (lp2, a1, first, second) = (lp.clone(), a1.clone(), first.clone(), second.clone());
            lp.add_reader(a1.as_raw_fd(), move || {
                first.set(first.get() + 1);
                drain(&a1);
                lp2.add_reader(fd2, bump(&second)).unwrap();
            })
            .unwrap();
        }
        spin(lp, QUIET);
        assert_eq!(second.get(), 0);
        (&b1).write_all(b"first").unwrap();
        assert!(run_until(lp, WAIT, || second.get() >= 1), "the added reader never ran");
        assert_eq!(first.get(), 1);
        assert!(lp.remove_reader(a1.as_raw_fd()));
        assert!(lp.remove_reader(fd2));
    }

    // An fd number reused right after remove_reader (no loop iteration between: remove, close,
    // a new socket under the same number, add_reader) is watched afresh. With epoll this needs
    // the stale registration dropped at removal time.
    fn fd_number_reused_after_remove(lp) {
        let (a, _b) = socketpair();
        let fd = a.as_raw_fd();
        let old = counter();
        lp.add_reader(fd, bump(&old)).unwrap();
        spin(lp, QUIET);
        assert!(lp.remove_reader(fd));
        let (c, d) = socketpair();
        // The number `fd` is now closed by dup2 (atomically) and refers to `c`'s socket.
        let raw = std::os::fd::IntoRawFd::into_raw_fd(a);
        // SAFETY: dup2 takes two fd numbers, no memory; `raw` was released from `a` above, so
        // nothing else will close it.
        let rc = unsafe { libc::dup2(c.as_raw_fd(), raw) };
        assert_eq!(rc, fd, "dup2: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is open (dup2 succeeded) and owned by nothing else now.
        let reused = unsafe { OwnedFd::from_raw_fd(fd) };
        let new = counter();
        lp.add_reader(fd, bump(&new)).unwrap();
        (&d).write_all(b"new socket").unwrap();
        assert!(run_until(lp, WAIT, || new.get() >= 1), "a reused fd number was never watched");
        assert_eq!(old.get(), 0);
        assert!(lp.remove_reader(fd));
        drop(reused);
    }

    // POLLHUP: closing the peer wakes the reader, whose read returns 0 (EOF).
    fn peer_close_wakes_reader_with_eof(lp) {
        let (a, b) = socketpair();
        let a = Rc::new(a);
        let fd = a.as_raw_fd();
        let reads = Rc::new(RefCell::new(Vec::new()));
        {
            let (lp2, a, reads) = (lp.clone(), a.clone(), reads.clone());
            lp.add_reader(fd, move || {
                let mut buf = [0u8; 16];
                let n = (&*a).read(&mut buf).map_err(|e| e.kind());
                reads.borrow_mut().push(n);
                lp2.remove_reader(fd);
            })
            .unwrap();
        }
        spin(lp, QUIET);
        assert!(reads.borrow().is_empty());
        drop(b);
        assert!(run_until(lp, WAIT, || !reads.borrow().is_empty()), "peer close not seen");
        assert_eq!(*reads.borrow(), [Ok(0)]);
    }

    // An fd that is not open is refused with EBADF, and nothing is registered.
    fn closed_fd_is_refused(lp) {
        for fd in [999_999, just_closed_fd()] {
            let in_flight = lp.ops_in_flight();
            for (what, result) in
                [("add_reader", lp.add_reader(fd, || {})), ("add_writer", lp.add_writer(fd, || {}))]
            {
                match result {
                    Err(err @ Error::Io { .. }) => {
                        assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{what}({fd}): {err}")
                    }
                    other => panic!("{what}({fd}): expected Io(EBADF), got {other:?}"),
                }
            }
            assert_eq!(lp.ops_in_flight(), in_flight, "a refused fd left an op in flight");
            assert!(!lp.remove_reader(fd), "a refused reader was registered");
            assert!(!lp.remove_writer(fd), "a refused writer was registered");
        }
        // The loop still works afterwards.
        let calls = counter();
        let (a, _b) = socketpair();
        lp.add_writer(a.as_raw_fd(), bump(&calls)).unwrap();
        assert!(run_until(lp, WAIT, || calls.get() >= 1));
        assert!(lp.remove_writer(a.as_raw_fd()));
    }

    // As asyncio's selector loop (PermissionError, epoll's EPERM): a regular file or a
    // directory is always ready and is refused on every backend, and nothing is registered.
    fn regular_file_and_directory_are_refused(lp) {
        let file = File::open("/proc/self/exe").unwrap();
        let dir = File::open("/").unwrap();
        for (fd, kind) in [(file.as_raw_fd(), "a regular file"), (dir.as_raw_fd(), "a directory")] {
            let in_flight = lp.ops_in_flight();
            for (what, result) in
                [("add_reader", lp.add_reader(fd, || {})), ("add_writer", lp.add_writer(fd, || {}))]
            {
                let err = result.expect_err(what);
                assert_eq!(err.io_error().map(|e| e.kind()), Some(ErrorKind::PermissionDenied), "{err}");
                assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
                let text = err.to_string();
                assert!(text.starts_with(&format!("{what}(fd {fd}): fd {fd} is {kind}")), "{text}");
                assert!(text.contains("cannot be watched"), "{text}");
            }
            assert_eq!(lp.ops_in_flight(), in_flight, "a refused fd left an op in flight");
            assert!(!lp.remove_reader(fd) && !lp.remove_writer(fd), "a refused fd was registered");
        }
    }

    fn pipe_works(lp) {
        let (r, w) = pipe(libc::O_NONBLOCK);
        let (rfd, wfd) = (r.as_raw_fd(), w.as_raw_fd());
        let got = Rc::new(RefCell::new(Vec::new()));
        {
            let got = got.clone();
            lp.add_reader(rfd, move || {
                let mut buf = [0u8; 16];
                if let Ok(n) = (&r).read(&mut buf) {
                    got.borrow_mut().extend_from_slice(&buf[..n]);
                }
            })
            .unwrap();
        }
        let writes = counter();
        {
            let (lp2, writes) = (lp.clone(), writes.clone());
            lp.add_writer(wfd, move || {
                writes.set(writes.get() + 1);
                (&w).write_all(b"via pipe").unwrap();
                lp2.remove_writer(wfd);
            })
            .unwrap();
        }
        assert!(run_until(lp, WAIT, || got.borrow().len() >= 8), "got {:?}", got.borrow());
        assert_eq!(&got.borrow()[..], b"via pipe");
        assert_eq!(writes.get(), 1);
        assert!(lp.remove_reader(rfd));
    }

    fn eventfd_works(lp) {
        // SAFETY: eventfd takes no pointers; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a fresh eventfd owned by nobody else.
        let efd = Rc::new(unsafe { File::from_raw_fd(fd) });
        let values = Rc::new(RefCell::new(Vec::new()));
        {
            let (efd, values) = (efd.clone(), values.clone());
            lp.add_reader(fd, move || {
                let mut buf = [0u8; 8];
                if (&*efd).read_exact(&mut buf).is_ok() {
                    values.borrow_mut().push(u64::from_ne_bytes(buf));
                }
            })
            .unwrap();
        }
        spin(lp, QUIET);
        assert!(values.borrow().is_empty(), "the reader ran on a zero eventfd");
        (&*efd).write_all(&5u64.to_ne_bytes()).unwrap();
        assert!(run_until(lp, WAIT, || !values.borrow().is_empty()));
        spin(lp, QUIET);
        assert_eq!(*values.borrow(), [5], "the eventfd reader ran again after reading it");
        let writes = counter();
        lp.add_writer(fd, bump(&writes)).unwrap();
        assert!(run_until(lp, WAIT, || writes.get() >= 1));
        assert!(lp.remove_reader(fd));
        assert!(lp.remove_writer(fd));
    }

    // 1000 socketpairs watched at once: every reader fires.
    fn thousand_socketpairs_all_fire(lp) {
        const N: usize = 1000;
        if !ensure_fd_limit(8192) {
            uring_tests::skipped(format_args!("thousand_socketpairs_all_fire: RLIMIT_NOFILE too low for {N} pairs"));
            return;
        }
        let fired = Rc::new(RefCell::new(vec![0usize; N]));
        let mut peers = Vec::with_capacity(N);
        let mut fds = Vec::with_capacity(N);
        for i in 0..N {
            let (a, b) = socketpair();
            let fd = a.as_raw_fd();
            let (lp2, fired) = (lp.clone(), fired.clone());
            lp.add_reader(fd, move || {
                fired.borrow_mut()[i] += 1;
                drain(&a);
                lp2.remove_reader(fd);
            })
            .unwrap();
            peers.push(b);
            fds.push(fd);
        }
        // Let the polls reach the kernel while nothing is ready, then make all ready.
        spin(lp, QUIET);
        assert!(fired.borrow().iter().all(|&n| n == 0));
        for b in &peers {
            (&*b).write_all(b"!").unwrap();
        }
        let all = run_until(lp, 20.0, || fired.borrow().iter().all(|&n| n >= 1));
        let missing = fired.borrow().iter().filter(|&&n| n == 0).count();
        assert!(all, "{missing} of {N} readers never fired");
        spin(lp, QUIET);
        assert!(fired.borrow().iter().all(|&n| n == 1), "a self-removed reader ran twice");
        assert!(
            run_until(lp, WAIT, || lp.ops_in_flight() == 0),
            "{} ops still in flight after every reader removed itself",
            lp.ops_in_flight()
        );
        assert!(fds.iter().all(|&fd| !lp.remove_reader(fd)));
    }

    // No leaked ops: each armed watch holds one op; removing them all brings the count back
    // to zero once the backend has seen the cancellations complete.
    fn remove_leaves_no_ops_in_flight(lp) {
        const N: usize = 100;
        let base = lp.ops_in_flight();
        let mut pairs = Vec::with_capacity(N);
        for i in 0..N {
            let (a, b) = socketpair();
            if i % 2 == 1 {
                // Half of them ready and firing (level-triggered) when removed.
                (&b).write_all(b"x").unwrap();
            }
            lp.add_reader(a.as_raw_fd(), || {}).unwrap();
            pairs.push((a, b));
        }
        // One watched direction = one poll op in flight (re-armed after each completion).
        assert!(
            run_until(lp, WAIT, || lp.ops_in_flight() == base + N),
            "{} ops in flight for {N} watches",
            lp.ops_in_flight()
        );
        for (a, _) in &pairs {
            assert!(lp.remove_reader(a.as_raw_fd()));
        }
        assert!(
            run_until(lp, WAIT, || lp.ops_in_flight() == base),
            "{} ops still in flight after removing all {N} readers",
            lp.ops_in_flight() - base
        );
        // A partial removal leaves exactly the armed watches.
        for (a, _) in &pairs[..10] {
            lp.add_reader(a.as_raw_fd(), || {}).unwrap();
            lp.add_writer(a.as_raw_fd(), || {}).unwrap();
        }
        for (a, _) in &pairs[..10] {
            assert!(lp.remove_writer(a.as_raw_fd()));
        }
        assert!(
            run_until(lp, WAIT, || lp.ops_in_flight() == base + 10),
            "{} ops in flight for 10 readers",
            lp.ops_in_flight()
        );
    }

    // As in asyncio, a reader callback that panics is reported to the exception handler and
    // stays registered.
    fn panicking_reader_is_reported_and_stays(lp) {
        let errors = capture_error_texts(lp);
        let (a, b) = socketpair();
        (&b).write_all(b"x").unwrap();
        let calls = counter();
        {
            let calls = calls.clone();
            lp.add_reader(a.as_raw_fd(), move || {
                calls.set(calls.get() + 1);
                if calls.get() == 1 {
                    panic!("reader failed on purpose");
                }
            })
            .unwrap();
        }
        assert!(run_until(lp, WAIT, || calls.get() >= 3), "{} calls", calls.get());
        let errors = errors.borrow();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("reader failed on purpose"), "{}", errors[0]);
        assert!(lp.remove_reader(a.as_raw_fd()));
    }
}
