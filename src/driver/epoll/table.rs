//! The epoll driver's op table: ops in flight, grouped by the fd they wait on, and the lazy
//! reconcile of the epoll set with what they wait for.

use std::io;
use std::mem;
use std::num::NonZeroU32;
use std::os::fd::{OwnedFd, RawFd};

use ringloop_fallback::Poller;
use rustc_hash::FxHashMap;
use slab::Slab;

use super::ops::Persistent;
use super::ops::{self, readiness};
use crate::driver::fd_uses::FdUses;
use crate::driver::{BufPool, Completion, Generations, Op, OpId, RecvBuf};

/// What `poll(2)` says of a file without a poll method (regular file, directory): the kernel's
/// `DEFAULT_POLLMASK`. epoll refuses such files with `EPERM`.
const DEFAULT_POLLMASK: u32 =
    (libc::POLLIN | libc::POLLOUT | libc::POLLRDNORM | libc::POLLWRNORM) as u32;
/// Urgent data (TCP `MSG_OOB`) is pending.
const PRI: u32 = libc::POLLPRI as u32;
/// The stream ended or failed: a receive that came back short left that to tell.
const ENDED: u32 = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
/// Added to the mask of an edge-triggered registration (see [`FdTable::wanted`]).
const EDGE: u32 = (libc::EPOLLET | libc::EPOLLRDHUP) as u32 | PRI;

/// An op in flight, in the driver's slab; its key is its [`OpId`].
#[derive(Debug)]
struct OpSlot<T> {
    /// Handed back with the completion, or by `cancel`.
    owner: T,
    /// What to do; owns the op's memory, handed back with the completion.
    op: Op,
    /// Where the op is in its life.
    state: OpState,
}

/// The life of an epoll op: `submit` → (`Queued` →) `Waiting` → `Ready` → delivered, or
/// `Queued` → `Ready`; `cancel` is possible in every state. Slots are freed at delivery or
/// cancellation: the kernel never sees an op's memory between syscalls, so unlike io_uring no
/// op outlives its owner.
#[derive(Debug)]
enum OpState {
    /// Listed in [`FdTable::queued`]: tried at the start of the next turn (see
    /// [`ops::tries_first`]), then finished or put to wait.
    Queued,
    /// In its fd's waiter list, waiting for readiness.
    Waiting(Link),
    /// Finished with this result; listed in [`FdTable::ready`] for the end of the turn.
    Ready(io::Result<u32>),
}

/// Neighbours in an fd's waiter list.
#[derive(Clone, Copy, Debug, Default)]
struct Link {
    /// The op that waited longer.
    prev: Option<Key>,
    /// The op that waited less long.
    next: Option<Key>,
}

/// An op's slab key in a waiter list, in four bytes (`Option<Key>` too, through the
/// `NonZeroU32` niche): an fd entry holds two, one per fd the loop waits on, so at 10,000
/// idle connections every byte here is 16 KiB of the hash map's buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key(NonZeroU32);

impl Key {
    fn new(key: usize) -> Key {
        let stored = u32::try_from(key + 1).ok().and_then(NonZeroU32::new);
        Key(stored.expect("fewer than 2^32 - 1 ops in flight"))
    }

    fn get(self) -> usize {
        self.0.get() as usize - 1
    }
}

impl<T> OpSlot<T> {
    fn link(&mut self) -> &mut Link {
        match &mut self.state {
            OpState::Waiting(link) => link,
            _ => unreachable!("only a waiting op is in a waiter list"),
        }
    }
}

/// What the kernel knows of an fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Registration {
    /// Not in the epoll set yet.
    Unregistered,
    /// In the epoll set with this event mask.
    Epoll(u32),
    /// Refused by epoll (`EPERM`): a regular file or directory, always ready.
    AlwaysReady,
}

