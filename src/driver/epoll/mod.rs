//! epoll backend: the io_uring completions, emulated on readiness (level-triggered, and
//! edge-triggered for a TCP socket that only receives: see `FdTable::wanted`).
//!
//! * `table.rs` keeps the ops in flight, grouped by fd, and reconciles the epoll set lazily.
//! * `ops.rs` says what each op waits for and does its non-blocking syscall.

mod ops;
pub(crate) mod syscall;
mod table;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use ringloop_fallback::{Events, Poller};

use self::table::{FdTable, Registration};
use super::{Completion, EventFd, Op, OpId};

/// The waker's token. An fd's token is the fd itself, which is never negative once registered.
const WAKER_TOKEN: u64 = u64::MAX;
/// Ready fds taken from the kernel per wait.
const EVENTS_PER_WAIT: usize = 1024;
/// The stream bytes after which a turn leaves the rest of its wait's ready fds to the next
/// turns (one 64 KiB chunk, the receive buffer's size).
///
/// A turn receives from every ready fd it takes before the loop dispatches any chunk. With
/// many connections streaming (64 echoing 16 KiB messages, 16 in flight each) a whole wait's
/// worth of fds held a 64 KiB chunk per connection, 4 MiB, before the protocols sent them
/// back: 1.4-1.5x tokio's CPU per request, where a loop that echoes each chunk as it reads it
/// costs 1.0x. With this budget a turn takes fds until it has received 64 KiB, the loop
/// dispatches, and the next turn goes on with the same wait's fds, without a syscall; small
/// messages never spend the budget and keep whole-wait turns.
const TURN_BYTES: usize = 64 * 1024;

/// The epoll driver: the contract of `driver/mod.rs` on top of a [`Poller`].
///
/// # Implementation
///
/// epoll allows one registration per fd, while several ops may wait on one fd (a reader and a
/// writer, as with `add_reader` + `add_writer`). So ops are grouped by fd in an [`FdTable`]: each
/// fd has a FIFO list of waiting ops and the event mask registered for it, the union of what its
/// ops wait for (a `Read` and a `Send` on one socket share a `POLLIN | POLLOUT` registration).
/// When the fd reports what an op waits for, or `POLLERR`/`POLLHUP`, the op is attempted: a
/// `Poll` finishes with the readiness; an I/O op does its non-blocking syscall, which either
/// gives the result io_uring would give (an error and end of stream included) or `EAGAIN`, and
/// then the op keeps waiting.
///
/// Ops that usually need no wait (`Send`) or that have a syscall to make before they can wait
/// (`Connect`) are queued by `submit` instead and tried at the start of the next turn, before
/// the wait; a `Send` that gets `EAGAIN` (a `Connect` that gets `EINPROGRESS`) then waits for
/// `POLLOUT`. Submission itself makes no syscall. A `SendFile` waits first (its chunks after
/// the first find the socket full; see `ops::tries_first`). A `Read` (and a persistent
/// receive) waits first: with level triggering, an fd that still holds data is reported by the
/// very wait every turn makes anyway, so an optimistic read before it would save no syscall.
///
/// Registrations follow the ops lazily. Finishing or cancelling an op only marks its fd dirty;
/// the next [`turn`](Self::turn) reconciles the dirty fds before it waits (`ADD` a new fd, `MOD`
/// a changed mask, `DEL` an fd nothing waits on). The loop re-arms a `Poll` right after its
/// completion, so in the steady state the mask is unchanged and no `epoll_ctl` is made at all.
/// Level triggering makes a re-armed op see readiness that is still there. A TCP socket whose
/// only waiter is a `RecvMulti` is registered edge-triggered instead (see `FdTable::wanted`):
/// a receive that fills its buffer lists the fd to receive from again after the next wait,
/// and urgent data turns it back to level triggering.
///
/// A turn takes the wait's ready fds in order until its stream receives reach
/// [`TURN_BYTES`]; the rest of the wait's readiness is kept, with each fd entry's epoch, for
/// the next turns, which take it before they wait again. Readiness kept for an entry that went
/// since (an fd forgotten or closed, its number perhaps another file's now) is dropped.
///
/// Verdicts of `epoll_ctl` are completions, as io_uring would give them: `EPERM` (a regular file
/// or directory, always ready for `poll(2)`) finishes the ops with `DEFAULT_POLLMASK`; `EBADF`
/// and any other error finish them with that errno. `ENOENT` on `MOD` means the fd was closed
/// and its number reused: it is added again. A turn with such completions pending does not block.
///
/// [`close_fd`](EpollDriver::close_fd) closes an fd only once no op names it (as on io_uring),
/// dropping its registration first: epoll keeps a registration while a `dup` of the fd is
/// open, and a number reused with an unchanged mask would otherwise keep a registration the
/// kernel dropped at `close`. An fd the loop does not own is forgotten
/// ([`forget_fd`](EpollDriver::forget_fd)) before its owner may close it, for the same reason.
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
    /// Readiness the last wait reported that a turn left for the next ones (the fd, its
    /// events, its entry's epoch then), oldest first; see [`TURN_BYTES`].
    deferred: VecDeque<(RawFd, u32, u64)>,
    /// The table's [`again`](FdTable::again) list as the turn takes it, swapped with the
    /// table's (empty) one so that both keep their allocations.
    again: Vec<(RawFd, u32, u64)>,
}

