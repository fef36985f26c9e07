//! The skeleton every transport is built on (asyncio's `_SelectorTransport` with
//! `_FlowControlMixin`): the fd, the one lifecycle, the protocol's dispatcher, the lost-write
//! rule, and closing: [`TransportBase`] holds the state, [`TransportCore`] the behaviour. A transport
//! composes it with a read side (`read_side.rs`), a write side (`write_side.rs`) or its own
//! datagram paths, and says only what is its own: which ops it has, how it closes gently.
//!
//! # Lifecycle
//! ```text
//!  Open ──close()──► Closing (no reads; flushing what is buffered) ──flushed──► Closed
//!   │                                                                           ▲
//!   └──abort() / fatal error / EOF ─────────────────────────────────────────────┘
//! ```
//! Entering `Closed` ([`TransportCore::finish`]: the end of a gentle close once flushed, an
//! abort, a fatal error, EOF) cancels every op in flight, drops what is still buffered (only an
//! abort or an error leaves anything), and schedules `connection_lost` for the next iteration;
//! right after it the fd goes to the driver to be closed ([`LoopFd::close`]), which waits for
//! any cancelled op the kernel still holds. `connection_lost` is delivered exactly once; the
//! protocol is dropped after it.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use crate::dispatch::{Deliver, Dispatcher, ErasedProtocol};
use crate::error::{Error, Result};
use crate::event_loop::LoopFd;
use crate::event_loop::{EventLoop, OpTarget, OpenKey, OpenTransport};
use crate::flow_control::FlowEvent;

/// Writes after the connection is gone are logged once more than this many were lost
/// (asyncio's `LOG_THRESHOLD_FOR_CONNLOST_WRITES`), on every transport alike.
const LOST_WRITES_LOG_THRESHOLD: u32 = 5;

/// The count of writes a transport (or the TLS layer) no longer takes, and the rule for
/// logging them.
#[derive(Default)]
pub(crate) struct LostWrites(Cell<u32>);

impl LostWrites {
    /// Counts a lost write, and logs `message` once more than [`LOST_WRITES_LOG_THRESHOLD`]
    /// were lost.
    pub(crate) fn count(&self, message: &str) {
        let lost = self.0.get() + 1;
        self.0.set(lost);
        if lost > LOST_WRITES_LOG_THRESHOLD {
            log::warn!(target: "ringloop", "{message}");
        }
    }
}

/// A transport's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Life {
    /// Reading and writing.
    Open,
    /// `close()` (or `write_eof()` on a pipe): no more reads; closes once what is buffered is
    /// written.
    Closing,
    /// Done: `connection_lost` is scheduled or delivered, and the fd closed after it.
    Closed,
}

/// The state every transport has.
pub(crate) struct TransportBase<E: Deliver> {
    /// The fd and its loop.
    pub(crate) fd: LoopFd,
    /// Lifecycle.
    life: Cell<Life>,
    /// The protocol and the re-entrancy guard around it.
    pub(crate) dispatcher: Dispatcher<E>,
    /// Writes after the transport stopped taking them.
    lost_writes: LostWrites,
    /// Called once, after `connection_lost` was delivered and the fd handed to the driver
    /// (servers count their connections).
    lost_hooks: RefCell<Vec<Box<dyn FnOnce()>>>,
    /// Where the loop lists the transport from its start until `connection_lost` (see
    /// [`OpenTransport`]).
    open_key: OpenKey,
}

impl<E: Deliver> TransportBase<E> {
    /// `fd` on `event_loop`, driving `protocol`.
    pub(crate) fn new(
        event_loop: &EventLoop,
        fd: OwnedFd,
        protocol: Rc<dyn ErasedProtocol<E>>,
    ) -> TransportBase<E> {
        TransportBase {
            fd: LoopFd::new(event_loop, fd),
            life: Cell::new(Life::Open),
            dispatcher: Dispatcher::new(protocol),
            lost_writes: LostWrites::default(),
            lost_hooks: RefCell::new(Vec::new()),
            open_key: OpenKey::default(),
        }
    }

    /// Where the transport is in its life.
    #[inline]
    pub(crate) fn life(&self) -> Life {
        self.life.get()
    }

    /// True while open (not closing, not closed).
    #[inline]
    pub(crate) fn is_open(&self) -> bool {
        self.life.get() == Life::Open
    }

    /// True once closed.
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.life.get() == Life::Closed
    }

    /// `Open` → `Closing`; false if not open.
    pub(crate) fn start_closing(&self) -> bool {
        if !self.is_open() {
            return false;
        }
        self.life.set(Life::Closing);
        true
    }

    /// Counts a write the transport no longer takes (see [`LostWrites`]).
    pub(crate) fn lost_write(&self, message: &str) {
        self.lost_writes.count(message);
    }

    /// Calls `hook` once `connection_lost` was delivered and the fd handed to the driver (at
    /// the next iteration if that already happened).
    pub(crate) fn on_lost(&self, hook: impl FnOnce() + 'static) {
        if self.is_closed() && !self.fd.is_open() {
            if let Some(event_loop) = self.fd.event_loop() {
                let _ = event_loop.call_soon(hook);
            }
            return;
        }
        self.lost_hooks.borrow_mut().push(Box::new(hook));
    }
}