/// One fd that ops wait on.
#[derive(Debug)]
pub(super) struct FdEntry {
    /// The op waiting longest, first to be attempted.
    head: Option<Key>,
    /// The op waiting least long.
    tail: Option<Key>,
    /// The registration as of the last reconcile.
    pub(super) registration: Registration,
    /// Listed in [`FdTable::dirty`]: its waiters changed since the last reconcile.
    dirty: bool,
    /// Tells this entry from an earlier one of the same fd number (see [`FdTable::epoch`]).
    epoch: u64,
    /// May be registered edge-triggered: a TCP socket (the entry made for its `RecvMulti`)
    /// that has not reported urgent data (see [`FdTable::wanted`]).
    edge_ok: bool,
}

impl FdEntry {
    /// Whether no op waits on the fd.
    pub(super) fn is_idle(&self) -> bool {
        self.head.is_none()
    }

    /// Whether the kernel has the fd edge-triggered.
    fn is_edge_triggered(&self) -> bool {
        matches!(self.registration, Registration::Epoll(mask) if mask & libc::EPOLLET as u32 != 0)
    }
}

/// Ops in flight, grouped by the fd they wait on.
#[derive(Debug)]
pub(super) struct FdTable<T> {
    /// Every op in flight.
    ops: Slab<OpSlot<T>>,
    /// The fds with waiting ops, and those idle since the last reconcile.
    pub(super) fds: FxHashMap<RawFd, FdEntry>,
    /// Fds to reconcile at the next turn.
    pub(super) dirty: Vec<RawFd>,
    /// Ops to try at the next turn, in submission order.
    pub(super) queued: Vec<usize>,
    /// Ready ops, in the order their completions go out.
    pub(super) ready: Vec<usize>,
    /// Ops naming each fd, and the closes waiting for them.
    fds_in_use: FdUses,
    /// Fds whose close waited for an op that has now ended: the driver forgets and closes them.
    pub(super) released: Vec<OwnedFd>,
    /// Results of persistent ops that keep waiting (`more()`), delivered before `ready`.
    pub(super) more: Vec<(usize, io::Result<u32>, Option<RecvBuf>)>,
    /// The buffers every `RecvMulti` receives into.
    pool: BufPool,
    /// Bytes the stream receives took since [`reset_received`](Self::reset_received).
    received: usize,
    /// The epoch of the newest fd entry.
    last_epoch: u64,
    /// The buffer every `RecvMsgMulti` receives into (allocated at first use).
    dgram_scratch: super::ops::Scratch,
    /// Edge-triggered fds to receive from at the next turn without a new edge (the fd, the
    /// events its edge reported, its entry's epoch): a receive filled its buffer, so more may
    /// be there, or the stream's end is still to be received.
    pub(super) again: Vec<(RawFd, u32, u64)>,
    /// Each slot's generation: which op an [`OpId`] names.
    generations: Generations,
}

impl<T> Default for FdTable<T> {
    fn default() -> Self {
        FdTable {
            ops: Slab::new(),
            fds: FxHashMap::default(),
            dirty: Vec::new(),
            queued: Vec::new(),
            ready: Vec::new(),
            fds_in_use: FdUses::default(),
            released: Vec::new(),
            more: Vec::new(),
            pool: BufPool::default(),
            received: 0,
            last_epoch: 0,
            dgram_scratch: None,
            again: Vec::new(),
            generations: Generations::default(),
        }
    }
}

impl<T> FdTable<T> {
    /// Ops submitted and neither delivered nor cancelled.
    pub(super) fn len(&self) -> usize {
        self.ops.len()
    }

    pub(super) fn submit(&mut self, op: Op, owner: T) -> OpId {
        let key = self.insert(op, owner);
        self.generations.issue(key)
    }

    /// The slot `id` names, unless its op has ended (the key may hold a newer op).
    pub(super) fn key_of(&self, id: OpId) -> Option<usize> {
        self.generations.key_of(id)
    }

    /// Takes `op` into a slot: queued, waiting on its fd, or ready at once for a bad fd.
    fn insert(&mut self, op: Op, owner: T) -> usize {
        let (fd, _) = readiness(&op);
        self.fds_in_use.add(fd);
        if let Some(second) = op.second_fd() {
            self.fds_in_use.add(second);
        }
        if fd < 0 {
            // Not an fd: io_uring fails the op in its CQE, so do the same.
            let state = OpState::Ready(Err(io::Error::from_raw_os_error(libc::EBADF)));
            let key = self.ops.insert(OpSlot { owner, op, state });
            self.ready.push(key);
            return key;
        }
        if ops::tries_first(&op) {
            let key = self.ops.insert(OpSlot { owner, op, state: OpState::Queued });
            self.queued.push(key);
            return key;
        }
        let key = self.ops.insert(OpSlot { owner, op, state: OpState::Waiting(Link::default()) });
        self.link(fd, key);
        key
    }

