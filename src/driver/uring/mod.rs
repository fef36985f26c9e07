//! io_uring backend: the proactor driver, one ring per loop (contract in `driver/mod.rs`).
//!
//! # Implementation
//! * `setup.rs` picks the best setup flags the kernel accepts and probes the opcodes.
//! * `op.rs` holds each op in a slab slot, keyed by its SQE `user_data`, from `submit` to its
//!   final CQE, with an explicit lifecycle; `user_data` values at the top of the range are the
//!   driver's own SQEs.
//! * `internal.rs` has those SQEs: the eventfd read that keeps `turn` wakeable and the timer
//!   that bounds waits on kernels without `IORING_FEAT_EXT_ARG`.
//! * `sync.rs` runs the socket ops whose opcodes the kernel lacks as plain syscalls.
//! * `multi.rs` runs the persistent ops (`RecvMulti`, `RecvMsgMulti`, `AcceptMulti`):
//!   multishot SQEs, the provided-buffer rings (`recv_buf.rs`), re-arming, parking on `ENOBUFS`.
//! * `shutdown.rs` cancels and drains everything when the driver is dropped.
//!
//! SQEs reach the SQ in the order they are pushed (a full SQ spills into an ordered backlog),
//! so an `AsyncCancel` is always submitted after the op it targets and before any op that later
//! reuses the same slab key.

#[cfg(test)]
mod dgram_multi_tests;
#[cfg(test)]
mod dgram_tests;
mod enter;
mod internal;
mod multi;
#[cfg(test)]
mod multi_tests;
mod op;
mod setup;
mod shutdown;
#[cfg(test)]
mod socket_tests;
mod sync;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use io_uring::{opcode, squeue, types, EnterFlags, IoUring, Probe};
use slab::Slab;

use self::enter::RingFd;
use self::internal::{FallbackTimer, WakeOp};
use self::multi::Multi;
use self::op::{Route, Slot, Start, Tag};
use self::setup::{Feature, FeatureSet};
use super::{recv_buf, Completion, EventFd, Op, OpId};

/// Waits this long or longer are treated as "no timeout" (the kernel's timespec would
/// otherwise overflow).
const FOREVER: Duration = Duration::from_secs(1 << 32);

/// How many times `turn` enters again to flush CQEs that overflowed the CQ ring.
const MAX_OVERFLOW_FLUSHES: usize = 16;

/// How many enters in a row may accept nothing from a full SQ before `turn` gives up.
const MAX_STALLED_SUBMITS: usize = 64;

/// The io_uring driver. See the module docs and the contract in `driver/mod.rs`.
pub(crate) struct UringDriver<T> {
    /// The ring: SQ, CQ and the ring fd.
    ring: IoUring,
    /// The ring fd as `io_uring_enter` takes it (registered with the kernel where it can be).
    ring_fd: RingFd,
    /// The optional kernel features in use.
    features: FeatureSet,
    /// Which opcodes the kernel has, for ops newer than `POLL_ADD`.
    probe: Box<Probe>,
    /// Every user op between `submit` and its final CQE; the key is the SQE `user_data`.
    slots: Slab<Slot<T>>,
    /// SQEs that found the SQ full while the kernel would not take more (`EBUSY`); they go to
    /// the SQ, in order and ahead of anything newer, at the next `turn`.
    backlog: VecDeque<squeue::Entry>,
    /// Ops finished by a syscall at submit (slab key, CQE-style result), delivered at the
    /// next `turn` as if their CQE had come.
    ready: VecDeque<(usize, i32)>,
    /// `Close` ops waiting for their `close(2)` (kernel without `IORING_OP_CLOSE`): run at the
    /// next turn once everything submitted before them is in the kernel, so no earlier op can
    /// meet a new file that reuses the number.
    deferred_closes: Vec<usize>,
    /// The eventfd read kept armed so that `waker().wake()` ends a wait.
    wake: WakeOp,
    /// Bounds waits when `io_uring_enter` cannot take a timeout (no `EXT_ARG`).
    timer: FallbackTimer,
    /// The persistent ops' buffer ring, scratch buffer and parked ops. After `ring`, so the
    /// io_uring instance is closed before the buffer ring's memory can be freed.
    multi: Multi,
    /// The SQEs a turn's completions re-arm, pushed after the CQ is drained (kept between
    /// turns so that re-arming allocates nothing once warm).
    rearm: Vec<squeue::Entry>,
}