impl<T: Clone> EpollDriver<T> {
    /// Creates the epoll instance and registers the waker.
    pub(crate) fn new() -> io::Result<Self> {
        let poller = Poller::new()?;
        let waker = Arc::new(EventFd::new()?);
        poller.add(waker.as_raw_fd(), libc::EPOLLIN as u32, WAKER_TOKEN)?;
        Ok(EpollDriver {
            poller,
            events: Events::with_capacity(EVENTS_PER_WAIT),
            waker,
            table: FdTable::default(),
            deferred: VecDeque::new(),
            again: Vec::new(),
        })
    }

    /// Queues `op`; it is armed (its fd registered) at the next turn.
    pub(crate) fn submit(&mut self, op: Op, owner: T) -> OpId {
        self.table.submit(op, owner)
    }

    /// Detaches `id` at once: its owner comes back and no completion is ever delivered for it.
    pub(crate) fn cancel(&mut self, id: OpId) -> Option<T> {
        let owner = self.table.key_of(id).and_then(|key| self.table.cancel(key));
        self.close_released();
        owner
    }

    /// Cancels one-shot op `id` if it has done nothing yet: queued, or waiting with nothing
    /// done (each of its syscalls finishes inside a turn; only a `Connect` waits with its work
    /// begun). Its owner and op come back.
    pub(crate) fn withdraw(&mut self, id: OpId) -> Option<(T, Op)> {
        let key = self.table.key_of(id).filter(|&key| self.table.untouched(key))?;
        let withdrawn = self.table.cancel_slot(key);
        self.close_released();
        withdrawn
    }

    /// Appends `buffers` to send `id`'s owned copy while its first try is still to come;
    /// false, with nothing done, otherwise.
    pub(crate) fn append(&mut self, id: OpId, buffers: &[&[u8]]) -> bool {
        self.table.key_of(id).is_some_and(|key| self.table.append(key, buffers))
    }

    /// Closes `fd` once no op names it: now, or when its last op is delivered or cancelled.
    pub(crate) fn close_fd(&mut self, fd: OwnedFd) {
        if let Some(fd) = self.table.close_fd(fd) {
            self.forget_and_close(fd);
        }
    }

    /// Closes the fds whose close waited for an op that has ended.
    fn close_released(&mut self) {
        for fd in std::mem::take(&mut self.table.released) {
            self.forget_and_close(fd);
        }
    }

    /// Drops `fd`'s registration and table entry, then closes it.
    fn forget_and_close(&mut self, fd: OwnedFd) {
        self.forget_fd(fd.as_raw_fd());
        drop(fd);
    }