    pub(super) fn cancel(&mut self, key: usize) -> Option<T> {
        self.cancel_slot(key).map(|(owner, _)| owner)
    }

    /// [`cancel`](Self::cancel), handing back the op as well as its owner.
    pub(super) fn cancel_slot(&mut self, key: usize) -> Option<(T, Op)> {
        match self.ops.get(key)?.state {
            OpState::Queued => self.queued.retain(|&k| k != key),
            OpState::Waiting(_) => self.unlink(key),
            OpState::Ready(_) => self.ready.retain(|&k| k != key),
        }
        let slot = self.remove(key);
        if self.more.iter().any(|(k, _, _)| *k == key) {
            for entry in mem::take(&mut self.more) {
                match entry {
                    (k, ..) if k != key => self.more.push(entry),
                    // A connection accepted for nobody (a chunk's copy just goes).
                    (_, Ok(res), _) => slot.op.discard_result(res as i32),
                    _ => {}
                }
            }
        }
        if let OpState::Ready(Ok(res)) = slot.state {
            // An accept that already accepted: its fd would leak.
            slot.op.discard_result(res as i32);
        }
        Some((slot.owner, slot.op))
    }

    /// Appends `buffers` to queued send `key`'s owned copy; false, with nothing done, for any
    /// other op or state.
    pub(super) fn append(&mut self, key: usize, buffers: &[&[u8]]) -> bool {
        match self.ops.get_mut(key) {
            Some(slot) if matches!(slot.state, OpState::Queued) => slot.op.append(buffers),
            _ => false,
        }
    }

    /// Whether one-shot op `key` has done nothing yet: queued, or waiting for readiness (a
    /// `Connect` waits with its connection begun).
    pub(super) fn untouched(&self, key: usize) -> bool {
        self.ops.get(key).is_some_and(|slot| match slot.state {
            _ if slot.op.is_persistent() => false,
            OpState::Queued => true,
            OpState::Waiting(_) => !matches!(slot.op, Op::Connect { .. }),
            OpState::Ready(_) => false,
        })
    }

    /// Cancels every op; returns their owners.
    pub(super) fn cancel_all(&mut self) -> Vec<T> {
        let keys: Vec<usize> = self.ops.iter().map(|(key, _)| key).collect();
        keys.into_iter().filter_map(|key| self.cancel(key)).collect()
    }

    /// Frees op `key`'s slot and its fd use; a close that waited for it is released.
    fn remove(&mut self, key: usize) -> OpSlot<T> {
        let slot = self.ops.remove(key);
        let fds = [Some(readiness(&slot.op).0), slot.op.second_fd()];
        for fd in fds.into_iter().flatten() {
            if let Some(fd) = self.fds_in_use.release(fd) {
                self.released.push(fd);
            }
        }
        slot
    }

    /// Closes `fd` once no op names it: returns it to forget and close now, or keeps it until
    /// its last op ends (then it shows up in [`released`](Self::released)).
    pub(super) fn close_fd(&mut self, fd: OwnedFd) -> Option<OwnedFd> {
        self.fds_in_use.close(fd)
    }

    /// Tries every queued op, before the turn reconciles and waits: each finishes or starts
    /// waiting for readiness.
    pub(super) fn start_queued(&mut self) {
        let mut queued = mem::take(&mut self.queued);
        for key in queued.drain(..) {
            match ops::start(&mut self.ops[key].op) {
                Some(result) => {
                    self.ops[key].state = OpState::Ready(result);
                    self.ready.push(key);
                }
                None => {
                    self.ops[key].state = OpState::Waiting(Link::default());
                    self.link(readiness(&self.ops[key].op).0, key);
                }
            }
        }
        // Keep the allocation; starting submits nothing.
        debug_assert!(self.queued.is_empty());
        self.queued = queued;
    }