impl<T: Clone> UringDriver<T> {
    /// Sets up a ring with the best features the kernel has, minus those named in the
    /// comma-separated `RINGLOOP_DISABLE` (`single_issuer`, `defer_taskrun`, `coop_taskrun`,
    /// `taskrun_flag`, `submit_all`, `ext_arg`, `cancel_any`, and `op_accept`, `op_connect`,
    /// `op_recv`, `op_send`, `op_shutdown`, `op_close`, `op_read`, `op_write`, `op_recvmsg`,
    /// `op_sendmsg`, which make those ops take their syscall fallback, and `multishot_accept`,
    /// `multishot_recv`, `buffer_ring`, `multishot_recvmsg`, which make the persistent ops
    /// re-arm one-shot SQEs or wait by readiness, and `registered_ring`, which makes each
    /// enter name the ring by its plain fd).
    pub(crate) fn new() -> io::Result<Self> {
        let disabled = std::env::var("RINGLOOP_DISABLE").unwrap_or_default();
        Self::with_disabled(&disabled.split(',').collect::<Vec<_>>())
    }

    /// Queues `op` in the SQ at once (the kernel sees it at the next `turn` at the latest).
    /// An op whose opcode the kernel lacks runs its syscall here (see `sync.rs`); its result,
    /// if it has one already, is delivered at the next `turn`.
    pub(crate) fn submit(&mut self, op: Op, owner: T) -> OpId {
        let close = matches!(op, Op::Close { .. });
        let native_close = self.features.contains(Feature::OpClose);
        if matches!(op, Op::RecvMsgMulti { .. }) {
            self.ensure_dgram_ring();
        }
        let key = self.slots.insert(Slot::new(op, owner));
        if close {
            // Closed now, not at the next turn, as asyncio closes a socket when
            // `connection_lost` returns (a loop stopped right after must not keep it open),
            // and after everything submitted before it.
            if !native_close {
                self.deferred_closes.push(key);
                self.run_deferred_closes();
                return OpId(key);
            }
        }
        match self.slots[key].start(key, self.features) {
            // SAFETY: whatever the SQE points to is owned by the op in slot `key`, which is
            // freed only at the op's final CQE (or leaked at shutdown).
            Start::Sqe(sqe) => unsafe { self.push_sqe(sqe) },
            Start::Done(res) => self.ready.push_back((key, res)),
        }
        if close && self.backlog.is_empty() {
            // An error leaves the SQEs queued for the next turn, which is where they would
            // have gone anyway.
            let _ = self.submit_sq();
        }
        OpId(key)
    }

    /// Detaches `id`'s owner and sends an `AsyncCancel` (none for an op already finished at
    /// submit, nor for a `Close`, which happens regardless); the slot (and the op's memory)
    /// stays until the op's final CQE, and nothing is reported for it. `None` for an unknown
    /// or already cancelled id.
    pub(crate) fn cancel(&mut self, id: OpId) -> Option<T> {
        self.unpark_to_ready(id.0);
        let (owner, in_kernel) = self.slots.get_mut(id.0)?.cancel()?;
        if in_kernel {
            let sqe = opcode::AsyncCancel::new(op::user_data(id.0)).build();
            // SAFETY: an `AsyncCancel` SQE points to no memory.
            unsafe { self.push_sqe(sqe.user_data(op::CANCEL)) };
        }
        Some(owner)
    }

