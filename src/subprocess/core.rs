//! The shared state of a subprocess transport (asyncio's `BaseSubprocessTransport`): the
//! child, its pipe transports, the protocol's dispatcher, and the watch on the child's exit.
//!
//! # Exit without a thread per child
//! [`ExitWatch`] is the owner of one `Op::WaitId` on the child's pidfd, on either backend: the
//! driver waits for the exit and reaps the child (an `IORING_OP_WAITID`, or a readable pidfd
//! and one `waitid(P_PIDFD)`), and the protocol hears `process_exited`. The op's `ExitInfo`
//! (the child's siginfo) is shared with the watch: a watch dropped with the loop reads it to
//! learn whether the cancelled op reaped the child after all (a `WAITID` the exit had already
//! woken) before it kills and reaps the child itself, so no status is lost and nothing is
//! reaped twice.
//!
//! The watch holds the core, so a running child keeps its transport alive (as asyncio's
//! child watcher does) whether or not the user kept a handle. The watch is dropped without a
//! completion only when the driver goes, i.e. when the loop closes: it then kills the child
//! and reaps it ([`Child::kill_and_reap`]), so closing a loop leaves no child and no zombie.
//!
//! # Order of callbacks
//! Pipes are connected before `connection_made`; what they report meanwhile (data, EOF, the
//! exit) waits in `pending` (asyncio's `_pending_calls`) and follows `connection_made` in
//! order. `connection_lost` comes once the child was reaped **and** every pipe's
//! `pipe_connection_lost` was delivered.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::os::fd::RawFd;
use std::rc::Rc;

use super::child::Child;
use super::protocol::{FailedPipes, SubprocessEvent};
use super::transport::{PipeTransport, SubprocessTransport};
use crate::dispatch::{Dispatcher, ErasedProtocol};
use crate::driver::{ExitInfo, Op};
use crate::error::Error;
use crate::event_loop::{Completed, ExceptionContext, OpTarget, OpenKey, OpenTransport};
use crate::streams::Wakers;

/// Whether protocol callbacks go out yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    /// The pipes are being connected: events wait in `pending` for `connection_made`.
    Holding,
    /// `connection_made` and what was pending were delivered: events go out as they come.
    Open,
}

/// The transport's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    /// The child runs or its pipes are open.
    Open,
    /// `close()` was called: the pipes are closing, and the child was killed if it ran.
    Closing,
    /// The child was reaped and every pipe closed: `connection_lost` was sent, nothing more
    /// comes. Also a start that was given up (nothing at all reaches the protocol then).
    Finished,
}

/// One of the child's standard streams, as the transport sees it.
enum PipeSlot {
    /// Not a pipe to the loop (or not connected yet).
    None,
    /// Connected; `pipe_connection_lost` not yet sent. The error, if its
    /// `pipe_data_received` failed and the transport closed it for that.
    Open(PipeTransport, Option<Error>),
    /// `pipe_connection_lost` was sent.
    Lost(PipeTransport),
}

/// The state a [`SubprocessTransport`] and its clones share.
pub(crate) struct SubprocessCore {
    /// The child.
    pub(super) child: Child,
    /// The user's protocol and the re-entrancy queue around it.
    dispatcher: Dispatcher<SubprocessEvent>,
    /// Failed `pipe_data_received` calls, filled by the protocol adapter.
    failed_pipes: Rc<FailedPipes>,
    /// Whether events go out yet.
    gate: Cell<Gate>,
    /// Events waiting for `connection_made`.
    pending: RefCell<VecDeque<SubprocessEvent>>,
    /// Open, closing or finished.
    life: Cell<Life>,
    /// The pipes, by the child's fd (0, 1, 2).
    pipes: RefCell<[PipeSlot; 3]>,
    /// Tasks waiting for the exit ([`Process::wait`](super::Process::wait)).
    exit_wakers: Wakers,
    /// Where the loop lists the transport from its start until `connection_lost` (see
    /// [`OpenTransport`]).
    open_key: OpenKey,
}