    /// Appends waiting op `key` to `fd`'s waiter list.
    fn link(&mut self, fd: RawFd, key: usize) {
        let last_epoch = &mut self.last_epoch;
        let receives = matches!(self.ops[key].op, Op::RecvMulti { .. });
        let entry = self.fds.entry(fd).or_insert_with(|| {
            *last_epoch += 1;
            FdEntry {
                head: None,
                tail: None,
                registration: Registration::Unregistered,
                dirty: false,
                epoch: *last_epoch,
                edge_ok: receives && super::syscall::is_tcp(fd),
            }
        });
        let waiter = Key::new(key);
        let prev = entry.tail.replace(waiter);
        match prev {
            Some(prev) => self.ops[prev.get()].link().next = Some(waiter),
            None => entry.head = Some(waiter),
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
            Some(prev) => self.ops[prev.get()].link().next = link.next,
            None => entry.head = link.next,
        }
        match link.next {
            Some(next) => self.ops[next.get()].link().prev = link.prev,
            None => entry.tail = link.prev,
        }
        mark_dirty(&mut self.dirty, fd, entry);
    }

    /// Makes waiting op `key` ready with `result`, out of its waiter list.
    fn finish(&mut self, key: usize, result: io::Result<u32>) {
        self.unlink(key);
        self.ops[key].state = OpState::Ready(result);
        self.ready.push(key);
    }

    /// Attempts every op waiting on `fd` with `revents`, oldest first. False if `fd` is unknown.
    ///
    /// On an edge-triggered fd a receive that filled its buffer lists the fd in
    /// [`again`](Self::again) (more may be there, and no new edge would say so), as does one
    /// whose edge also said the stream ended (the end comes after the bytes, from the next
    /// receive); urgent data turns the fd to level triggering for good (TCP stops a receive at
    /// the urgent mark, short of what is there).
    pub(super) fn wake(&mut self, fd: RawFd, revents: u32) -> bool {
        let Some(entry) = self.fds.get_mut(&fd) else {
            return false;
        };
        let (edge, epoch) = (entry.is_edge_triggered(), entry.epoch);
        if edge && revents & PRI != 0 {
            entry.edge_ok = false;
            mark_dirty(&mut self.dirty, fd, entry);
        }
        let mut cursor = entry.head;
        while let Some(waiter) = cursor {
            let key = waiter.get();
            let slot = &mut self.ops[key];
            cursor = slot.link().next;
            if slot.op.is_persistent() {
                match ops::attempt_persistent(
                    &slot.op,
                    revents,
                    &self.pool,
                    &mut self.dgram_scratch,
                ) {
                    Persistent::Wait => {}
                    Persistent::More(result, data) => {
                        if let (Op::RecvMulti { .. }, Some(bytes)) = (&slot.op, &data) {
                            self.received += bytes.len();
                            if edge && (bytes.len() >= BufPool::BUF_SIZE || revents & ENDED != 0) {
                                self.again.push((fd, revents, epoch));
                            }
                        }
                        self.more.push((key, result, data));
                    }
                    Persistent::End(result) => self.finish(key, result),
                }
            } else if let Some(result) = ops::attempt(&mut slot.op, revents) {
                self.finish(key, result);
            }
        }
        true
    }

    /// Starts counting the stream bytes received (a turn's) from zero.
    pub(super) fn reset_received(&mut self) {
        self.received = 0;
    }

    /// The stream bytes received since [`reset_received`](Self::reset_received).
    pub(super) fn received(&self) -> usize {
        self.received
    }

    /// The epoch of `fd`'s entry, `None` if it has none. An entry made after another of the
    /// same fd number was removed (the fd closed and the number reused, or forgotten and
    /// waited on again) has a later epoch: a readiness reported for the earlier one is not
    /// the new one's.
    pub(super) fn epoch(&self, fd: RawFd) -> Option<u64> {
        self.fds.get(&fd).map(|entry| entry.epoch)
    }

