//! epoll backend: the io_uring completions, emulated on level-triggered readiness.
// Nothing outside the tests drives `any::Driver` until `event_loop/` exists: drop this then.

use std::collections::HashMap;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use ringloop_fallback::{Events, Poller};
use slab::Slab;

use super::{Completion, EventFd, Op, OpId};

/// The waker's token. An fd's token is the fd itself, which is never negative once registered.
const WAKER_TOKEN: u64 = u64::MAX;
/// Ready fds taken from the kernel per turn; the others stay ready for the next one.
const EVENTS_PER_TURN: usize = 1024;
/// Conditions reported whatever the interest, as io_uring's `POLL_ADD` reports them.
const ALWAYS_REPORTED: u32 = (libc::POLLERR | libc::POLLHUP) as u32;
/// What `poll(2)` says of a file without a poll method (regular file, directory): the kernel's
/// `DEFAULT_POLLMASK`. epoll refuses such files with `EPERM`.
const DEFAULT_POLLMASK: u32 =
    (libc::POLLIN | libc::POLLOUT | libc::POLLRDNORM | libc::POLLWRNORM) as u32;
/// The interest bits that are events; the high bits are epoll flags (`EPOLLET`, `EPOLLONESHOT`,
/// ...) an op must not smuggle in, as registrations are shared and level-triggered.
const EVENT_BITS: u32 = 0xffff;

/// The epoll driver: the contract of `driver/mod.rs` on top of a [`Poller`].
///
/// # Implementation
///
/// epoll allows one registration per fd, while several ops may wait on one fd (a reader and a
/// writer, as with `add_reader` + `add_writer`). So ops are grouped by fd in an [`FdTable`]: each
/// fd has a FIFO list of waiting ops and the event mask registered for it, the union of what its
/// ops wait for. When the fd reports readiness, each waiting op is [attempted](attempt): a `Poll`
/// finishes if the readiness includes what it asked for (or `POLLERR`/`POLLHUP`); an op that
/// does I/O will do its non-blocking syscall there and keep waiting on `EAGAIN`.
///
/// Registrations follow the ops lazily. Finishing or cancelling an op only marks its fd dirty;
/// the next [`turn`](Self::turn) reconciles the dirty fds before it waits (`ADD` a new fd, `MOD`
/// a changed mask, `DEL` an fd nothing waits on). The loop re-arms a `Poll` right after its
/// completion, so in the steady state the mask is unchanged and no `epoll_ctl` is made at all.
/// Level triggering makes a re-armed op see readiness that is still there.
///
/// Verdicts of `epoll_ctl` are completions, as io_uring would give them: `EPERM` (a regular file
/// or directory, always ready for `poll(2)`) finishes the ops with `DEFAULT_POLLMASK`; `EBADF`
/// and any other error finish them with that errno. `ENOENT` on `MOD` means the fd was closed
/// and its number reused: it is added again. A turn with such completions pending does not block.
///
/// Known limit: an fd closed and reused *with an unchanged mask* between two turns (a callback
/// closes fd 7 after its `Poll` completed, accepts a new fd 7 and polls it for reading) keeps a
/// registration the kernel dropped at `close`, and its op never fires. Only a close that the
/// driver sees (an `Op::Close`, or a `forget(fd)` before `close`) can prevent it for free.
#[derive(Debug)]
pub(crate) struct EpollDriver<T> {
    /// The epoll instance.
    poller: Poller,
    /// The buffer each wait fills.
    events: Events,
    /// Interrupts a blocked turn from any thread; registered under [`WAKER_TOKEN`].
    waker: Arc<EventFd>,
    /// Ops in flight and the fds they wait on.
    table: FdTable<T>,
}

impl<T: Clone> EpollDriver<T> {
    /// Creates the epoll instance and registers the waker.
    pub(crate) fn new() -> io::Result<Self> {
        let poller = Poller::new()?;
        let waker = Arc::new(EventFd::new()?);
        poller.add(waker.as_raw_fd(), libc::EPOLLIN as u32, WAKER_TOKEN)?;
        Ok(EpollDriver {
            poller,
            events: Events::with_capacity(EVENTS_PER_TURN),
            waker,
            table: FdTable::default(),
        })
    }

    /// Queues `op`; it is armed (its fd registered) at the next turn.
    pub(crate) fn submit(&mut self, op: Op, owner: T) -> OpId {
        OpId(self.table.submit(op, owner))
    }

