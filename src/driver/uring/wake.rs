//! The driver's own wake-up op: an eventfd read kept armed on the ring, so that
//! [`EventFd::wake`] from any thread ends a blocked `io_uring_enter`.

use std::cell::UnsafeCell;
use std::fmt;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use io_uring::{opcode, squeue, types};

use super::slot::WAKE;
use crate::driver::EventFd;

/// Where the wake op is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WakeState {
    /// No SQE out: its buffer may be freed.
    Idle,
    /// An SQE is queued or in the kernel: its buffer must stay until its CQE.
    Armed,
    /// Shutting down: not re-armed after its CQE.
    Retiring,
    /// Shut down: no SQE out, none to come.
    Retired,
}

/// The eventfd read the driver keeps armed.
pub(super) struct WakeOp {
    /// The eventfd, shared with the wakers.
    fd: Arc<EventFd>,
    /// Where the kernel writes the counter it reads. Boxed: the address handed to the kernel
    /// stays put however the driver moves; freed only when no SQE is out, leaked otherwise.
    buf: Box<UnsafeCell<u64>>,
    /// In the kernel or not.
    state: WakeState,
}

impl WakeOp {
    /// A wake op for `fd`, not yet armed.
    pub(super) fn new(fd: Arc<EventFd>) -> WakeOp {
        WakeOp { fd, buf: Box::new(UnsafeCell::new(0)), state: WakeState::Idle }
    }

    /// The eventfd, for wakers.
    pub(super) fn eventfd(&self) -> &Arc<EventFd> {
        &self.fd
    }

    /// Marks the op armed and returns its SQE, an 8-byte `READ` of the eventfd (the kernel
    /// waits on the non-blocking eventfd by its internal poll and consumes the counter). The
    /// buffer it points to lives in `self` and is only freed once the op is idle again.
    pub(super) fn arm(&mut self) -> squeue::Entry {
        self.state = WakeState::Armed;
        let fd = types::Fd(self.fd.as_raw_fd());
        opcode::Read::new(fd, self.buf.get().cast(), 8).build().user_data(WAKE)
    }

    /// Handles the wake op's CQE; returns whether to arm it again.
    pub(super) fn on_complete(&mut self, res: i32) -> bool {
        if self.state == WakeState::Retiring {
            self.state = WakeState::Retired;
            return false;
        }
        self.state = WakeState::Idle;
        if res >= 0 || res == -libc::EINTR || res == -libc::ECANCELED {
            return true;
        }
        let err = std::io::Error::from_raw_os_error(res.wrapping_neg());
        log::error!(
            "io_uring: the read of the wakeup eventfd failed ({err}); wakeups from other \
             threads no longer interrupt this loop's waits"
        );
        false
    }

    /// Whether an SQE of the wake op is out.
    pub(super) fn is_armed(&self) -> bool {
        matches!(self.state, WakeState::Armed | WakeState::Retiring)
    }

    /// Stops re-arming (shutdown).
    pub(super) fn retire(&mut self) {
        self.state = match self.state {
            WakeState::Armed | WakeState::Retiring => WakeState::Retiring,
            WakeState::Idle | WakeState::Retired => WakeState::Retired,
        };
    }

    /// At shutdown, when the op's CQE did not come: leaks the buffer the kernel may still
    /// write into (a fresh one takes its place) and forgets the op.
    pub(super) fn abandon(&mut self) {
        if self.is_armed() {
            std::mem::forget(std::mem::replace(&mut self.buf, Box::new(UnsafeCell::new(0))));
            self.state = WakeState::Retired;
        }
    }
}

impl fmt::Debug for WakeOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WakeOp")
            .field("fd", &self.fd.as_raw_fd())
            .field("state", &self.state)
            .finish()
    }
}
