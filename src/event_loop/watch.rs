//! `add_reader`/`add_writer`: selector semantics (level-triggered) on top of one-shot polls.
//!
//! Each watched direction keeps one `Poll` op in flight. When it completes, the watcher's
//! handle goes to the ready queue and the poll is re-armed at once; the kernel evaluates the
//! re-armed poll at the next driver turn, after the callback ran, so a callback that leaves
//! the fd ready runs again next iteration, as with a selector.

use std::io;
use std::os::fd::RawFd;
use std::rc::{Rc, Weak};

use super::{Completed, EventLoop, ExceptionContext, Handle, Inner, OpOwner, OpTarget, Ready};
use crate::driver::{Interest, Op, OpId};
use crate::error::{ArgumentKind, Error, Result};
use crate::sys::syscall;

/// Which callback of an fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// `add_reader`.
    Read,
    /// `add_writer`.
    Write,
}

impl Direction {
    fn interest(self) -> Interest {
        match self {
            Direction::Read => Interest::READ,
            Direction::Write => Interest::WRITE,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Direction::Read => "add_reader",
            Direction::Write => "add_writer",
        }
    }
}

/// One registered callback and its poll.
pub(crate) struct Watcher {
    /// The repeating callback.
    handle: Handle,
    /// The poll in flight (none between completion and re-arm, or after a failure).
    op: Option<OpId>,
    /// The owner of its polls (one per watcher, shared by every re-arm).
    target: OpOwner,
}

/// The owner of a watch's polls: tells the loop which fd and direction fired.
struct WatchTarget {
    /// The loop.
    event_loop: Weak<Inner>,
    /// The watched fd.
    fd: RawFd,
    /// Which callback it serves.
    dir: Direction,
}

impl OpTarget for WatchTarget {
    fn complete(self: Rc<Self>, done: Completed) {
        debug_assert!(!done.more(), "watch polls are one-shot");
        let Completed { id, result, .. } = done;
        if let Some(inner) = self.event_loop.upgrade() {
            EventLoop { inner }.on_watch_ready(self.fd, self.dir, id, result);
        }
    }
}

/// What is watched on one fd.
#[derive(Default)]
pub(crate) struct FdWatch {
    /// The `add_reader` callback.
    reader: Option<Watcher>,
    /// The `add_writer` callback.
    writer: Option<Watcher>,
}

impl FdWatch {
    fn slot(&mut self, dir: Direction) -> &mut Option<Watcher> {
        match dir {
            Direction::Read => &mut self.reader,
            Direction::Write => &mut self.writer,
        }
    }
}

/// Checks that `fd` is open and can be watched: not a regular file or a directory, which
/// epoll refuses (`EPERM`) and asyncio's selector loop too (`PermissionError`). The io_uring
/// poll would accept them, always ready; both backends refuse them alike.
fn check_fd(fd: RawFd, what: &str) -> Result<()> {
    if fd < 0 {
        return Err(Error::invalid_argument(
            ArgumentKind::UnsuitableFd,
            format!("{what}: invalid file descriptor {fd}"),
        ));
    }
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // Not nix's `fstat`: it takes an `AsFd`, which promises an open fd, and whether `fd` is
    // open is what this asks.
    // SAFETY: `stat` is a writable `struct stat` for fstat to fill; fstat only inspects the
    // descriptor table (EBADF for a number that is not open).
    syscall!(unsafe { libc::fstat(fd, stat.as_mut_ptr()) })
        .map_err(|err| Error::io(format!("{what}(fd {fd}): not an open file descriptor"), err))?;
    // SAFETY: fstat succeeded, so it filled `stat`.
    let file_type = match unsafe { stat.assume_init() }.st_mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        _ => return Ok(()),
    };
    let why = format!(
        "{what}(fd {fd}): fd {fd} is {file_type}, which is always ready and cannot be watched \
         (epoll refuses it; read it directly, or in run_in_executor)"
    );
    Err(Error::io(why, io::Error::from_raw_os_error(libc::EPERM)))
}