    /// Detaches `id` at once: its owner comes back and no completion is ever delivered for it.
    pub(crate) fn cancel(&mut self, id: OpId) -> Option<T> {
        self.table.cancel(id.0)
    }

    /// Reconciles registrations, waits once, and appends the completions to `out`.
    pub(crate) fn turn(
        &mut self,
        timeout: Option<Duration>,
        out: &mut Vec<Completion<T>>,
    ) -> io::Result<()> {
        self.table.reconcile(&self.poller);
        let timeout = if self.table.ready.is_empty() { timeout } else { Some(Duration::ZERO) };
        self.poller.wait(&mut self.events, timeout)?;
        for (token, revents) in &self.events {
            if token == WAKER_TOKEN {
                self.waker.drain()?;
            } else if !self.table.wake(token as RawFd, revents) {
                // Registered under a token the table no longer knows: stop its reports.
                let _ = self.poller.delete(token as RawFd);
            }
        }
        self.table.deliver(out);
        Ok(())
    }

    /// The eventfd that interrupts a blocked [`turn`](Self::turn).
    pub(crate) fn waker(&self) -> Arc<EventFd> {
        Arc::clone(&self.waker)
    }

    /// `["epoll_pwait2"]` when waits have nanosecond timeouts, else nothing.
    pub(crate) fn features(&self) -> Vec<&'static str> {
        if self.poller.uses_epoll_pwait2() {
            vec!["epoll_pwait2"]
        } else {
            Vec::new()
        }
    }

    /// The loop no longer uses `fd` (it may be closed and its number reused at once): drop its
    /// registration now if no op waits on it, instead of lazily at the next turn.
    pub(crate) fn forget_fd(&mut self, fd: RawFd) {
        let Some(entry) = self.table.fds.get(&fd) else { return };
        if entry.head.is_some() {
            return;
        }
        if let Registration::Epoll(_) = entry.registration {
            let _ = self.poller.delete(fd);
        }
        self.table.fds.remove(&fd);
    }

    /// Ops submitted and neither completed nor cancelled.
    pub(crate) fn in_flight(&self) -> usize {
        self.table.ops.len()
    }
}

/// The fd an op waits on and the readiness it waits for (`poll(2)` bits).
fn readiness(op: &Op) -> (RawFd, u32) {
    match *op {
        Op::Poll { fd, interest } => (fd, interest.0 & EVENT_BITS),
    }
}

/// Tries to finish `op` now that its fd reports `revents`; `None` keeps it waiting.
///
/// This is where an I/O op will do its non-blocking syscall (`EAGAIN` → `None`).
fn attempt(op: &mut Op, revents: u32) -> Option<io::Result<u32>> {
    match *op {
        Op::Poll { interest, .. } => {
            let hit = revents & (interest.0 | ALWAYS_REPORTED);
            (hit != 0).then_some(Ok(hit))
        }
    }
}

/// An op in flight, in the driver's slab; its key is its [`OpId`].
#[derive(Debug)]
struct OpSlot<T> {
    /// Handed back with the completion, or by `cancel`.
    owner: T,
    /// What to do; owns the op's memory.
    op: Op,
    /// Where the op is in its life.
    state: OpState,
}

/// The life of an epoll op: `submit` → `Waiting` → `Ready` → delivered, with `cancel` possible in
/// either state. Slots are freed at delivery or cancellation: the kernel never sees an op's
/// memory here, so unlike io_uring no op outlives its owner.
#[derive(Debug)]
enum OpState {
    /// In its fd's waiter list, waiting for readiness.
    Waiting(Link),
    /// Finished with this result; listed in [`FdTable::ready`] for the end of the turn.
    Ready(io::Result<u32>),
}

/// Neighbours in an fd's waiter list (slab keys).
#[derive(Clone, Copy, Debug, Default)]
struct Link {
    /// The op that waited longer.
    prev: Option<usize>,
    /// The op that waited less long.
    next: Option<usize>,
}

impl<T> OpSlot<T> {
    fn link(&mut self) -> &mut Link {
        match &mut self.state {
            OpState::Waiting(link) => link,
            OpState::Ready(_) => unreachable!("a ready op is in no waiter list"),
        }
    }
}