    /// Ends persistent op `id` but keeps its owner: an `AsyncCancel` goes to the kernel, and
    /// everything the op still completes is delivered, then a final `ECANCELED` (a parked op
    /// gets it at the next turn). No-op for an unknown, cancelled or one-shot op.
    pub(crate) fn stop(&mut self, id: OpId) {
        let Some(slot) = self.slots.get_mut(id.0) else { return };
        if slot.stopping
            || !slot.op.is_persistent()
            || matches!(slot.state, op::Lifecycle::Cancelled)
        {
            return;
        }
        slot.stopping = true;
        if self.unpark_to_ready(id.0) || slot_route(&self.slots, id.0) == Some(Route::Done) {
            return;
        }
        let sqe = opcode::AsyncCancel::new(op::user_data(id.0)).build();
        // SAFETY: an `AsyncCancel` SQE points to no memory.
        unsafe { self.push_sqe(sqe.user_data(op::CANCEL)) };
    }

    /// Submits everything queued and waits, in one `io_uring_enter`, for a completion, the
    /// timeout (`None`: forever; zero: do not wait) or a wakeup; then appends the completions.
    pub(crate) fn turn(
        &mut self,
        timeout: Option<Duration>,
        out: &mut Vec<Completion<T>>,
    ) -> io::Result<()> {
        let mut rearm = std::mem::take(&mut self.rearm);
        self.rearm_parked();
        let features = self.features;
        let turned = self.turn_with(timeout, &mut |slots, multi, key, res, flags| {
            if slots.get(key).is_some_and(|slot| slot.op.is_persistent()) {
                rearm.extend(multi::complete(slots, key, (res, flags), features, multi, out));
            } else {
                rearm.extend(op::complete(slots, key, res, flags, out));
            }
        });
        for sqe in rearm.drain(..) {
            // SAFETY: a `POLL_ADD` and an accept without address point to no memory; a recv
            // with `BUFFER_SELECT` writes only into the driver's buffer rings, which live until
            // the ring is closed (see `recv_buf.rs`), and a multishot recvmsg also reads the
            // static header; the op stays in its slot.
            unsafe { self.push_sqe(sqe) };
        }
        self.rearm = rearm;
        turned
    }

    /// The eventfd that ends a blocked [`turn`](Self::turn) from any thread.
    pub(crate) fn waker(&self) -> Arc<EventFd> {
        Arc::clone(self.wake.eventfd())
    }

    /// The optional kernel features in use, for logs.
    pub(crate) fn features(&self) -> Vec<&'static str> {
        self.features.names()
    }

    /// User ops whose final CQE has not arrived, cancelled ones included.
    pub(crate) fn in_flight(&self) -> usize {
        self.slots.len()
    }
}

impl<T> UringDriver<T> {
    /// [`new`](Self::new) with the `RINGLOOP_DISABLE` list given directly.
    pub(crate) fn with_disabled(disabled: &[&str]) -> io::Result<Self> {
        Self::with_ring(disabled, multi::RING_BUFFERS, multi::BUF_SIZE)
    }

    /// [`with_disabled`](Self::with_disabled) with a buffer ring of `buffers` x `size` bytes.
    fn with_ring(disabled: &[&str], buffers: u16, size: usize) -> io::Result<Self> {
        let disabled = FeatureSet::from_names(disabled.iter().copied());
        let mut setup = setup::setup(disabled)?;
        let mut multi = Multi::default();
        if setup.features.contains(Feature::BufferRing) {
            match register_ring(&setup.ring, buffers, size, multi::BUF_GROUP) {
                Ok(ring) => multi.ring = Some(Rc::new(ring)),
                Err(e) => {
                    log::debug!("io_uring: no provided-buffer ring ({e}); recv by readiness");
                    setup.features.remove(Feature::BufferRing);
                    setup.features.remove(Feature::MultishotRecv);
                    setup.features.remove(Feature::MultishotRecvMsg);
                }
            }
        }
        let eventfd = EventFd::new().map_err(|e| {
            io::Error::new(e.kind(), format!("creating the io_uring driver's eventfd: {e}"))
        })?;
        let register = !disabled.contains(Feature::RegisteredRing);
        let ring_fd = RingFd::new(setup.ring.as_raw_fd(), register);
        if ring_fd.is_registered() {
            setup.features.insert(Feature::RegisteredRing);
        }
        let mut driver = UringDriver {
            ring: setup.ring,
            ring_fd,
            features: setup.features,
            probe: setup.probe,
            slots: Slab::new(),
            backlog: VecDeque::new(),
            ready: VecDeque::new(),
            deferred_closes: Vec::new(),
            wake: WakeOp::new(Arc::new(eventfd)),
            timer: FallbackTimer::new(),
            multi,
            rearm: Vec::new(),
        };
        driver.arm_wake();
        Ok(driver)
    }