/// The behaviour every transport shares, on top of its [`TransportBase`]. A transport says which ops
/// it has ([`end_sides`](Self::end_sides), [`close_fd`](Self::close_fd)), what a gentle close
/// is ([`close`](Self::close)) and how it names itself (`Debug`); the rest is provided.
pub(crate) trait TransportCore: OpTarget + fmt::Debug + Sized + 'static {
    /// The callbacks its protocol takes.
    type Event: Deliver + From<FlowEvent>;

    /// The shared state.
    fn base(&self) -> &TransportBase<Self::Event>;

    /// Ends every side for good: cancels every op in flight (their slots are emptied) and
    /// drops what is still buffered to write (nothing after a gentle close, which waits for
    /// the flush; the rest of the buffer after an abort or a fatal error). `error` is why the
    /// transport closes (`None`: a clean close or an abort).
    fn end_sides(&self, error: Option<&Error>);

    /// Hands the fd to the driver to close, with the slots of whatever is still in flight
    /// ([`LoopFd::close`]).
    fn close_fd(&self);

    /// The gentle close (asyncio's `close()`): flush what is buffered, then finish.
    fn close(self: &Rc<Self>);

    /// The transport as messages name it (`<Transport fd=7 Open ...>`): its `Debug`.
    fn describe(&self) -> String {
        format!("{self:?}")
    }

    /// The loop, while it exists.
    fn event_loop(&self) -> Option<EventLoop> {
        self.base().fd.event_loop()
    }

    /// Enters `Closed` (a gentle close once flushed; at once for an abort or a fatal error):
    /// ends the sides ([`end_sides`](Self::end_sides): ops cancelled, the buffer dropped) and
    /// schedules `connection_lost(error)`, after which the fd is closed. No-op once closed.
    fn finish(self: &Rc<Self>, error: Option<Error>) {
        if self.enter_closed(error.as_ref()) {
            self.schedule_lost(error);
        }
    }

    /// Enters `Closed` and ends the sides, without scheduling `connection_lost`
    /// yet (the caller does, after a last callback); false if it was closed already.
    fn enter_closed(&self, error: Option<&Error>) -> bool {
        if self.base().life.replace(Life::Closed) == Life::Closed {
            return false;
        }
        self.end_sides(error);
        true
    }

    /// Schedules `connection_lost(error)` for the next iteration, then the close of the fd
    /// and the lost hooks; a `connection_lost` that met a borrowed protocol is retried until
    /// delivered. Without a loop (or once it is closed) the fd is closed at once, the protocol
    /// let go of, and no `connection_lost` comes.
    fn schedule_lost(self: &Rc<Self>, error: Option<Error>) {
        let Some(event_loop) = self.event_loop() else { return self.release_at_close() };
        let core = self.clone();
        let scheduled = event_loop.call_soon(move || {
            core.notify(Self::Event::lost(error));
            core.close_fd();
            if let Some(event_loop) = core.event_loop() {
                event_loop.unlist_open(&core.base().open_key);
            }
            for hook in core.base().lost_hooks.take() {
                hook();
            }
            core.flush_deferred_later();
        });
        if scheduled.is_err() {
            self.release_at_close();
        }
    }

    /// Calls the protocol (through the dispatcher), then acts on a failure in it.
    fn notify(self: &Rc<Self>, event: Self::Event) {
        self.base().dispatcher.send(event);
        self.report_protocol_failures();
    }

    /// `pause_writing` or `resume_writing`, when a change of the write buffer says so.
    fn notify_flow(self: &Rc<Self>, flow: Option<FlowEvent>) {
        if let Some(flow) = flow {
            self.notify(flow.into());
        }
    }

    /// Acts on what the protocol calls just made asked for: a callback that failed is
    /// reported, and a data or EOF callback that failed closes the transport with its error
    /// (see [`Dispatcher::report_failures`]); an `eof_received` that answered "close" closes
    /// gently. True if the transport is closed now.
    fn report_protocol_failures(self: &Rc<Self>) -> bool {
        let base = self.base();
        let report = |context| base.fd.report(context, || self.describe());
        if let Some(error) = base.dispatcher.report_failures(report) {
            self.finish(Some(error));
        } else if base.dispatcher.take_close_after_eof() {
            self.close();
        }
        base.is_closed()
    }

    /// Events that met a protocol borrowed outside its callbacks (user code holding the
    /// `RefCell` borrow) are retried next iteration until delivered: none is ever lost.
    fn flush_deferred_later(self: &Rc<Self>) {
        if !self.base().dispatcher.has_deferred() {
            return;
        }
        let Some(event_loop) = self.event_loop() else { return };
        let core = self.clone();
        let _ = event_loop.call_soon(move || {
            core.base().dispatcher.flush();
            core.report_protocol_failures();
            core.flush_deferred_later();
        });
    }

    /// Schedules the start for the next iteration: `connection_made(made)`, then `then` (the
    /// first op), then the retry of what met a borrowed protocol.
    fn start(
        self: &Rc<Self>,
        made: Self::Event,
        then: impl FnOnce(&Rc<Self>) + 'static,
    ) -> Result<()> {
        let Some(event_loop) = self.event_loop() else { return Err(Error::Closed) };
        let core = self.clone();
        event_loop.call_soon(move || {
            core.notify(made);
            then(&core);
            core.flush_deferred_later();
        })?;
        let open: std::rc::Weak<Self> = Rc::downgrade(self);
        event_loop.list_open(open, &self.base().open_key);
        Ok(())
    }
}

impl<T: TransportCore> OpenTransport for T {
    fn release_at_close(&self) {
        self.enter_closed(None);
        self.close_fd();
        let base = self.base();
        drop(base.lost_hooks.take());
        base.dispatcher.release();
    }
}