    /// The epoch of `fd`'s entry if the kernel has the fd edge-triggered.
    pub(super) fn edge_triggered_epoch(&self, fd: RawFd) -> Option<u64> {
        self.fds.get(&fd).filter(|entry| entry.is_edge_triggered()).map(|entry| entry.epoch)
    }

    /// Finishes every op waiting on `fd` with `errno` and forgets the fd.
    fn fail(&mut self, fd: RawFd, errno: i32) {
        while let Some(key) = self.fds.get(&fd).and_then(|entry| entry.head).map(Key::get) {
            self.finish(key, Err(io::Error::from_raw_os_error(errno)));
        }
        self.fds.remove(&fd);
    }

    /// Ends waiting persistent op `key` with `ECANCELED` (its results so far still go out
    /// first); anything else is left alone.
    pub(super) fn end_gracefully(&mut self, key: usize) {
        let Some(slot) = self.ops.get(key) else { return };
        if slot.op.is_persistent() && matches!(slot.state, OpState::Waiting(_)) {
            self.finish(key, Err(io::Error::from_raw_os_error(libc::ECANCELED)));
        }
    }

    /// Moves ready ops out of the slab into completions, in order, each with its op.
    pub(super) fn deliver(&mut self, out: &mut Vec<Completion<T>>) {
        for key in mem::take(&mut self.ready) {
            let slot = self.remove(key);
            let OpState::Ready(result) = slot.state else {
                unreachable!("only ready ops are listed as ready")
            };
            let (id, owner, op) = (self.generations.current(key), slot.owner, Some(slot.op));
            out.push(Completion { id, owner, result, op, data: None });
        }
    }

    /// Brings the epoll set in line with the waiters of every dirty fd.
    pub(super) fn reconcile(&mut self, poller: &Poller) {
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
                if self.fds.get(&fd).is_some_and(FdEntry::is_idle) {
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
    ///
    /// Level-triggered, except a TCP socket whose only waiter is a `RecvMulti`: edge-triggered
    /// (`EPOLLET`, with `EPOLLRDHUP` so that an end arriving with the last bytes is known), as
    /// mio and tokio register sockets. A level-triggered fd already read is
    /// polled again by every wait and stays on the kernel's ready list in the order it was
    /// last reported, which put ringloop's p99 above tokio's (`docs/benchmarks.md`). A short
    /// receive is taken to mean the socket is drained, as mio does: true of TCP except at the
    /// urgent mark, so `EPOLLPRI` is asked for and urgent data turns the fd to level triggering
    /// (see [`wake`](Self::wake)). A re-registration (`MOD`) polls the fd at once, so turning
    /// from one mode to the other loses no readiness; and no edge goes unread, since only a
    /// wait takes one, right after the reconcile that registered the fd's waiting receive,
    /// which then receives (or keeps the readiness, with the entry's epoch, for a later turn).
    fn wanted(&self, entry: &FdEntry) -> Option<u32> {
        let mut mask = None;
        let mut cursor = entry.head;
        let mut edge = entry.edge_ok;
        while let Some(key) = cursor {
            let slot = &self.ops[key.get()];
            edge &= matches!(slot.op, Op::RecvMulti { .. });
            mask = Some(mask.unwrap_or(0) | readiness(&slot.op).1);
            cursor = match slot.state {
                OpState::Waiting(link) => link.next,
                _ => unreachable!("only a waiting op is in a waiter list"),
            };
        }
        mask.map(|mask| if edge { mask | EDGE } else { mask })
    }

    fn set_registration(&mut self, fd: RawFd, registration: Registration) {
        if let Some(entry) = self.fds.get_mut(&fd) {
            entry.registration = registration;
        }
    }
}

impl<T: Clone> FdTable<T> {
    /// Hands over the results of persistent ops that keep going (before [`deliver`]).
    ///
    /// [`deliver`]: FdTable::deliver
    pub(super) fn deliver_more(&mut self, out: &mut Vec<Completion<T>>) {
        for (key, result, data) in self.more.drain(..) {
            let owner = self.ops[key].owner.clone();
            let id = self.generations.current(key);
            out.push(Completion { id, owner, result, op: None, data });
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