impl SubprocessCore {
    /// A core for `child`, driving `protocol` (through `failed_pipes`' adapter).
    pub(crate) fn new(
        child: Child,
        protocol: Rc<dyn ErasedProtocol<SubprocessEvent>>,
        failed_pipes: Rc<FailedPipes>,
    ) -> Rc<SubprocessCore> {
        Rc::new(SubprocessCore {
            child,
            dispatcher: Dispatcher::new(protocol),
            failed_pipes,
            gate: Cell::new(Gate::Holding),
            pending: RefCell::new(VecDeque::new()),
            life: Cell::new(Life::Open),
            pipes: RefCell::new([PipeSlot::None, PipeSlot::None, PipeSlot::None]),
            exit_wakers: Wakers::default(),
            open_key: OpenKey::default(),
        })
    }

    /// Records the transport of the pipe to the child's `fd`.
    pub(crate) fn set_pipe(&self, fd: RawFd, transport: PipeTransport) {
        self.pipes.borrow_mut()[fd as usize] = PipeSlot::Open(transport, None);
    }

    /// The transport of the pipe to the child's `fd`, if it is one.
    pub(crate) fn pipe(&self, fd: RawFd) -> Option<PipeTransport> {
        match self.pipes.borrow().get(usize::try_from(fd).ok()?)? {
            PipeSlot::None => None,
            PipeSlot::Open(transport, _) | PipeSlot::Lost(transport) => Some(transport.clone()),
        }
    }

    /// The pipes still open.
    fn open_pipes(&self) -> Vec<PipeTransport> {
        let pipes = self.pipes.borrow();
        let open = pipes.iter().filter_map(|slot| match slot {
            PipeSlot::Open(transport, _) => Some(transport.clone()),
            _ => None,
        });
        open.collect()
    }

    /// Where the protocol adapter records failed `pipe_data_received` calls (`set_protocol`).
    pub(crate) fn failed_pipes(&self) -> Rc<FailedPipes> {
        self.failed_pipes.clone()
    }

    /// The protocol's dispatcher (`get_protocol`, `set_protocol`).
    pub(crate) fn dispatcher(&self) -> &Dispatcher<SubprocessEvent> {
        &self.dispatcher
    }

    /// True once `close()` was called or `connection_lost` sent.
    pub(crate) fn is_closing(&self) -> bool {
        self.life.get() != Life::Open
    }

    /// Registers `cx`'s waker for the exit.
    pub(crate) fn wait_exit(&self, waker: &std::task::Waker) {
        self.exit_wakers.register(waker);
    }

    /// The start: `connection_made(transport)`, then what the pipes reported meanwhile (what
    /// the callbacks cause queues behind), then the exit watch.
    pub(crate) fn start(self: &Rc<Self>, transport: SubprocessTransport) {
        self.deliver(SubprocessEvent::Made(transport));
        loop {
            let Some(event) = self.pending.borrow_mut().pop_front() else { break };
            self.deliver(event);
        }
        self.gate.set(Gate::Open);
        if let Some(event_loop) = self.event_loop() {
            let open: std::rc::Weak<Self> = Rc::downgrade(self);
            event_loop.list_open(open, &self.open_key);
        }
        self.watch_exit();
        self.try_finish();
    }

    /// Gives the start up (`subprocess_exec` failed or was dropped after the spawn): the
    /// pipes are closed, the child killed and reaped; the protocol hears nothing.
    pub(crate) fn abandon(&self) {
        self.life.set(Life::Finished);
        self.pending.borrow_mut().clear();
        self.drop_child(None);
    }

    /// The loop will not run this transport any more (given up, or the loop closed): the
    /// pipes are closed at once (a write pipe's buffer dropped), the child killed and reaped
    /// (unless `reaped`, the siginfo of a cancelled watch, says it was),
    /// `wait()`ers woken.
    fn drop_child(&self, reaped: Option<libc::siginfo_t>) {
        for pipe in self.open_pipes() {
            match pipe {
                PipeTransport::Write(pipe) => pipe.abort(),
                PipeTransport::Read(pipe) => pipe.close(),
            }
        }
        if let Some(siginfo) = reaped {
            self.child.record_reaped(&siginfo);
        }
        self.child.kill_and_reap();
        self.exit_wakers.wake();
    }

