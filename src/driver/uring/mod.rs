//! io_uring backend: the proactor driver, one ring per loop (contract in `driver/mod.rs`).
//!
//! # Implementation
//! * `setup.rs` builds the ring and checks the kernel has the whole set the driver uses
//!   (Linux 6.1+); a kernel lacking part of it is refused, and the loop runs on epoll.
//! * `table.rs` holds each op in a slab slot, keyed by its SQE `user_data`, with the lists a
//!   turn walks and the fd uses that delay a close until the fd's ops ended; `slot.rs` is the
//!   slot's lifecycle and the op's SQE.
//! * `complete.rs` turns CQEs into completions; `persistent.rs` runs the persistent ops
//!   (`RecvMulti`, `RecvMsgMulti`, `AcceptMulti`): multishot SQEs, the provided-buffer rings,
//!   re-arming, parking on `ENOBUFS`; `splice.rs` runs `SendFile`, `wait_id.rs` `WaitId`.
//! * `wake.rs` is the eventfd read that keeps `turn` wakeable; `enter.rs` the
//!   `io_uring_enter` by registered ring fd; `shutdown.rs` cancels and drains at drop.
//!
//! **Ops are held by the driver until the turn.** `submit` only queues; the turn pushes every
//! queued SQE to the SQ and submits them in its one `io_uring_enter`. So until then nothing of
//! an op is in the kernel, and `cancel` withdraws it: the kernel never sees an op cancelled in
//! the same iteration, never looks up its fd number, and a watch's re-armed poll is never
//! submitted before the callbacks of the batch that re-armed it have run. Only the turn touches
//! the SQ and the CQ.
//!
//! **Only the driver closes an fd it handed to the kernel** ([`close_fd`](UringDriver::close_fd)):
//! the close waits until every op naming the fd was withdrawn or reached its final CQE, so the
//! number cannot be reused while a queued SQE, an io-wq worker or a linked op may still look it
//! up.

mod complete;
mod enter;
mod persistent;
#[cfg(test)]
mod persistent_tests;
mod setup;
mod shutdown;
mod slot;
mod splice;
mod table;
#[cfg(test)]
mod tests;
mod wait_id;
mod wake;

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use io_uring::{opcode, squeue, types, EnterFlags, IoUring};

use self::enter::RingFd;
use self::persistent::Rings;
use self::setup::{Disabled, Optimization};
use self::slot::{SlotState, Tag};
use self::splice::Step;
use self::table::OpTable;
use self::wake::WakeOp;
use super::{Completion, EventFd, Op, OpId};

/// Waits this long or longer are treated as "no timeout" (the kernel's timespec would
/// otherwise overflow).
const FOREVER: Duration = Duration::from_secs(1 << 32);

/// How many times `turn` enters again to flush CQEs that overflowed the CQ ring.
const MAX_OVERFLOW_FLUSHES: usize = 16;

/// How many enters in a row may accept nothing from a full SQ before a turn leaves the rest of
/// its queue for the next one.
const MAX_STALLED_SUBMITS: usize = 64;

/// The io_uring driver. See the module docs and the contract in `driver/mod.rs`.
pub(crate) struct UringDriver<T: Clone> {
    /// The ring: SQ, CQ and the ring fd.
    ring: IoUring,
    /// The ring fd as `io_uring_enter` takes it (registered with the kernel where it can be).
    ring_fd: RingFd,
    /// Every user op from `submit` until the kernel is done with it.
    table: OpTable<T>,
    /// The driver's own SQEs for the next turn (cancels, the wake op's re-arm), pushed ahead
    /// of the queued ops. None names an fd a user op uses.
    internal: Vec<squeue::Entry>,
    /// The eventfd read kept armed so that `waker().wake()` ends a wait.
    wake: WakeOp,
    /// The provided-buffer rings. After `ring`, so the io_uring instance is closed before
    /// their memory can be freed.
    rings: Rings,
    /// A shutdown left ops in the kernel (their memory and fds are leaked).
    leaked: bool,
    /// Idle pipes for `SendFile`'s splices.
    pipes: splice::PipePool,
    /// `IORING_OP_WAITID` is in use ([`Optimization::WaitId`]): a `WaitId` op is one `WAITID`
    /// SQE; otherwise it polls the pidfd and reaps at the poll's CQE.
    waitid: bool,
}