    /// Registers the datagram ring at the first `RecvMsgMulti` (`multishot_recvmsg`); if the
    /// kernel refuses, `RecvMsgMulti` takes the readiness route from then on.
    fn ensure_dgram_ring(&mut self) {
        if self.multi.dgram_ring.is_some() || !self.features.contains(Feature::MultishotRecvMsg) {
            return;
        }
        let (buffers, size) =
            self.multi.dgram_shape.unwrap_or((multi::DGRAM_BUFFERS, super::dgram::RING_BUF_SIZE));
        match register_ring(&self.ring, buffers, size, multi::DGRAM_GROUP) {
            Ok(ring) => self.multi.dgram_ring = Some(Rc::new(ring)),
            Err(e) => {
                log::debug!("io_uring: no datagram buffer ring ({e}); recvmsg by readiness");
                self.features.remove(Feature::MultishotRecvMsg);
            }
        }
    }

    /// Re-arms the ops parked on `ENOBUFS` whose ring has buffers again.
    fn rearm_parked(&mut self) {
        if self.multi.parked.is_empty() {
            return;
        }
        for key in std::mem::take(&mut self.multi.parked) {
            let Some(slot) = self.slots.get_mut(key) else { continue };
            if slot.route != Route::Parked {
                continue; // stale: stopped, cancelled or reused meanwhile
            }
            if self.multi.ring_for(&slot.op).map_or(true, |r| r.available() == 0) {
                self.multi.parked.push(key);
                continue;
            }
            match slot.start(key, self.features) {
                // SAFETY: as for the re-arm SQEs in `turn`.
                Start::Sqe(sqe) => unsafe { self.push_sqe(sqe) },
                Start::Done(res) => self.ready.push_back((key, res)),
            }
        }
    }

    /// If op `key` is parked, takes it out of parking with `ECANCELED` queued as its result
    /// (nothing of it is in the kernel); returns whether it was.
    fn unpark_to_ready(&mut self, key: usize) -> bool {
        match self.slots.get_mut(key) {
            Some(slot) if slot.route == Route::Parked => {
                slot.route = Route::Done;
                self.ready.push_back((key, -libc::ECANCELED));
                true
            }
            _ => false,
        }
    }

    /// [`turn`](UringDriver::turn) with user-op CQEs handed to
    /// `on_op(slots, multi, key, res, flags)`.
    fn turn_with<F>(&mut self, timeout: Option<Duration>, on_op: &mut F) -> io::Result<()>
    where
        F: FnMut(&mut Slab<Slot<T>>, &mut Multi, usize, i32, u32),
    {
        self.run_deferred_closes();
        let mut reaped = self.ready.len();
        for (key, res) in self.ready.drain(..) {
            on_op(&mut self.slots, &mut self.multi, key, res, 0);
        }
        reaped += self.flush_backlog(on_op)?;
        let timeout = if reaped > 0 { Some(Duration::ZERO) } else { timeout };
        let waited = self.wait(timeout);
        self.drain_cq(on_op);
        self.flush_overflow(on_op)?;
        waited
    }