/// What the kernel knows of an fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Registration {
    /// Not in the epoll set yet.
    Unregistered,
    /// In the epoll set with this event mask.
    Epoll(u32),
    /// Refused by epoll (`EPERM`): a regular file or directory, always ready.
    AlwaysReady,
}

/// One fd that ops wait on.
#[derive(Debug)]
struct FdEntry {
    /// The op waiting longest, first to be attempted.
    head: Option<usize>,
    /// The op waiting least long.
    tail: Option<usize>,
    /// The registration as of the last reconcile.
    registration: Registration,
    /// Listed in [`FdTable::dirty`]: its waiters changed since the last reconcile.
    dirty: bool,
}

/// Ops in flight, grouped by the fd they wait on.
#[derive(Debug)]
struct FdTable<T> {
    /// Every op in flight.
    ops: Slab<OpSlot<T>>,
    /// The fds with waiting ops, and those idle since the last reconcile.
    fds: HashMap<RawFd, FdEntry>,
    /// Fds to reconcile at the next turn.
    dirty: Vec<RawFd>,
    /// Ready ops, in the order their completions go out.
    ready: Vec<usize>,
}

impl<T> Default for FdTable<T> {
    fn default() -> Self {
        FdTable { ops: Slab::new(), fds: HashMap::new(), dirty: Vec::new(), ready: Vec::new() }
    }
}

impl<T> FdTable<T> {
    fn submit(&mut self, op: Op, owner: T) -> usize {
        let (fd, _) = readiness(&op);
        if fd < 0 {
            // Not an fd: io_uring fails the op in its CQE, so do the same.
            let state = OpState::Ready(Err(io::Error::from_raw_os_error(libc::EBADF)));
            let key = self.ops.insert(OpSlot { owner, op, state });
            self.ready.push(key);
            return key;
        }
        let key = self.ops.insert(OpSlot { owner, op, state: OpState::Waiting(Link::default()) });
        self.link(fd, key);
        key
    }

    fn cancel(&mut self, key: usize) -> Option<T> {
        match self.ops.get(key)?.state {
            OpState::Waiting(_) => self.unlink(key),
            OpState::Ready(_) => self.ready.retain(|&k| k != key),
        }
        Some(self.ops.remove(key).owner)
    }

    /// Appends waiting op `key` to `fd`'s waiter list.
    fn link(&mut self, fd: RawFd, key: usize) {
        let entry = self.fds.entry(fd).or_insert(FdEntry {
            head: None,
            tail: None,
            registration: Registration::Unregistered,
            dirty: false,
        });
        let prev = entry.tail.replace(key);
        match prev {
            Some(prev) => self.ops[prev].link().next = Some(key),
            None => entry.head = Some(key),
        }
        *self.ops[key].link() = Link { prev, next: None };
        mark_dirty(&mut self.dirty, fd, entry);
    }

    /// Takes waiting op `key` out of its fd's waiter list.
    fn unlink(&mut self, key: usize) {
        let (fd, _) = readiness(&self.ops[key].op);
        let link = *self.ops[key].link();
        let entry = self.fds.get_mut(&fd).expect("a waiting op's fd has an entry");
        match link.prev {
            Some(prev) => self.ops[prev].link().next = link.next,
            None => entry.head = link.next,
        }
        match link.next {
            Some(next) => self.ops[next].link().prev = link.prev,
            None => entry.tail = link.prev,
        }
        mark_dirty(&mut self.dirty, fd, entry);
    }

    /// Makes op `key` ready with `result`, out of its waiter list.
    fn finish(&mut self, key: usize, result: io::Result<u32>) {
        if let OpState::Waiting(_) = self.ops[key].state {
            self.unlink(key);
        }
        self.ops[key].state = OpState::Ready(result);
        self.ready.push(key);
    }

    /// Attempts every op waiting on `fd` with `revents`, oldest first. False if `fd` is unknown.
    fn wake(&mut self, fd: RawFd, revents: u32) -> bool {
        let Some(entry) = self.fds.get(&fd) else {
            return false;
        };
        let mut cursor = entry.head;
        while let Some(key) = cursor {
            let slot = &mut self.ops[key];
            cursor = slot.link().next;
            if let Some(result) = attempt(&mut slot.op, revents) {
                self.finish(key, result);
            }
        }
        true
    }