impl<T: Clone> UringDriver<T> {
    /// Sets up a ring, or says which part of what the driver needs the kernel lacks. The
    /// comma-separated `RINGLOOP_DISABLE` switches optimizations off (`registered_ring`,
    /// `waitid`) or makes the driver act as if the kernel lacked a part of the set (see
    /// `setup.rs`).
    pub(crate) fn new() -> io::Result<Self> {
        let disabled = std::env::var("RINGLOOP_DISABLE").unwrap_or_default();
        Self::with_disabled(&disabled.split(',').collect::<Vec<_>>())
    }

    /// Queues `op` for the next turn: no syscall, nothing reaches the kernel before it.
    pub(crate) fn submit(&mut self, op: Op, owner: T) -> OpId {
        self.table.insert(op, owner)
    }

    /// Detaches `id`'s owner and returns it; no completion is delivered for it afterwards. An
    /// op the kernel does not hold yet is withdrawn (never submitted); one it holds gets an
    /// `AsyncCancel`, and its slot (with its memory) stays until its final CQE. `None` for an
    /// unknown, ended or already cancelled id.
    pub(crate) fn cancel(&mut self, id: OpId) -> Option<T> {
        let key = self.table.key_of(id)?;
        let send_file = is_send_file(&self.table, key);
        let (owner, in_kernel) = self.table.detach(key)?;
        if in_kernel {
            self.internal.push(cancel_sqe(slot::user_data(key)));
            if send_file {
                let drain = slot::user_data(key) | slot::DRAIN;
                self.internal.push(cancel_sqe(drain));
                self.internal.push(cancel_sqe(drain | slot::DRAIN_POLL));
            }
        }
        Some(owner)
    }

    /// Cancels one-shot op `id` if the kernel has not seen it (queued, with no splice of a
    /// `SendFile` begun): its owner and op come back, and nothing of it is ever sent.
    pub(crate) fn withdraw(&mut self, id: OpId) -> Option<(T, Op)> {
        let key = self.table.key_of(id)?;
        if !self.table.slots.get(key).is_some_and(slot::Slot::untouched) {
            return None;
        }
        let (owner, _) = self.table.detach(key)?;
        Some((owner, self.table.take_withdrawn_op(key)))
    }

    /// Appends `buffers` to queued send `id`'s owned copy (its SQE is built at the next turn,
    /// from the copy as it is then); false, with nothing done, for any other op or state.
    pub(crate) fn append(&mut self, id: OpId, buffers: &[&[u8]]) -> bool {
        let slot = self.table.key_of(id).and_then(|key| self.table.slots.get_mut(key));
        match slot {
            Some(slot) if matches!(slot.state, SlotState::Queued(_)) => slot.op.append(buffers),
            _ => false,
        }
    }

    /// Ends persistent op `id` but keeps its owner: what the kernel already took is delivered,
    /// then a final `ECANCELED` (at the next turn for an op out of the kernel). No-op for an
    /// unknown, cancelled, stopping or one-shot op.
    pub(crate) fn end_gracefully(&mut self, id: OpId) {
        let Some(key) = self.table.key_of(id) else { return };
        let Some(slot) = self.table.slots.get_mut(key) else { return };
        if !slot.op.is_persistent() {
            return;
        }
        match std::mem::replace(&mut slot.state, SlotState::Cancelled) {
            SlotState::Submitted(owner) => {
                slot.state = SlotState::Stopping(owner);
                self.internal.push(cancel_sqe(slot::user_data(key)));
            }
            state @ (SlotState::Queued(_) | SlotState::Parked(_)) => {
                slot.state = state;
                self.table.finish_later(key, -libc::ECANCELED);
            }
            state => slot.state = state,
        }
    }

    /// Closes `fd` once no op names it: at once, or when the last op naming it was withdrawn
    /// or reached its final CQE. The number stays allocated until then.
    pub(crate) fn close_fd(&mut self, fd: OwnedFd) {
        self.table.close_fd(fd);
    }

    /// Submits everything queued and waits, in one `io_uring_enter`, for a completion, the
    /// timeout (`None`: forever; zero: do not wait) or a wakeup; then appends the completions.
    pub(crate) fn turn(
        &mut self,
        timeout: Option<Duration>,
        out: &mut Vec<Completion<T>>,
    ) -> io::Result<()> {
        let delivered = out.len();
        self.table.sweep_withdrawn();
        persistent::rearm_parked(&mut self.table, &self.rings);
        let flushed = self.flush_queue(out)?;
        // Stopped while out of the kernel, or refused at submission.
        complete::deliver_finished(&mut self.table, out);
        let busy = out.len() > delivered || !flushed;
        self.wait(if busy { Some(Duration::ZERO) } else { timeout })?;
        self.drain_cq(out);
        self.flush_overflow(out)
    }