    /// asyncio's `close()`: closes every pipe still open and kills the child unless it
    /// exited (reaped or not); `pipe_connection_lost`, `process_exited` and
    /// `connection_lost` follow. Idempotent.
    pub(crate) fn close(self: &Rc<Self>) {
        if self.life.get() != Life::Open {
            return;
        }
        self.life.set(Life::Closing);
        for pipe in self.open_pipes() {
            pipe.close();
        }
        if !self.child.has_exited() {
            if self.event_loop().is_some_and(|lp| lp.get_debug()) {
                log::warn!(target: "ringloop", "Close running child process: kill {self:?}");
            }
            let _ = self.child.send_signal(nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// Sends `event` to the protocol, or holds it until `connection_made`.
    pub(crate) fn emit(self: &Rc<Self>, event: SubprocessEvent) {
        match self.gate.get() {
            Gate::Holding => self.pending.borrow_mut().push_back(event),
            Gate::Open => self.deliver(event),
        }
    }

    /// The child wrote `data` to the pipe of its `fd`.
    pub(crate) fn pipe_data(self: &Rc<Self>, fd: RawFd, data: &[u8]) {
        if self.life.get() == Life::Finished {
            return;
        }
        match self.gate.get() {
            Gate::Holding => {
                self.pending.borrow_mut().push_back(SubprocessEvent::PipeData(fd, data.to_vec()))
            }
            Gate::Open => {
                self.dispatcher.data((fd, data));
                self.after_delivery();
            }
        }
    }

    /// The pipe of the child's `fd` closed (`connection_lost` of its transport).
    pub(crate) fn pipe_lost(self: &Rc<Self>, fd: RawFd, error: Option<Error>) {
        let error = {
            let mut pipes = self.pipes.borrow_mut();
            let slot = &mut pipes[fd as usize];
            match std::mem::replace(slot, PipeSlot::None) {
                PipeSlot::Open(transport, failed) => {
                    *slot = PipeSlot::Lost(transport);
                    error.or(failed)
                }
                other => {
                    *slot = other;
                    return;
                }
            }
        };
        if self.life.get() != Life::Finished {
            self.emit(SubprocessEvent::PipeLost(fd, error));
            self.try_finish();
        }
    }

    /// Sends `event` now, then acts on what the protocol's callbacks did.
    fn deliver(self: &Rc<Self>, event: SubprocessEvent) {
        self.dispatcher.send(event);
        self.after_delivery();
    }

    /// Reports callbacks that failed; a failed `pipe_data_received` closes its pipe with the
    /// failure; events that met a busy protocol are retried at the next iteration.
    fn after_delivery(self: &Rc<Self>) {
        let report = |context| self.child.pidfd().report(context, || self.describe());
        let _ = self.dispatcher.report_failures(report);
        let failed = std::mem::take(&mut *self.failed_pipes.borrow_mut());
        for (fd, error) in failed {
            let transport = match &mut self.pipes.borrow_mut()[fd as usize] {
                PipeSlot::Open(transport, slot) => {
                    slot.get_or_insert(error);
                    transport.clone()
                }
                _ => continue,
            };
            transport.close();
        }
        if self.dispatcher.has_deferred() {
            let Some(event_loop) = self.event_loop() else { return };
            let core = self.clone();
            let _ = event_loop.call_soon(move || {
                core.dispatcher.flush();
                core.after_delivery();
            });
        }
    }

    /// `connection_lost(None)` once the child was reaped and every pipe closed.
    fn try_finish(self: &Rc<Self>) {
        if self.gate.get() == Gate::Holding || self.life.get() == Life::Finished {
            return;
        }
        let pipes_open = self.pipes.borrow().iter().any(|slot| matches!(slot, PipeSlot::Open(..)));
        if self.child.returncode().is_none() || pipes_open {
            return;
        }
        self.life.set(Life::Finished);
        self.deliver(SubprocessEvent::Lost(None));
        if let Some(event_loop) = self.event_loop() {
            event_loop.unlist_open(&self.open_key);
        }
    }

    /// Has the driver wait for the child's exit and reap it.
    fn watch_exit(self: &Rc<Self>) {
        let fd = self.child.pidfd();
        let info = ExitInfo::new();
        let watch = Rc::new(ExitWatch {
            core: self.clone(),
            info: info.clone(),
            completed: Cell::new(false),
        });
        // Not submitted (the loop is closing): dropping the watch kills and reaps the child.
        let _ = fd.submit(Op::WaitId { pidfd: fd.raw(), info }, watch);
    }

    /// The watch's `WaitId` ended: the child was reaped (its siginfo in `siginfo`), or the op
    /// failed; then `process_exited`.
    fn on_reaped(self: &Rc<Self>, waited: std::io::Result<u32>, siginfo: Option<libc::siginfo_t>) {
        match self.child.watched_exit(waited, siginfo) {
            Ok(code) => {
                log::debug!(target: "ringloop", "child pid {} exited: returncode {code}", self.child.pid());
            }
            Err(err) => {
                let context =
                    ExceptionContext::new("Waiting for a child process failed").with_error(
                        Error::io(format!("waiting for child pid {}", self.child.pid()), err),
                    );
                self.child.pidfd().report(context, || self.describe());
                self.child.kill_and_reap();
            }
        }
        self.on_exit();
    }

    /// The child was reaped: wake `wait()`ers, `process_exited`, perhaps `connection_lost`.
    fn on_exit(self: &Rc<Self>) {
        self.exit_wakers.wake();
        if self.life.get() != Life::Finished {
            self.emit(SubprocessEvent::Exited);
            self.try_finish();
        }
    }

    fn event_loop(&self) -> Option<crate::EventLoop> {
        self.child.pidfd().event_loop()
    }

    /// The transport as messages name it.
    pub(crate) fn describe(&self) -> String {
        format!("{self:?}")
    }
}

impl fmt::Debug for SubprocessCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<SubprocessTransport {:?} {:?}>", self.child, self.life.get())
    }
}

/// The owner of the `WaitId` op on the child's pidfd.
struct ExitWatch {
    /// The transport: kept alive while its child is watched.
    core: Rc<SubprocessCore>,
    /// The op's siginfo: the child's status once the driver let go of the op, also when the
    /// op was cancelled after it reaped.
    info: Rc<ExitInfo>,
    /// Set when the completion was delivered. A watch dropped without it was dropped by the
    /// driver going away (the loop closed).
    completed: Cell<bool>,
}

impl OpTarget for ExitWatch {
    fn complete(self: Rc<Self>, done: Completed) {
        self.completed.set(true);
        // The op's share of the siginfo: once it is gone, the watch's is the only one.
        drop(done.op);
        self.core.on_reaped(done.result, ExitInfo::get(&self.info));
    }
}

impl OpenTransport for SubprocessCore {
    /// The loop closed with the transport open: the child is killed and reaped unless it
    /// was (as when its exit watch is dropped), and the protocol, which may hold this
    /// transport, is let go of without `connection_lost`.
    fn release_at_close(&self) {
        self.abandon();
        self.dispatcher.release();
    }
}

impl Drop for ExitWatch {
    /// The loop will watch no more (it closed): the pipes are closed, the child killed and
    /// reaped now, unless the cancelled op reaped it (its siginfo says so once the driver let
    /// go of it), `wait()`ers woken (they see the returncode; no callback runs on a closed
    /// loop).
    fn drop(&mut self) {
        if !self.completed.get() {
            self.core.drop_child(ExitInfo::get(&self.info));
        }
    }
}
