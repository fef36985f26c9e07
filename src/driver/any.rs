//! Enum dispatch over the backends: probe io_uring, fall back to epoll with a logged reason.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::uring::UringDriver;
use super::{Backend, Completion, EventFd, Op, OpId};
use crate::error::Error;

/// The driver a loop runs on. Methods are two-arm matches; see the contract in `driver/mod.rs`.
#[derive(Debug)]
// One driver per loop, inside `Rc<Inner>`: its size does not matter, and boxing the larger
// variant would add a pointer chase to every call on the hot path.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Driver<T: Clone> {
    /// io_uring.
    Uring(UringDriver<T>),
    /// epoll (feature `fallback`).
    #[cfg(feature = "fallback")]
    Epoll(super::epoll::EpollDriver<T>),
}

macro_rules! dispatch {
    ($self:expr, $d:ident => $body:expr) => {
        match $self {
            Driver::Uring($d) => $body,
            #[cfg(feature = "fallback")]
            Driver::Epoll($d) => $body,
        }
    };
}

impl<T: Clone> Driver<T> {
    /// Opens the backend `choice` names, or the best the kernel has when it is `None`.
    pub(crate) fn open(choice: Option<Backend>) -> Result<Driver<T>, Error> {
        match choice {
            Some(Backend::Uring) => UringDriver::new().map(Driver::Uring).map_err(uring_error),
            Some(Backend::Epoll) => Self::open_epoll(),
            None => match UringDriver::new() {
                Ok(driver) => Ok(Driver::Uring(driver)),
                Err(err) if cfg!(feature = "fallback") => {
                    crate::error::loop_log!(
                        Warn,
                        "io_uring is unavailable: {err}. ringloop runs on epoll"
                    );
                    Self::open_epoll()
                }
                Err(err) => Err(uring_error(err)),
            },
        }
    }

    #[cfg(feature = "fallback")]
    fn open_epoll() -> Result<Driver<T>, Error> {
        super::epoll::EpollDriver::new()
            .map(Driver::Epoll)
            .map_err(|e| Error::io("creating the epoll driver", e))
    }

    #[cfg(not(feature = "fallback"))]
    fn open_epoll() -> Result<Driver<T>, Error> {
        Err(Error::Unsupported(
            "the epoll backend is not compiled in: build ringloop with `--features fallback`"
                .into(),
        ))
    }

    /// Which backend this is.
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Driver::Uring(_) => Backend::Uring,
            #[cfg(feature = "fallback")]
            Driver::Epoll(_) => Backend::Epoll,
        }
    }

    /// Queues `op` for the kernel; `owner` comes back with its completion.
    pub(crate) fn submit(&mut self, op: Op, owner: T) -> OpId {
        dispatch!(self, d => d.submit(op, owner))
    }

    /// Detaches `id`'s owner and cancels the op; see the contract.
    pub(crate) fn cancel(&mut self, id: OpId) -> Option<T> {
        dispatch!(self, d => d.cancel(id))
    }

    /// Cancels one-shot op `id` if nothing of it has happened yet (no byte moved, no
    /// connection begun) and returns its owner; `None` leaves the op as it was. See the
    /// contract. The op comes back too (a batched send's copy is still to be sent).
    pub(crate) fn withdraw(&mut self, id: OpId) -> Option<(T, Op)> {
        dispatch!(self, d => d.withdraw(id))
    }

    /// Appends `buffers` to the owned copy of send `id` while the kernel has not seen it
    /// ([`SendBuf::Copied`](super::SendBuf::Copied), queued); false, with nothing done,
    /// otherwise. See the contract.
    pub(crate) fn append(&mut self, id: OpId, buffers: &[&[u8]]) -> bool {
        dispatch!(self, d => d.append(id, buffers))
    }

    /// Ends persistent op `id` ([`Op::RecvMulti`], [`Op::RecvMsgMulti`], [`Op::AcceptMulti`])
    /// but keeps its owner:
    /// what the kernel already took is delivered, then a final `ECANCELED`. No-op for an
    /// unknown id. See the contract.
    pub(crate) fn end_gracefully(&mut self, id: OpId) {
        dispatch!(self, d => d.end_gracefully(id))
    }

    /// Hands the kernel the ops queued so far without waiting (io_uring; a no-op on epoll);
    /// completions that come of it are appended to `out`. See the contract.
    pub(crate) fn submit_queued(&mut self, out: &mut Vec<Completion<T>>) -> io::Result<()> {
        match self {
            Driver::Uring(d) => d.submit_queued(out),
            #[cfg(feature = "fallback")]
            Driver::Epoll(_) => Ok(()),
        }
    }

    /// Submits, waits up to `timeout` (`None` = until something happens), collects completions.
    pub(crate) fn turn(
        &mut self,
        timeout: Option<Duration>,
        out: &mut Vec<Completion<T>>,
    ) -> io::Result<()> {
        dispatch!(self, d => d.turn(timeout, out))
    }

    /// The eventfd that interrupts a blocked [`turn`](Self::turn) from any thread.
    pub(crate) fn waker(&self) -> Arc<EventFd> {
        dispatch!(self, d => d.waker())
    }

    /// The optional kernel features in use, for logs (`["single_issuer", "defer_taskrun", ...]`).
    pub(crate) fn features(&self) -> Vec<&'static str> {
        dispatch!(self, d => d.features())
    }

    /// Closes `fd`, which ops may have named, once every op naming it ended (withdrawn before
    /// it reached the kernel, or completed): at once when none is left. The only way the loop
    /// closes an fd it handed to the driver; see "Fd numbers" in `driver/mod.rs`.
    pub(crate) fn close_fd(&mut self, fd: std::os::fd::OwnedFd) {
        dispatch!(self, d => d.close_fd(fd))
    }

    /// The loop stopped using `fd`, which it does not own (a user's socket after a `sock_*`
    /// call, an fd whose watch was removed): the user may close it and its number may be
    /// reused before the next turn. See the contract in `driver/mod.rs`.
    pub(crate) fn forget_fd(&mut self, fd: std::os::fd::RawFd) {
        match self {
            // io_uring keys nothing by fd number, and a queued op on the fd was withdrawn by
            // its cancel: nothing names it.
            Driver::Uring(_) => {}
            #[cfg(feature = "fallback")]
            Driver::Epoll(d) => d.forget_fd(fd),
        }
        let _ = fd;
    }

    /// Cancels everything and waits (bounded) for the kernel to hand every op back; returns
    /// whether it did, and the ops' owners, detached, for the caller to drop now (see
    /// "Shutdown" in the contract). Idempotent; the drop does it too.
    pub(crate) fn shut_down(&mut self) -> (bool, Vec<T>) {
        dispatch!(self, d => d.shutdown())
    }

    /// Ops submitted and not yet ended: io_uring counts a cancelled op until the kernel hands
    /// it back (its final CQE); epoll drops a cancelled op at once.
    pub(crate) fn in_flight(&self) -> usize {
        dispatch!(self, d => d.in_flight())
    }
}

fn uring_error(err: io::Error) -> Error {
    let hint = if cfg!(feature = "fallback") {
        ""
    } else {
        "; build ringloop with `--features fallback` to run on epoll instead"
    };
    Error::Unsupported(format!("io_uring is unavailable on this kernel ({err}){hint}"))
}
