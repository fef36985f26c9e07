//! Awaitable driver ops: `submit_op(op).await` gives the kernel's result and the op back.
//!
//! The shared mechanism under `create_connection` (connect), servers (accept) and the `sock_*`
//! calls. Dropping an [`OpFuture`] before it completes cancels the op; the driver keeps the op's
//! memory until the kernel is done with it (see the contract in `driver/mod.rs`).

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use super::{Completed, EventLoop, Inner, OpOwner, OpTarget};
use crate::driver::{Op, OpId};
use crate::error::{ArgumentKind, Result};

/// What an awaited op has reached.
enum WaiterState {
    /// In flight; the waker of the task awaiting it.
    Pending(Option<Waker>),
    /// Completed: the result and the op (with its buffers).
    Done(io::Result<u32>, Option<Op>),
    /// The output was taken by the future.
    Taken,
}

/// The owner the driver holds for an awaited op.
pub(crate) struct OpWaiter {
    /// Where the op is.
    state: RefCell<WaiterState>,
}

impl OpTarget for OpWaiter {
    /// Records the completion and wakes the awaiting task.
    fn complete(self: Rc<Self>, done: Completed) {
        let Completed { result, op, .. } = done;
        let previous =
            std::mem::replace(&mut *self.state.borrow_mut(), WaiterState::Done(result, op));
        if let WaiterState::Pending(Some(waker)) = previous {
            waker.wake();
        }
    }
}

/// A driver op being awaited. Output: the kernel's result and the op with its buffers.
pub(crate) struct OpFuture {
    /// Shared with the driver's owner slot.
    waiter: Rc<OpWaiter>,
    /// The op, for cancellation on drop.
    id: OpId,
    /// The loop whose driver runs the op.
    event_loop: Weak<Inner>,
}

impl EventLoop {
    /// Submits `op` and returns a future for its completion (`Error::Closed` on a closed loop).
    /// A persistent op completes many times and is refused: it has
    /// [`accepts`](EventLoop::accepts).
    pub(crate) fn submit_op(&self, op: Op) -> Result<OpFuture> {
        self.check_open()?;
        if op.is_persistent() {
            return Err(crate::Error::invalid_argument(
                ArgumentKind::Other,
                format!("{op:?} completes many times; an awaited op completes once"),
            ));
        }
        let waiter = Rc::new(OpWaiter { state: RefCell::new(WaiterState::Pending(None)) });
        let owner: OpOwner = waiter.clone();
        let id = self.with_driver(|driver| driver.submit(op, owner)).ok_or(crate::Error::Closed)?;
        Ok(OpFuture { waiter, id, event_loop: Rc::downgrade(&self.inner) })
    }
}

impl Future for OpFuture {
    type Output = (io::Result<u32>, Option<Op>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.waiter.state.borrow_mut();
        match std::mem::replace(&mut *state, WaiterState::Taken) {
            WaiterState::Pending(_) => {
                *state = WaiterState::Pending(Some(cx.waker().clone()));
                Poll::Pending
            }
            WaiterState::Done(result, op) => Poll::Ready((result, op)),
            WaiterState::Taken => {
                Poll::Ready((Err(io::Error::other("op output already taken")), None))
            }
        }
    }
}

impl Drop for OpFuture {
    fn drop(&mut self) {
        if !matches!(*self.waiter.state.borrow(), WaiterState::Pending(_)) {
            return;
        }
        if let Some(inner) = self.event_loop.upgrade() {
            EventLoop { inner }.with_driver(|driver| driver.cancel(self.id));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    use crate::driver::{Interest, Op};
    use crate::EventLoop;

    fn loops() -> Vec<EventLoop> {
        crate::test_support::loops("op_future")
    }

    #[test]
    fn an_awaited_op_completes_with_its_result_and_op() {
        for lp in loops() {
            let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
            b.write_all(b"x").unwrap();
            let op = Op::Poll { fd: a.as_raw_fd(), interest: Interest::READ };
            let future = lp.submit_op(op).unwrap();
            let (result, op) = lp.run_until_complete(future).unwrap();
            assert!(result.unwrap() & libc::POLLIN as u32 != 0, "{:?}", lp.backend());
            assert!(matches!(op, Some(Op::Poll { .. })));
            assert_eq!(lp.ops_in_flight(), 0);
            lp.close().unwrap();
        }
    }

    #[test]
    fn dropping_a_pending_op_cancels_it() {
        for lp in loops() {
            let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
            let op = Op::Poll { fd: a.as_raw_fd(), interest: Interest::READ };
            let future = lp.submit_op(op).unwrap();
            assert_eq!(lp.ops_in_flight(), 1);
            drop(future);
            // The io_uring backend frees the slot when the cancellation's CQE arrives.
            for _ in 0..10 {
                if lp.ops_in_flight() == 0 {
                    break;
                }
                let stopper = lp.clone();
                lp.call_soon(move || stopper.stop()).unwrap();
                lp.run_forever().unwrap();
            }
            assert_eq!(lp.ops_in_flight(), 0, "{:?}", lp.backend());
            lp.close().unwrap();
        }
    }

    #[test]
    fn a_persistent_op_is_refused() {
        for lp in loops() {
            let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
            let err = lp.submit_op(Op::RecvMulti { fd: a.as_raw_fd() }).err().expect("refused");
            assert!(matches!(err, crate::Error::InvalidArgument { .. }), "{err}");
            assert_eq!(lp.ops_in_flight(), 0);
            lp.close().unwrap();
        }
    }

    #[test]
    fn a_dropped_accept_that_accepted_anyway_does_not_leak_the_fd() {
        use std::io::Read;
        for lp in loops() {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            listener.set_nonblocking(true).unwrap();
            let future = lp.accepts(listener.as_raw_fd()).unwrap();
            drop(future);
            for _ in 0..5 {
                let stopper = lp.clone();
                lp.call_soon(move || stopper.stop()).unwrap();
                lp.run_forever().unwrap();
            }
            drop(listener);
            // Accepted and leaked, the connection would stay open: the read would time out.
            client.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
            let mut byte = [0u8; 1];
            match client.read(&mut byte) {
                Ok(0) => {}
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => panic!("{:?}: the connection is still open: {other:?}", lp.backend()),
            }
            lp.close().unwrap();
        }
    }
}