    /// Ends persistent op `id` (its results so far are still delivered, then `ECANCELED`).
    pub(crate) fn end_gracefully(&mut self, id: OpId) {
        if let Some(key) = self.table.key_of(id) {
            self.table.end_gracefully(key);
        }
    }

    /// Reconciles registrations, waits once (unless an earlier wait's readiness is left),
    /// and appends the completions to `out`.
    pub(crate) fn turn(
        &mut self,
        timeout: Option<Duration>,
        out: &mut Vec<Completion<T>>,
    ) -> io::Result<()> {
        self.table.reset_received();
        self.table.start_queued();
        self.table.reconcile(&self.poller);
        if self.deferred.is_empty() {
            mem::swap(&mut self.table.again, &mut self.again);
            let idle = self.table.ready.is_empty() && self.again.is_empty();
            let timeout = if idle { timeout } else { Some(Duration::ZERO) };
            self.poller.wait(&mut self.events, timeout)?;
            self.take_events()?;
            self.take_again();
        } else {
            self.take_deferred();
        }
        self.table.deliver_more(out);
        self.table.deliver(out);
        self.close_released();
        Ok(())
    }

    /// Wakes the ops of each fd the wait reported, until the turn has received
    /// [`TURN_BYTES`]; the rest is deferred to the next turns.
    fn take_events(&mut self) -> io::Result<()> {
        for (token, revents) in &self.events {
            if token == WAKER_TOKEN {
                self.waker.drain()?;
            } else if self.table.received() >= TURN_BYTES {
                match self.table.epoch(token as RawFd) {
                    Some(epoch) => self.deferred.push_back((token as RawFd, revents, epoch)),
                    None => self.forget_unknown(token as RawFd),
                }
            } else if !self.table.wake(token as RawFd, revents) {
                self.forget_unknown(token as RawFd);
            }
        }
        Ok(())
    }

    /// Deletes the registration of `fd`, reported under a token the table no longer knows, so
    /// that it stops reporting.
    fn forget_unknown(&self, fd: RawFd) {
        let _ = self.poller.delete(fd);
    }

    /// Receives again from the edge-triggered fds in [`again`](Self::again) (emptied), as if
    /// the wait had reported their events again, within the turn's budget like the wait's own
    /// fds. An fd whose entry went since is skipped (its number may be another file's now), and
    /// so is one turned level-triggered since (the wait reports what it still holds).
    fn take_again(&mut self) {
        for (fd, revents, epoch) in self.again.drain(..) {
            if self.table.edge_triggered_epoch(fd) != Some(epoch) {
                continue;
            }
            if self.table.received() >= TURN_BYTES {
                self.deferred.push_back((fd, revents, epoch));
            } else {
                self.table.wake(fd, revents);
            }
        }
    }

    /// Wakes the ops of deferred readiness, oldest first, until the turn has received
    /// [`TURN_BYTES`]. Readiness of an fd whose entry went since is dropped: the number may
    /// name another file now, and the registration of a file still open was deleted with the
    /// entry, so a new one reports what is still ready.
    fn take_deferred(&mut self) {
        while self.table.received() < TURN_BYTES {
            let Some((fd, revents, epoch)) = self.deferred.pop_front() else { break };
            if self.table.epoch(fd) == Some(epoch) {
                self.table.wake(fd, revents);
            }
        }
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
        if !entry.is_idle() {
            return;
        }
        if let Registration::Epoll(_) = entry.registration {
            let _ = self.poller.delete(fd);
        }
        self.table.fds.remove(&fd);
    }

    /// Cancels every op (nothing of them is in the kernel) and closes the fds whose close
    /// waited for them; returns `true` and the ops' owners.
    pub(crate) fn shutdown(&mut self) -> (bool, Vec<T>) {
        let owners = self.table.cancel_all();
        self.deferred.clear();
        self.close_released();
        (true, owners)
    }

    /// Ops submitted and neither completed nor cancelled.
    pub(crate) fn in_flight(&self) -> usize {
        self.table.len()
    }
}
