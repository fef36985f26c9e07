//! The driver's own SQEs: the eventfd read that makes `turn` wakeable, and the `Timeout` that
//! bounds a wait on kernels without `IORING_FEAT_EXT_ARG`.

use std::cell::UnsafeCell;
use std::fmt;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types};

use super::op::{TIMER, TIMER_REMOVE, WAKE};
use crate::driver::EventFd;

/// How the wake op watches the eventfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WakeMode {
    /// An 8-byte `READ` of the eventfd: the kernel consumes the counter itself.
    Read,
    /// A one-shot `POLL_ADD`, then [`EventFd::drain`] from user space: used when the kernel
    /// answers a read of the non-blocking eventfd with `EAGAIN` instead of waiting.
    Poll,
}

/// Whether the wake op is in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WakeState {
    /// No SQE out: its buffer may be freed.
    Idle,
    /// An SQE is queued or in the kernel: its buffer must stay until its CQE.
    Armed,
}

/// What to do when the wake op completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WakePolicy {
    /// Arm it again (normal running).
    Rearm,
    /// Leave it idle (the driver is shutting down).
    Retire,
}

/// The read (or poll) of the driver's eventfd kept armed on the ring, so that
/// [`EventFd::wake`] from any thread ends a blocked `io_uring_enter`.
pub(super) struct WakeOp {
    /// The eventfd, shared with the wakers.
    fd: Arc<EventFd>,
    /// Where the kernel writes the counter it reads. Boxed: the address handed to the kernel
    /// stays put however the driver moves; freed only when [`WakeState::Idle`], leaked otherwise.
    buf: Box<UnsafeCell<u64>>,
    /// Read or poll.
    pub(super) mode: WakeMode,
    /// In the kernel or not.
    state: WakeState,
    /// Re-arm on completion or not.
    policy: WakePolicy,
}

impl WakeOp {
    /// A wake op for `fd`, not yet armed.
    pub(super) fn new(fd: Arc<EventFd>) -> WakeOp {
        WakeOp {
            fd,
            buf: Box::new(UnsafeCell::new(0)),
            mode: WakeMode::Read,
            state: WakeState::Idle,
            policy: WakePolicy::Rearm,
        }
    }

    /// The eventfd, for wakers.
    pub(super) fn eventfd(&self) -> &Arc<EventFd> {
        &self.fd
    }

    /// Marks the op armed and returns its SQE. The buffer it points to lives in `self` and is
    /// only freed once the op is idle again (see [`abandon`](Self::abandon)).
    pub(super) fn arm(&mut self) -> squeue::Entry {
        self.state = WakeState::Armed;
        let fd = types::Fd(self.fd.as_raw_fd());
        let sqe = match self.mode {
            WakeMode::Read => opcode::Read::new(fd, self.buf.get().cast(), 8).build(),
            WakeMode::Poll => opcode::PollAdd::new(fd, libc::POLLIN as u32).build(),
        };
        sqe.user_data(WAKE)
    }

    /// Handles the wake op's CQE; returns whether to arm it again.
    pub(super) fn on_complete(&mut self, res: i32) -> bool {
        self.state = WakeState::Idle;
        if self.policy == WakePolicy::Retire {
            return false;
        }
        match (self.mode, res) {
            (WakeMode::Read, 0..) => true,
            (WakeMode::Poll, 0..) => {
                if let Err(e) = self.fd.drain() {
                    log::warn!("io_uring: draining the wakeup eventfd failed: {e}");
                }
                true
            }
            (WakeMode::Read, res) if res == -libc::EAGAIN => {
                log::debug!("io_uring: eventfd read gives EAGAIN; waking by poll + drain instead");
                self.mode = WakeMode::Poll;
                true
            }
            (_, res) if res == -libc::EINTR || res == -libc::ECANCELED => true,
            (mode, res) => {
                let err = std::io::Error::from_raw_os_error(res.wrapping_neg());
                log::error!(
                    "io_uring: the {mode:?} of the wakeup eventfd failed ({err}); \
                     wakeups from other threads no longer interrupt this loop's waits"
                );
                false
            }
        }
    }

    /// Whether an SQE of the wake op is out.
    pub(super) fn is_armed(&self) -> bool {
        self.state == WakeState::Armed
    }

    /// Stops re-arming (shutdown).
    pub(super) fn retire(&mut self) {
        self.policy = WakePolicy::Retire;
    }

    /// At shutdown, when the op's CQE did not come: leaks the buffer the kernel may still
    /// write into (a fresh one takes its place) and forgets the op.
    pub(super) fn abandon(&mut self) {
        if self.is_armed() {
            std::mem::forget(std::mem::replace(&mut self.buf, Box::new(UnsafeCell::new(0))));
            self.state = WakeState::Idle;
        }
    }
}

impl fmt::Debug for WakeOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WakeOp")
            .field("fd", &self.fd.as_raw_fd())
            .field("mode", &self.mode)
            .field("state", &self.state)
            .field("policy", &self.policy)
            .finish()
    }
}

/// Whether a fallback timer is out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimerState {
    /// No `Timeout` SQE without its CQE.
    Idle,
    /// The newest `Timeout` SQE ends at `deadline`; `outstanding` counts the timer SQEs (the
    /// newest and any withdrawn ones) whose CQE has not arrived. The newest CQE always comes
    /// last, since a withdrawn timer completes when its removal is submitted, before the
    /// newest starts.
    Armed {
        /// When the newest timer fires.
        deadline: Instant,
        /// Timer CQEs still to come.
        outstanding: u32,
    },
}

/// The internal `Timeout` SQE that bounds a wait when `io_uring_enter` cannot take a timeout
/// (no `IORING_FEAT_EXT_ARG`, before 5.11). One timer is live at a time; a later, shorter wait
/// withdraws it with `TimeoutRemove` and arms a new one; a longer wait keeps it (returning
/// early is an allowed spurious return).
#[derive(Debug)]
pub(super) struct FallbackTimer {
    /// The duration the newest `Timeout` SQE points to. Boxed so its address is stable; the
    /// kernel copies it when the SQE is submitted.
    ts: Box<types::Timespec>,
    /// Live timer or not.
    state: TimerState,
}

impl FallbackTimer {
    /// An idle timer.
    pub(super) fn new() -> FallbackTimer {
        FallbackTimer { ts: Box::new(types::Timespec::new()), state: TimerState::Idle }
    }

    /// The SQEs (up to two: withdraw the old timer, arm a new one) that make a wait of `wait`
    /// end in time. The timespec they point to lives in `self`.
    pub(super) fn arm(&mut self, wait: Duration) -> [Option<squeue::Entry>; 2] {
        let deadline = Instant::now() + wait;
        let (remove, outstanding) = match self.state {
            TimerState::Armed { deadline: live, .. } if live <= deadline => return [None, None],
            TimerState::Armed { outstanding, .. } => {
                let sqe = opcode::TimeoutRemove::new(TIMER).build().user_data(TIMER_REMOVE);
                (Some(sqe), outstanding + 1)
            }
            TimerState::Idle => (None, 1),
        };
        *self.ts = types::Timespec::from(wait);
        self.state = TimerState::Armed { deadline, outstanding };
        let arm = opcode::Timeout::new(&*self.ts).build().user_data(TIMER);
        [remove, Some(arm)]
    }

    /// Handles a timer CQE (fired or withdrawn).
    pub(super) fn on_complete(&mut self) {
        self.state = match self.state {
            TimerState::Armed { deadline, outstanding } if outstanding > 1 => {
                TimerState::Armed { deadline, outstanding: outstanding - 1 }
            }
            _ => TimerState::Idle,
        };
    }
}