    /// Runs the `close(2)` of deferred `Close` ops once the SQ (and the backlog) is in the
    /// kernel; if the kernel cannot take it now, they wait for the next turn.
    fn run_deferred_closes(&mut self) {
        if self.deferred_closes.is_empty() || !self.backlog.is_empty() {
            return;
        }
        if self.ring.submission().is_empty() || self.submit_sq().is_ok() {
            for key in std::mem::take(&mut self.deferred_closes) {
                match self.slots[key].start(key, self.features) {
                    Start::Done(res) => self.ready.push_back((key, res)),
                    // SAFETY: a `Close` never waits for readiness; a poll SQE points to no
                    // memory anyway.
                    Start::Sqe(sqe) => unsafe { self.push_sqe(sqe) },
                }
            }
        }
    }

    /// Pushes `sqe` to the SQ, behind anything in the backlog. A full SQ is submitted to the
    /// kernel to make room; if the kernel takes nothing (`EBUSY`: its CQ is backed up, which
    /// only `turn` may drain), the SQE waits in the backlog.
    ///
    /// # Safety
    /// Every pointer in `sqe` must stay valid until the kernel is done with it: for an op,
    /// until its final CQE.
    unsafe fn push_sqe(&mut self, sqe: squeue::Entry) {
        if self.backlog.is_empty() {
            for _ in 0..2 {
                // SAFETY: the caller keeps what `sqe` points to valid until its final CQE.
                if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                    return;
                }
                match self.submit_sq() {
                    Ok(n) if n > 0 => {}
                    Ok(_) => break,
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                    Err(e) => {
                        log::debug!("io_uring: SQ full and submit failed ({e}); backlogged");
                        break;
                    }
                }
            }
        }
        self.backlog.push_back(sqe);
    }

    /// Arms the wake op.
    fn arm_wake(&mut self) {
        let sqe = self.wake.arm();
        // SAFETY: the read lands in the wake op's boxed buffer, owned by the driver and freed
        // only once the wake op is idle (its CQE arrived), leaked otherwise at shutdown.
        unsafe { self.push_sqe(sqe) };
    }

    /// Moves the backlog into the SQ, submitting (and reaping, to make room for the
    /// completions) whenever it fills; returns how many user-op CQEs were reaped meanwhile.
    fn flush_backlog<F>(&mut self, on_op: &mut F) -> io::Result<usize>
    where
        F: FnMut(&mut Slab<Slot<T>>, &mut Multi, usize, i32, u32),
    {
        let (mut reaped, mut stalled) = (0, 0);
        while let Some(sqe) = self.backlog.front() {
            // SAFETY: backlogged SQEs came through `push_sqe`, whose callers keep what they
            // point to valid until their final CQE.
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                self.backlog.pop_front();
                continue;
            }
            let submitted = self.enter(0, None).or_else(expected_enter_error)?;
            reaped += self.drain_cq(on_op);
            stalled = if submitted == 0 { stalled + 1 } else { 0 };
            if stalled > MAX_STALLED_SUBMITS {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "io_uring: the kernel accepts no SQEs ({} waiting)",
                        self.backlog.len()
                    ),
                ));
            }
        }
        Ok(reaped)
    }

    /// The one `io_uring_enter` of a turn: submit the SQ, wait up to `timeout` for a CQE.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let timeout = timeout.filter(|t| *t < FOREVER);
        let ext_arg = self.features.contains(Feature::ExtArg);
        if let Some(wait) = timeout.filter(|t| !t.is_zero() && !ext_arg) {
            for sqe in self.timer.arm(wait).into_iter().flatten() {
                // SAFETY: timer SQEs point only to the timer's boxed timespec, which lives as
                // long as the driver; the kernel copies it at submission.
                unsafe { self.push_sqe(sqe) };
            }
        }
        // An SQE left in the backlog (the timer's, maybe) would not be submitted: do not block.
        let poll_only = timeout.is_some_and(|t| t.is_zero()) || !self.backlog.is_empty();
        let (want, timeout) = match timeout {
            _ if poll_only && self.features.contains(Feature::DeferTaskrun) && ext_arg => {
                // Since 6.13 an enter runs only max(20, want) deferred completions per pass;
                // asking for a batch with a zero timeout takes them all without waiting.
                (setup::RING_ENTRIES, Some(Duration::ZERO))
            }
            _ if poll_only => (0, None),
            Some(wait) if ext_arg => (1, Some(wait)),
            _ => (1, None),
        };
        self.enter(want, timeout).or_else(expected_enter_error).map(drop)
    }

    /// `io_uring_enter`: submits the whole SQ and, with `GETEVENTS` (which also runs the
    /// `DEFER_TASKRUN` completion work), waits for `want` CQEs, at most `timeout` (via
    /// `EXT_ARG`; only when the kernel has it).
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

    /// Drains the CQ: user-op CQEs to `on_op`, internal ones handled here. Returns how many
    /// user-op CQEs there were.
    fn drain_cq<F>(&mut self, on_op: &mut F) -> usize
    where
        F: FnMut(&mut Slab<Slot<T>>, &mut Multi, usize, i32, u32),
    {
        let (mut ops, mut rearm_wake) = (0, false);
        for cqe in self.ring.completion() {
            let res = cqe.result();
            match Tag::of(cqe.user_data()) {
                Tag::Op(key) => {
                    ops += 1;
                    on_op(&mut self.slots, &mut self.multi, key, res, cqe.flags());
                }
                Tag::Wake => rearm_wake = self.wake.on_complete(res),
                Tag::Timer => self.timer.on_complete(),
                Tag::CancelAny if res == -libc::EINVAL => self.features.remove(Feature::CancelAny),
                Tag::Cancel | Tag::CancelAny | Tag::TimerRemove => {}
            }
        }
        if rearm_wake {
            self.arm_wake();
        }
        ops
    }

    /// With `NODROP`, CQEs that overflowed the CQ ring wait in the kernel until an enter with
    /// `GETEVENTS` flushes them; do that while the SQ ring says so.
    fn flush_overflow<F>(&mut self, on_op: &mut F) -> io::Result<()>
    where
        F: FnMut(&mut Slab<Slot<T>>, &mut Multi, usize, i32, u32),
    {
        for _ in 0..MAX_OVERFLOW_FLUSHES {
            if !self.ring.submission().cq_overflow() {
                break;
            }
            self.enter(0, None).or_else(expected_enter_error)?;
            self.drain_cq(on_op);
        }
        Ok(())
    }
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