    /// Pushes the queued ops to the SQ and submits it, without waiting; what completed
    /// meanwhile (ops the kernel finished as they were submitted, such as a send the socket
    /// took whole, and ops that finished while queued) is appended to `out`. No deferred
    /// completion work runs: a multishot receive takes no buffer here.
    pub(crate) fn submit_queued(&mut self, out: &mut Vec<Completion<T>>) -> io::Result<()> {
        self.flush_queue(out)?;
        complete::deliver_finished(&mut self.table, out);
        if self.sq_len() > 0 {
            self.submit_sq().or_else(expected_enter_error)?;
        }
        self.drain_cq(out);
        Ok(())
    }

    /// The eventfd that ends a blocked [`turn`](Self::turn) from any thread.
    pub(crate) fn waker(&self) -> Arc<EventFd> {
        Arc::clone(self.wake.eventfd())
    }

    /// The kernel features in use, for logs: the whole required set, and the optimizations on.
    pub(crate) fn features(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = setup::Required::ALL.map(setup::Required::name).into();
        if self.ring_fd.is_registered() {
            names.push(Optimization::RegisteredRing.name());
        }
        if self.waitid {
            names.push(Optimization::WaitId.name());
        }
        names
    }

    /// User ops not yet ended (cancelled ones still in the kernel included).
    pub(crate) fn in_flight(&self) -> usize {
        self.table.in_flight()
    }
}

impl<T: Clone> UringDriver<T> {
    /// [`new`](Self::new) with the `RINGLOOP_DISABLE` list given directly.
    pub(crate) fn with_disabled(disabled: &[&str]) -> io::Result<Self> {
        Self::with_ring(disabled, persistent::RING_BUFFERS)
    }

    /// [`with_disabled`](Self::with_disabled) with a stream ring of `buffers` buffers.
    fn with_ring(disabled: &[&str], buffers: u16) -> io::Result<Self> {
        let disabled = Disabled::from_names(disabled.iter().copied());
        let (ring, probe) = setup::setup(disabled)?;
        let on = |o| !disabled.switches_off(o) && setup::has(&probe, o);
        let rings = Rings::new(&ring, buffers)
            .map_err(|e| setup::lacking(format_args!("provided buffer rings ({e})")))?;
        let eventfd = EventFd::new().map_err(|e| {
            io::Error::new(e.kind(), format!("creating the io_uring driver's eventfd: {e}"))
        })?;
        let ring_fd = RingFd::new(ring.as_raw_fd(), on(Optimization::RegisteredRing));
        let waitid = on(Optimization::WaitId);
        if !waitid && !disabled.switches_off(Optimization::WaitId) {
            log::debug!("io_uring: no IORING_OP_WAITID (Linux 6.7); a child's exit is polled for");
        }
        let mut wake = WakeOp::new(Arc::new(eventfd));
        let internal = vec![wake.arm()];
        let table = OpTable::default();
        let pipes = splice::PipePool::default();
        let leaked = false;
        Ok(UringDriver { ring, ring_fd, table, internal, wake, rings, leaked, pipes, waitid })
    }

    /// Pushes the driver's own SQEs, then the queued ops, to the SQ, submitting whenever it
    /// fills (and reaping what that completes into `out`); again while that queued more.
    /// Returns false if the kernel took nothing for a while (its CQ backed up): the rest then
    /// waits for the next turn.
    fn flush_queue(&mut self, out: &mut Vec<Completion<T>>) -> io::Result<bool> {
        let mut stalled = 0;
        while !self.internal.is_empty() || !self.table.pending.is_empty() {
            let internal = std::mem::take(&mut self.internal);
            for (i, sqe) in internal.iter().enumerate() {
                if !self.push(sqe, out, &mut stalled)? {
                    self.internal.splice(0..0, internal[i..].iter().cloned());
                    return Ok(false);
                }
            }
            let pending = self.table.take_pending();
            for (i, &key) in pending.iter().enumerate() {
                let Some(sqes) = self.op_sqes(key) else { continue };
                for (n, sqe) in sqes.iter().flatten().enumerate() {
                    if !self.push(sqe, out, &mut stalled)? {
                        if n == 0 {
                            self.table.pending.splice(0..0, pending[i..].iter().copied());
                            return Ok(false);
                        }
                        // The first of two is in: the second follows it at the next turn.
                        self.internal.push(sqe.clone());
                    }
                }
                self.mark_submitted(key);
            }
            self.table.recycle_pending(pending);
        }
        Ok(true)
    }