    /// Finishes every op waiting on `fd` with `errno` and forgets the fd.
    fn fail(&mut self, fd: RawFd, errno: i32) {
        while let Some(key) = self.fds.get(&fd).and_then(|entry| entry.head) {
            self.finish(key, Err(io::Error::from_raw_os_error(errno)));
        }
        self.fds.remove(&fd);
    }

    /// Moves ready ops out of the slab into completions, in order.
    fn deliver(&mut self, out: &mut Vec<Completion<T>>) {
        for key in self.ready.drain(..) {
            let slot = self.ops.remove(key);
            let OpState::Ready(result) = slot.state else {
                unreachable!("only ready ops are listed as ready")
            };
            out.push(Completion { id: OpId(key), owner: slot.owner, result, more: false });
        }
    }

    /// Brings the epoll set in line with the waiters of every dirty fd.
    fn reconcile(&mut self, poller: &Poller) {
        let mut dirty = mem::take(&mut self.dirty);
        for fd in dirty.drain(..) {
            self.reconcile_fd(poller, fd);
            if let Some(entry) = self.fds.get_mut(&fd) {
                entry.dirty = false;
            }
        }
        // Keep the allocation; reconciling adds nothing (dirty entries are not listed twice).
        debug_assert!(self.dirty.is_empty());
        self.dirty = dirty;
    }

    fn reconcile_fd(&mut self, poller: &Poller, fd: RawFd) {
        let Some(entry) = self.fds.get(&fd) else {
            return;
        };
        if !entry.dirty {
            return;
        }
        let registration = entry.registration;
        let Some(wanted) = self.wanted(entry) else {
            if let Registration::Epoll(_) = registration {
                // ENOENT/EBADF: the fd was closed, which dropped the registration already.
                let _ = poller.delete(fd);
            }
            self.fds.remove(&fd);
            return;
        };
        let token = fd as u64;
        let verdict = match registration {
            Registration::Epoll(mask) if mask == wanted => return,
            Registration::Epoll(_) => match poller.modify(fd, wanted, token) {
                // Closed and reused: the kernel dropped the old registration; this is a new file.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => poller.add(fd, wanted, token),
                result => result,
            },
            Registration::Unregistered => poller.add(fd, wanted, token),
            Registration::AlwaysReady => Err(io::Error::from_raw_os_error(libc::EPERM)),
        };
        match verdict.map_err(|e| e.raw_os_error().unwrap_or(libc::EIO)) {
            Ok(()) => self.set_registration(fd, Registration::Epoll(wanted)),
            Err(libc::EPERM) => {
                self.set_registration(fd, Registration::AlwaysReady);
                self.wake(fd, DEFAULT_POLLMASK);
                // Forget it once idle: a new file could take its number before the next turn.
                if self.fds.get(&fd).is_some_and(|entry| entry.head.is_none()) {
                    self.fds.remove(&fd);
                }
            }
            Err(errno) => {
                if let Registration::Epoll(_) = registration {
                    let _ = poller.delete(fd);
                }
                self.fail(fd, errno);
            }
        }
    }

    /// The event mask `entry`'s waiters need; `None` if nothing waits.
    fn wanted(&self, entry: &FdEntry) -> Option<u32> {
        let mut mask = None;
        let mut cursor = entry.head;
        while let Some(key) = cursor {
            let slot = &self.ops[key];
            mask = Some(mask.unwrap_or(0) | readiness(&slot.op).1);
            cursor = match slot.state {
                OpState::Waiting(link) => link.next,
                OpState::Ready(_) => unreachable!("a ready op is in no waiter list"),
            };
        }
        mask
    }

    fn set_registration(&mut self, fd: RawFd, registration: Registration) {
        if let Some(entry) = self.fds.get_mut(&fd) {
            entry.registration = registration;
        }
    }
}

/// Lists `fd` for the next reconcile unless it already is.
fn mark_dirty(dirty: &mut Vec<RawFd>, fd: RawFd, entry: &mut FdEntry) {
    if !entry.dirty {
        entry.dirty = true;
        dirty.push(fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Interest;
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

    /// A non-blocking pipe: (read end, write end).
    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the live 2-element array.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        assert_eq!(rc, 0, "pipe2: {}", io::Error::last_os_error());
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
        let mut out = Vec::new();
        driver.turn(timeout, &mut out).unwrap();
        assert!(out.iter().all(|c| !c.more));
        out.into_iter().map(|c| (c.id, c.owner, c.result)).collect()
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
}