impl<T> fmt::Debug for UringDriver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringDriver")
            .field("ring_fd", &self.ring.as_raw_fd())
            .field("features", &self.features)
            .field("in_flight", &self.slots.len())
            .field("backlog", &self.backlog.len())
            .field("ready", &self.ready.len())
            .field("wake", &self.wake)
            .field("timer", &self.timer)
            .field("probe", &self.probe)
            .finish()
    }
}

/// The route of op `key`, if it exists.
fn slot_route<T>(slots: &Slab<Slot<T>>, key: usize) -> Option<Route> {
    slots.get(key).map(|slot| slot.route)
}

/// Maps and registers a provided-buffer ring of `buffers` x `size` bytes as buffer `group`.
fn register_ring(
    ring: &IoUring,
    buffers: u16,
    size: usize,
    group: u16,
) -> io::Result<recv_buf::BufRing> {
    let bufs = recv_buf::BufRing::new(buffers, size)?;
    let (addr, entries) = bufs.ring_addr();
    // SAFETY: the ring mapping stays valid until the buffer group is unregistered or the ring
    // is closed: `UringDriver` drops its `Arc` only after either (see `shutdown.rs`).
    unsafe { ring.submitter().register_buf_ring_with_flags(addr, entries, group, 0) }?;
    Ok(bufs)
}