    /// Pushes `sqe` to the SQ, submitting the SQ to make room when it is full (and draining
    /// the CQ into `out`, so the kernel has room for the completions). False when the kernel
    /// took nothing [`MAX_STALLED_SUBMITS`] times in a row.
    fn push(
        &mut self,
        sqe: &squeue::Entry,
        out: &mut Vec<Completion<T>>,
        stalled: &mut usize,
    ) -> io::Result<bool> {
        loop {
            // SAFETY: an op's SQE points only into memory its slot owns until the final CQE
            // (see `Slot`); the wake read into the wake op's buffer, kept until its CQE; a
            // cancel to nothing.
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                return Ok(true);
            }
            let submitted = self.submit_sq().or_else(expected_enter_error)?;
            self.drain_cq(out);
            *stalled = if submitted == 0 { *stalled + 1 } else { 0 };
            if *stalled > MAX_STALLED_SUBMITS {
                log::debug!("io_uring: the kernel takes no SQEs; the rest waits a turn");
                return Ok(false);
            }
        }
    }

    /// The SQEs op `key` sends next, if it is queued: its own (two for a `SendFile`), or the
    /// readiness poll (also a `WaitId`'s without `IORING_OP_WAITID`). An op that cannot be
    /// submitted is finished with its error instead.
    fn op_sqes(&mut self, key: usize) -> Option<[Option<squeue::Entry>; 2]> {
        let slot = self.table.slots.get_mut(key)?;
        if let (Op::SendFile { .. }, SlotState::Queued(_)) = (&slot.op, &slot.state) {
            return match splice::sqes(&mut self.table, &mut self.pipes, key) {
                Ok(sqes) => Some(sqes),
                Err(res) => {
                    self.table.finish_later(key, res);
                    None
                }
            };
        }
        if let (Op::RecvMsgMulti { .. }, SlotState::Queued(_)) = (&slot.op, &slot.state) {
            // The datagram ring is registered at the first `RecvMsgMulti` (a loop without a
            // datagram endpoint pays nothing for it); a refusal fails the op.
            if let Err(e) = self.rings.ensure_dgram(&self.ring) {
                log::error!("io_uring: registering the datagram buffer ring failed: {e}");
                self.table.finish_later(key, -e.raw_os_error().unwrap_or(libc::ENOMEM));
                return None;
            }
        }
        let slot = &mut self.table.slots[key];
        if !self.waitid {
            wait_id::poll_first(slot);
        }
        let sqe = match slot.state {
            SlotState::Queued(_) => slot::sqe(&mut slot.op),
            SlotState::QueuedPoll(_) => Ok(slot::readiness_poll(&slot.op)?),
            _ => return None,
        };
        match sqe {
            Ok(sqe) => Some([Some(sqe.user_data(slot::user_data(key))), None]),
            Err(res) => {
                self.table.finish_later(key, res);
                None
            }
        }
    }

    /// Op `key`'s SQE is in the SQ: it is the kernel's now.
    fn mark_submitted(&mut self, key: usize) {
        let slot = &mut self.table.slots[key];
        slot.state = match std::mem::replace(&mut slot.state, SlotState::Cancelled) {
            SlotState::Queued(owner) => SlotState::Submitted(owner),
            SlotState::QueuedPoll(owner) => SlotState::AwaitingReadiness(owner),
            other => other,
        };
    }

    /// The one `io_uring_enter` of a turn: submit the SQ, wait up to `timeout` for a CQE.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let timeout = timeout.filter(|t| *t < FOREVER);
        let (want, timeout) = match timeout {
            // Since 6.13 an enter runs only max(20, want) deferred completions per pass;
            // asking for a batch with a zero timeout takes them all without waiting.
            Some(wait) if wait.is_zero() => (setup::RING_ENTRIES, Some(Duration::ZERO)),
            Some(wait) => (1, Some(wait)),
            None => (1, None),
        };
        self.enter(want, timeout).or_else(expected_enter_error).map(drop)
    }

    /// `io_uring_enter`: submits the whole SQ and, with `GETEVENTS` (which also runs the
    /// deferred completion work), waits for `want` CQEs, at most `timeout` (via `EXT_ARG`).
    fn enter(&mut self, want: u32, timeout: Option<Duration>) -> io::Result<usize> {
        let to_submit = self.sq_len();
        let flags = EnterFlags::GETEVENTS;
        match timeout {
            Some(wait) => {
                let ts = types::Timespec::from(wait);
                let args = types::SubmitArgs::new().timespec(&ts);
                let flags = (flags | EnterFlags::EXT_ARG).bits();
                let arg = std::ptr::from_ref(&args).cast();
                // SAFETY: with `EXT_ARG`, `arg` must point to an `io_uring_getevents_arg` of
                // the size passed: `SubmitArgs` is that struct (`repr(transparent)`), and it
                // and the timespec it points to are locals that outlive the call.
                unsafe { self.ring_fd.enter(to_submit, want, flags, arg, size_of_val(&args)) }
            }
            // SAFETY: no argument: a null signal mask, which the kernel ignores.
            None => unsafe {
                let size = size_of::<libc::sigset_t>();
                self.ring_fd.enter(to_submit, want, flags.bits(), std::ptr::null(), size)
            },
        }
    }

    /// Submits the SQ without waiting for a completion. As the `io-uring` crate's `submit`
    /// does, it adds `GETEVENTS` when the kernel holds overflowed CQEs or pending completion
    /// work (`IORING_SQ_CQ_OVERFLOW`, `IORING_SQ_TASKRUN`): only such an enter flushes them, and
    /// a kernel with overflowed CQEs may refuse new SQEs (`EBUSY`) until it has.
    fn submit_sq(&mut self) -> io::Result<usize> {
        let to_submit = self.sq_len();
        let sq = self.ring.submission();
        let flush = sq.cq_overflow() || sq.taskrun();
        let flags = if flush { EnterFlags::GETEVENTS.bits() } else { 0 };
        let size = size_of::<libc::sigset_t>();
        // SAFETY: no argument: a null signal mask, which the kernel ignores.
        unsafe { self.ring_fd.enter(to_submit, 0, flags, std::ptr::null(), size) }
    }

    /// The SQEs queued in the SQ, not yet submitted.
    fn sq_len(&mut self) -> u32 {
        u32::try_from(self.ring.submission().len()).unwrap_or(u32::MAX)
    }

    /// Drains the CQ: user-op CQEs become completions in `out`, internal ones are handled here.
    fn drain_cq(&mut self, out: &mut Vec<Completion<T>>) {
        let mut rearm_wake = false;
        for cqe in self.ring.completion() {
            let res = cqe.result();
            match Tag::of(cqe.user_data()) {
                Tag::Op(key) if is_send_file(&self.table, key) => {
                    splice::on_cqe(&mut self.table, &mut self.pipes, key, res, Step::Fill, out)
                }
                Tag::Op(key) => {
                    complete::on_cqe(&mut self.table, &self.rings, key, res, cqe.flags(), out)
                }
                Tag::Drain(key, wait) => {
                    let step = if wait { Step::Wait } else { Step::Drain };
                    splice::on_cqe(&mut self.table, &mut self.pipes, key, res, step, out)
                }
                Tag::Wake => rearm_wake = self.wake.on_complete(res),
                Tag::Cancel => {}
            }
        }
        if rearm_wake {
            self.internal.push(self.wake.arm());
        }
    }

    /// CQEs that overflowed the CQ ring wait in the kernel (`NODROP`) until an enter with
    /// `GETEVENTS` flushes them; do that while the SQ ring says so.
    fn flush_overflow(&mut self, out: &mut Vec<Completion<T>>) -> io::Result<()> {
        for _ in 0..MAX_OVERFLOW_FLUSHES {
            if !self.ring.submission().cq_overflow() {
                break;
            }
            self.enter(0, None).or_else(expected_enter_error)?;
            self.drain_cq(out);
        }
        Ok(())
    }
}