impl EventLoop {
    /// Calls `callback` whenever `fd` is readable, until [`remove_reader`](Self::remove_reader)
    /// (asyncio's `add_reader`). Registering again replaces the callback. The fd's blocking
    /// mode is left as it is. An fd that is not open gives an error, and so does a regular
    /// file or a directory ([`Error::Io`] of kind `PermissionDenied`, `EPERM`, as asyncio's
    /// selector loop raises `PermissionError`: such an fd is always ready).
    pub fn add_reader<F: FnMut() + 'static>(&self, fd: RawFd, callback: F) -> Result<()> {
        self.add_watch(fd, Direction::Read, Handle::repeating(callback))
    }

    /// Calls `callback` whenever `fd` is writable (asyncio's `add_writer`).
    pub fn add_writer<F: FnMut() + 'static>(&self, fd: RawFd, callback: F) -> Result<()> {
        self.add_watch(fd, Direction::Write, Handle::repeating(callback))
    }

    /// Stops watching `fd` for reading; true if it was watched (false after close).
    pub fn remove_reader(&self, fd: RawFd) -> bool {
        self.remove_watch(fd, Direction::Read)
    }

    /// Stops watching `fd` for writing; true if it was watched (false after close).
    pub fn remove_writer(&self, fd: RawFd) -> bool {
        self.remove_watch(fd, Direction::Write)
    }

    fn add_watch(&self, fd: RawFd, dir: Direction, handle: Handle) -> Result<()> {
        self.check_open()?;
        check_fd(fd, dir.name())?;
        let old = {
            let mut watches = self.inner.watches.borrow_mut();
            let slot = watches.entry(fd).or_default().slot(dir);
            match slot {
                Some(watcher) => {
                    let old = std::mem::replace(&mut watcher.handle, handle);
                    if watcher.op.is_none() {
                        watcher.op = self.arm(fd, dir, &watcher.target);
                    }
                    Some(old)
                }
                None => {
                    let event_loop = Rc::downgrade(&self.inner);
                    let target: OpOwner = Rc::new(WatchTarget { event_loop, fd, dir });
                    let op = self.arm(fd, dir, &target);
                    *slot = Some(Watcher { handle, op, target });
                    None
                }
            }
        };
        if let Some(old) = old {
            old.cancel();
        }
        Ok(())
    }

    fn arm(&self, fd: RawFd, dir: Direction, target: &OpOwner) -> Option<OpId> {
        let op = Op::Poll { fd, interest: dir.interest() };
        self.with_driver(|driver| driver.submit(op, target.clone()))
    }

    fn remove_watch(&self, fd: RawFd, dir: Direction) -> bool {
        let (removed, unwatched) = {
            let mut watches = self.inner.watches.borrow_mut();
            let Some(entry) = watches.get_mut(&fd) else { return false };
            let removed = entry.slot(dir).take();
            let unwatched = entry.reader.is_none() && entry.writer.is_none();
            if unwatched {
                watches.remove(&fd);
            }
            (removed, unwatched)
        };
        let Some(watcher) = removed else { return false };
        self.with_driver(|driver| {
            if let Some(op) = watcher.op {
                driver.cancel(op);
            }
            if unwatched {
                driver.forget_fd(fd);
            }
        });
        watcher.handle.cancel();
        true
    }

    /// A watch poll completed: queue the callback and re-arm, or drop a cancelled watch.
    fn on_watch_ready(&self, fd: RawFd, dir: Direction, id: OpId, result: io::Result<u32>) {
        let handle = {
            let mut watches = self.inner.watches.borrow_mut();
            let Some(watcher) = watches.get_mut(&fd).and_then(|e| e.slot(dir).as_mut()) else {
                return;
            };
            if watcher.op != Some(id) {
                return;
            }
            watcher.op = None;
            if result.is_ok() && !watcher.handle.cancelled() {
                watcher.op = self.arm(fd, dir, &watcher.target);
            }
            watcher.handle.clone()
        };
        match result {
            Ok(_) if !handle.cancelled() => {
                self.inner.ready.borrow_mut().push_back(Ready::Handle(handle));
            }
            Ok(_) => {
                self.remove_watch(fd, dir);
            }
            Err(err) => {
                self.remove_watch(fd, dir);
                let context = ExceptionContext {
                    fd: Some(fd),
                    ..ExceptionContext::new(format!("{} watch on fd {fd} failed", dir.name()))
                        .with_error(Error::io(format!("polling fd {fd}"), err))
                        .with_handle(handle)
                };
                self.call_exception_handler(context);
            }
        }
    }
}