/// Whether op `key` is a `SendFile` (its CQEs go to `splice.rs`).
fn is_send_file<T>(table: &OpTable<T>, key: usize) -> bool {
    matches!(table.slots.get(key), Some(slot) if matches!(slot.op, Op::SendFile { .. }))
}

/// An `AsyncCancel` of the SQE with `user_data` `target`.
fn cancel_sqe(target: u64) -> squeue::Entry {
    opcode::AsyncCancel::new(target).build().user_data(slot::CANCEL)
}

/// `io_uring_enter` errors that only mean "look at the CQ and carry on": the wait timed out
/// (`ETIME`), a signal arrived (`EINTR`), or the kernel is short of CQ space or memory for
/// now (`EBUSY`, `EAGAIN`). Others are returned.
fn expected_enter_error(err: io::Error) -> io::Result<usize> {
    match err.raw_os_error() {
        Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => Ok(0),
        _ => Err(err),
    }
}

impl<T: Clone> fmt::Debug for UringDriver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringDriver")
            .field("ring_fd", &self.ring.as_raw_fd())
            .field("registered_ring", &self.ring_fd.is_registered())
            .field("in_flight", &self.table.in_flight())
            .field("internal", &self.internal.len())
            .field("wake", &self.wake)
            .field("rings", &self.rings)
            .finish()
    }
}
