//! [`TlsLayer`]: the TLS layer between a stream transport and the user's protocol (asyncio's
//! `SSLProtocol`). To the stream transport below it is a protocol (ciphertext comes in
//! through `data_received`, flow and EOF and loss through the other callbacks); to the
//! protocol above it is a [`ByteStream`] behind a [`Transport`] handle (`app_side.rs`).
//!
//! # Stages
//! ```text
//!  Connecting ─made─► Handshaking ─done─► Wrapped ─close() or the peer's close_notify─► Flushing
//!                          │                 │                                           │
//!                          │ failure,        │ abort, fatal error,                        │ backlog sent:
//!                          │ timeout         │ EOF without close_notify                   ▼ close_notify
//!                          └─────────────────┴──────────────────────────► Closed ◄── ShuttingDown
//!                                                                  (the peer's close_notify or EOF,
//!                                                                   or the shutdown timeout)
//! ```
//! In `Closed` the stream below is closing or closed; its `connection_lost` brings the
//! user's, exactly once, with the error the layer recorded (a refused certificate, a
//! timeout, a truncation) or the stream's own.
//!
//! # Re-entrancy
//! The layer never holds a borrow while it calls out (to the stream below or to the user's
//! protocol), so either may call back into it at any point: a `write` from inside
//! `data_received`, a `pause_writing` from below while the layer writes to it.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::task::Waker;

use super::config::TlsSetup;
use super::errors::{closed_in_handshake, tls_error, truncated};
use super::scratch::Scratch;
use super::session::{Fed, Plain, Session};
use crate::dispatch::{Delivered, Dispatcher, ErasedProtocol, Event};
use crate::error::Error;
use crate::event_loop::TimerHandle;
use crate::event_loop::{EventLoop, ExceptionContext, Inner};
use crate::flow_control::{FlowEvent, WriteBuffer};
use crate::future::Future;
use crate::sendfile::Transfer;
use crate::transport::base::LostWrites;
use crate::transport::DynProtocol;
use crate::transport::Transport;

/// Where the layer is (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Waiting for the stream below to deliver `connection_made`.
    Connecting,
    /// The handshake runs (the handshake timeout is armed).
    Handshaking,
    /// Application data flows both ways.
    Wrapped,
    /// Closing: the plaintext backlog is encrypted and sent, then `close_notify` (the
    /// shutdown timeout is armed from here on).
    Flushing,
    /// `close_notify` sent: waiting for the peer's, or its EOF.
    ShuttingDown,
    /// The stream below is closing or closed.
    Closed,
}

/// Whether the user's protocol was given the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum App {
    /// Not yet: `connection_made` comes when the handshake is done.
    Waiting,
    /// `connection_made` delivered (by the layer, or by the plain transport before
    /// `start_tls`): `connection_lost` is owed.
    Made,
    /// `connection_lost` delivered.
    Lost,
}

/// The TLS layer of one connection.
pub(crate) struct TlsLayer {
    /// Itself, for handles and callbacks.
    pub(super) this: Weak<TlsLayer>,
    /// The loop.
    event_loop: Weak<Inner>,
    /// The stream transport below (set once, right after it is made).
    pub(super) lower: RefCell<Option<Transport>>,
    /// The peer's address as messages name it.
    peer: RefCell<String>,
    /// rustls.
    pub(super) session: RefCell<Session>,
    /// Where the layer is.
    pub(super) stage: Cell<Stage>,
    /// The user's protocol.
    pub(super) dispatcher: Dispatcher<Event<Transport>>,
    /// Whether the user's protocol has the connection.
    app: Cell<App>,
    /// Plaintext written and not yet encrypted, with the water marks the user's
    /// `pause_writing` follows.
    pub(super) backlog: RefCell<WriteBuffer>,
    /// The stream below said `pause_writing`: nothing more is encrypted until it resumes.
    pub(super) lower_paused: Cell<bool>,
    /// The user paused reading.
    pub(super) reading_paused: Cell<bool>,
    /// Ciphertext received while the user paused reading, not yet given to rustls.
    pub(super) held: RefCell<Vec<u8>>,
    /// The peer's `close_notify` was received.
    peer_closed: Cell<bool>,
    /// The stream below reached EOF.
    eof_seen: Cell<bool>,
    /// That EOF waits behind ciphertext held while the user paused reading (it may hold the
    /// peer's `close_notify`): the stream is kept open until the held bytes are delivered.
    pub(super) eof_held: Cell<bool>,
    /// Seconds the handshake may take, and the closing exchange.
    timeouts: (f64, f64),
    /// The handshake or the shutdown timeout, while armed.
    timer: RefCell<Option<TimerHandle>>,
    /// Resolved when the handshake ends (`create_connection`, `start_tls` await it).
    waiter: RefCell<Option<Future<()>>>,
    /// What the user's `connection_lost` is to carry, when the layer decided it.
    error: RefCell<Option<Error>>,
    /// Writes after the layer stopped taking them.
    pub(super) lost_writes: LostWrites,
    /// The `sendfile` running through the layer (`sendfile.rs`).
    pub(super) sendfile: RefCell<Option<Rc<Transfer>>>,
    /// Its task, while it waits for the backlog to drain.
    pub(super) drained_waker: RefCell<Option<Waker>>,
}

impl TlsLayer {
    /// A layer for `setup`, driving `app` (already given the connection if `app_made`, as
    /// after `start_tls`).
    pub(crate) fn new(
        event_loop: &EventLoop,
        app: Rc<DynProtocol>,
        session: Session,
        setup: &TlsSetup,
        app_made: bool,
    ) -> Rc<TlsLayer> {
        Rc::new_cyclic(|this| TlsLayer {
            this: this.clone(),
            event_loop: Rc::downgrade(&event_loop.inner),
            lower: RefCell::new(None),
            peer: RefCell::new("the peer".into()),
            session: RefCell::new(session),
            stage: Cell::new(Stage::Connecting),
            dispatcher: Dispatcher::new(app),
            app: Cell::new(if app_made { App::Made } else { App::Waiting }),
            backlog: RefCell::new(WriteBuffer::default()),
            lower_paused: Cell::new(false),
            reading_paused: Cell::new(false),
            held: RefCell::new(Vec::new()),
            peer_closed: Cell::new(false),
            eof_seen: Cell::new(false),
            eof_held: Cell::new(false),
            timeouts: (setup.handshake_timeout, setup.shutdown_timeout),
            timer: RefCell::new(None),
            waiter: RefCell::new(None),
            error: RefCell::new(None),
            lost_writes: LostWrites::default(),
            sendfile: RefCell::new(None),
            drained_waker: RefCell::new(None),
        })
    }

    /// A future the end of the handshake resolves: `Ok` once it is done, else its error.
    pub(crate) fn handshake_waiter(&self, event_loop: &EventLoop) -> Future<()> {
        let waiter = event_loop.create_future::<()>();
        match self.stage.get() {
            Stage::Connecting | Stage::Handshaking => {
                *self.waiter.borrow_mut() = Some(waiter.clone());
            }
            Stage::Closed => {
                let why = self.error.borrow().clone();
                let _ =
                    waiter.set_exception(why.unwrap_or_else(|| closed_in_handshake(&self.peer())));
            }
            _ => {
                let _ = waiter.set_result(());
            }
        }
        waiter
    }

    /// Sets the stream below (right after it was made, or handed over by `start_tls`).
    pub(crate) fn attach(&self, lower: Transport) {
        *self.peer.borrow_mut() = describe_peer(&lower);
        *self.lower.borrow_mut() = Some(lower);
    }

    /// A handle for the user.
    pub(crate) fn handle(self: &Rc<Self>) -> Transport {
        Transport::new(self.clone())
    }

    /// The stream below, while attached.
    pub(super) fn lower(&self) -> Option<Transport> {
        self.lower.borrow().clone()
    }

    pub(super) fn event_loop(&self) -> Option<EventLoop> {
        self.event_loop.upgrade().map(|inner| EventLoop { inner })
    }

    /// The peer's address as messages name it.
    pub(super) fn peer(&self) -> String {
        self.peer.borrow().clone()
    }

    /// The stream below is connected (or was, for `start_tls`): the handshake starts.
    pub(crate) fn start_handshake(self: &Rc<Self>) {
        if self.stage.get() != Stage::Connecting {
            return;
        }
        self.stage.set(Stage::Handshaking);
        self.arm_timer(self.timeouts.0, |layer| layer.on_handshake_timeout());
        self.flush_records(); // a client's hello
    }

    // --- Incoming ---------------------------------------------------------------------------

    /// Ciphertext from below.
    fn on_ciphertext(self: &Rc<Self>, data: &[u8]) {
        match self.stage.get() {
            Stage::Closed => {}
            _ if self.reading_paused.get() && self.stage.get() == Stage::Wrapped => {
                self.held.borrow_mut().extend_from_slice(data)
            }
            _ if !self.held.borrow().is_empty() => self.held.borrow_mut().extend_from_slice(data),
            _ => self.process(data),
        }
    }

    /// Gives `data` to rustls record by record, sending what it answers and delivering what
    /// it decrypts; what cannot be delivered now (the user paused reading) is held.
    pub(super) fn process(self: &Rc<Self>, data: &[u8]) {
        let mut rest = data;
        while self.deliver_plaintext() && !rest.is_empty() {
            let fed = self.session.borrow_mut().feed(&mut rest);
            match fed {
                Ok(Fed::Took) => {}
                Ok(Fed::Full) => break,
                Err(err) => {
                    let doing = match self.stage.get() {
                        Stage::Handshaking => "TLS handshake",
                        _ => "TLS connection",
                    };
                    let error = tls_error(&format!("{doing} with {}", self.peer()), &err);
                    return self.fail(error);
                }
            }
            self.flush_records();
            if self.stage.get() == Stage::Handshaking && !self.session.borrow().is_handshaking() {
                self.on_handshake_done();
            }
        }
        if !rest.is_empty() && self.stage.get() != Stage::Closed {
            self.held.borrow_mut().extend_from_slice(rest);
        }
    }

    /// Delivers the plaintext rustls decrypted (discards it once closing); false when no more
    /// may be fed now (the user paused reading, or the layer is done).
    pub(super) fn deliver_plaintext(self: &Rc<Self>) -> bool {
        loop {
            let discard = match self.stage.get() {
                Stage::Connecting | Stage::Handshaking => return true,
                Stage::Closed => return false,
                Stage::Wrapped if self.reading_paused.get() => return false,
                Stage::Wrapped => false,
                Stage::Flushing | Stage::ShuttingDown => true,
            };
            if self.peer_closed.get() {
                return false;
            }
            let mut buf = Scratch::plaintext();
            let got = self.session.borrow_mut().take_plaintext(&mut buf);
            if !buf.is_empty() && !discard {
                self.dispatcher.data(&buf);
                self.after_app_call();
            }
            drop(buf);
            match got {
                Plain::Data => continue,
                Plain::Nothing => return true,
                Plain::Closed => {
                    self.on_close_notify();
                    return false;
                }
            }
        }
    }

    /// The peer's `close_notify`: `eof_received` (whose answer TLS cannot honour: asyncio
    /// ignores it too), then the layer closes its side.
    fn on_close_notify(self: &Rc<Self>) {
        self.peer_closed.set(true);
        match self.stage.get() {
            Stage::Wrapped => {
                self.to_app(Event::Eof);
                self.start_shutdown();
            }
            Stage::ShuttingDown => self.finish_shutdown(),
            _ => {}
        }
    }

    /// EOF from below: whether the stream stays open (only while ciphertext before it waits
    /// for the user to resume reading; otherwise it closes, flushing what it holds).
    fn on_eof(self: &Rc<Self>) -> bool {
        self.eof_seen.set(true);
        if self.stage.get() == Stage::Wrapped && !self.held.borrow().is_empty() {
            self.eof_held.set(true);
            return true;
        }
        self.end_of_stream();
        false
    }

    /// Acts on the stream's EOF (see [`on_eof`](Self::on_eof)).
    pub(super) fn end_of_stream(self: &Rc<Self>) {
        self.session.borrow_mut().feed_eof();
        match self.stage.get() {
            Stage::Connecting | Stage::Handshaking => {
                self.fail_handshake(closed_in_handshake(&self.peer()));
            }
            Stage::Wrapped => {
                *self.error.borrow_mut() = Some(truncated(&self.peer()));
                self.stage.set(Stage::Closed);
            }
            Stage::Flushing | Stage::ShuttingDown | Stage::Closed => {
                self.stage.set(Stage::Closed);
            }
        }
    }

    /// The stream below is gone: the user's `connection_lost`, once.
    fn on_lost(self: &Rc<Self>, error: Option<Error>) {
        self.shut();
        let error = self.error.borrow_mut().take().or(error);
        if let Some(waiter) = self.waiter.borrow_mut().take() {
            let why = error.clone().unwrap_or_else(|| closed_in_handshake(&self.peer()));
            let _ = waiter.set_exception(why);
        }
        self.sendfile_lost(error.as_ref());
        if self.app.get() == App::Made {
            self.app.set(App::Lost);
            self.to_app(Event::Lost(error));
        }
    }

    // --- Handshake --------------------------------------------------------------------------

    fn on_handshake_done(self: &Rc<Self>) {
        self.cancel_timer();
        self.stage.set(Stage::Wrapped);
        if self.app.get() == App::Waiting {
            self.app.set(App::Made);
            self.to_app(Event::Made(self.handle()));
        }
        if let Some(waiter) = self.waiter.borrow_mut().take() {
            let _ = waiter.set_result(());
        }
        self.pump_backlog();
    }

    fn on_handshake_timeout(self: &Rc<Self>) {
        if !matches!(self.stage.get(), Stage::Connecting | Stage::Handshaking) {
            return;
        }
        let message = format!(
            "TLS handshake with {} is taking longer than {} seconds: aborting the connection",
            self.peer(),
            self.timeouts.0
        );
        self.fail_handshake(Error::Timeout(message));
        self.abort_lower();
    }

    /// The handshake failed: `create_connection`/`start_tls` learn it at once; the user's
    /// `connection_lost` (if it has the connection) follows with the stream's.
    fn fail_handshake(self: &Rc<Self>, error: Error) {
        if let Some(waiter) = self.waiter.borrow_mut().take() {
            let _ = waiter.set_exception(error.clone());
        }
        log::debug!(target: "ringloop", "{error}");
        *self.error.borrow_mut() = Some(error);
        self.stage.set(Stage::Closed);
    }

    /// A fatal error: the alert rustls queued goes out, then the stream closes (aborted if it
    /// still holds data the peer is not taking).
    pub(super) fn fail(self: &Rc<Self>, error: Error) {
        if self.stage.get() == Stage::Closed {
            return;
        }
        let in_handshake = matches!(self.stage.get(), Stage::Connecting | Stage::Handshaking);
        if in_handshake {
            self.fail_handshake(error);
        } else {
            *self.error.borrow_mut() = Some(error);
            self.stage.set(Stage::Closed);
        }
        let Some(lower) = self.lower() else { return };
        let backed_up = lower.get_write_buffer_size() > 0;
        self.flush_records();
        if backed_up {
            lower.abort();
        } else {
            lower.close();
        }
    }

    // --- Closing ----------------------------------------------------------------------------

    /// `close()` or the peer's `close_notify`: flush, then `close_notify`.
    pub(super) fn start_shutdown(self: &Rc<Self>) {
        if self.stage.get() != Stage::Wrapped {
            return;
        }
        self.stage.set(Stage::Flushing);
        if !self.in_sendfile() {
            self.start_shutdown_timer(); // else once the transfer ends
        }
        if self.reading_paused.replace(false) {
            // The peer's close_notify must be read: what is held is discarded on the way.
            if let Some(lower) = self.lower() {
                lower.resume_reading();
            }
            let held = std::mem::take(&mut *self.held.borrow_mut());
            self.process(&held);
            self.eof_held.set(false); // `eof_seen` finishes the shutdown once close_notify is out
        }
        self.pump_backlog();
    }

    /// Arms the shutdown timeout (`ssl_shutdown_timeout`).
    pub(super) fn start_shutdown_timer(self: &Rc<Self>) {
        self.arm_timer(self.timeouts.1, |layer| layer.on_shutdown_timeout());
    }

    /// The backlog is sent: `close_notify` goes out.
    pub(super) fn send_close_notify(self: &Rc<Self>) {
        if self.stage.get() != Stage::Flushing {
            return;
        }
        self.stage.set(Stage::ShuttingDown);
        self.session.borrow_mut().send_close_notify();
        self.flush_records();
        if self.peer_closed.get() || self.eof_seen.get() {
            self.finish_shutdown();
        }
    }

    /// Both sides said goodbye: the stream closes (after sending what it holds).
    fn finish_shutdown(self: &Rc<Self>) {
        self.stage.set(Stage::Closed);
        if let Some(lower) = self.lower() {
            lower.close();
        }
    }

    fn on_shutdown_timeout(self: &Rc<Self>) {
        let message = format!(
            "TLS shutdown with {} did not finish within {} seconds (no close_notify came \
             back): aborting the connection",
            self.peer(),
            self.timeouts.1
        );
        *self.error.borrow_mut() = Some(Error::Timeout(message));
        self.stage.set(Stage::Closed);
        self.abort_lower();
    }

    /// Aborts the stream below (its `connection_lost` brings the user's).
    pub(super) fn abort_lower(&self) {
        self.wake_sendfile();
        if let Some(lower) = self.lower() {
            lower.abort();
        }
    }

    // --- Output -----------------------------------------------------------------------------

    /// Sends every record rustls has ready to the stream below.
    pub(super) fn flush_records(&self) {
        // Called after every read and write: most calls find nothing to send.
        if !self.session.borrow().wants_write() {
            return;
        }
        let Some(lower) = self.lower() else { return };
        let mut out = Scratch::records();
        if self.session.borrow_mut().take_tls(&mut out) {
            let _ = lower.write(&out);
        }
    }

    // --- The user's protocol ----------------------------------------------------------------

    /// Delivers `event` to the user's protocol.
    pub(super) fn to_app(self: &Rc<Self>, event: Event<Transport>) {
        self.dispatcher.send(event);
        self.after_app_call();
    }

    /// `pause_writing`/`resume_writing`, when the backlog's marks say so.
    pub(super) fn to_app_flow(self: &Rc<Self>, flow: Option<FlowEvent>) {
        if let Some(flow) = flow {
            self.to_app(flow.into());
        }
    }

    /// Acts on what the user's protocol did: a data callback that failed aborts the
    /// connection with its error (asyncio's "Fatal error: protocol.data_received() call
    /// failed."); events that met a borrowed protocol are retried next iteration.
    fn after_app_call(self: &Rc<Self>) {
        let reported = self.dispatcher.report_failures(|context| self.report(context));
        if let Some(error) = reported {
            *self.error.borrow_mut() = Some(error);
            self.stage.set(Stage::Closed);
            self.abort_lower();
        }
        let _ = self.dispatcher.take_close_after_eof(); // TLS cannot stay half-open
        if self.dispatcher.has_deferred() {
            let layer = self.this.clone();
            if let Some(event_loop) = self.event_loop() {
                let _ = event_loop.call_soon(move || {
                    if let Some(layer) = layer.upgrade() {
                        layer.dispatcher.flush();
                        layer.after_app_call();
                    }
                });
            }
        }
    }

    /// Sends `context`, naming this transport, to the exception handler.
    fn report(&self, mut context: ExceptionContext) {
        context.transport = Some(format!("{self:?}"));
        if let Some(event_loop) = self.event_loop() {
            event_loop.call_exception_handler(context);
        }
    }

    // --- Timers -----------------------------------------------------------------------------

    fn arm_timer(self: &Rc<Self>, secs: f64, fire: fn(&Rc<TlsLayer>)) {
        self.cancel_timer();
        let Some(event_loop) = self.event_loop() else { return };
        let layer = self.this.clone();
        let timer = event_loop.call_later(secs, move || {
            if let Some(layer) = layer.upgrade() {
                layer.timer.borrow_mut().take();
                fire(&layer);
            }
        });
        *self.timer.borrow_mut() = timer.ok();
    }

    /// The layer is done, whether its stream was lost or released: no timer, no more
    /// handshaking, nothing kept to write or to hand over.
    fn shut(&self) {
        self.cancel_timer();
        self.stage.set(Stage::Closed);
        self.backlog.borrow_mut().clear();
        self.held.borrow_mut().clear();
    }

    fn cancel_timer(&self) {
        if let Some(timer) = self.timer.borrow_mut().take() {
            timer.cancel();
        }
    }
}

/// The events of the stream below.
impl ErasedProtocol<Event<Transport>> for TlsLayer {
    fn deliver(&self, event: Event<Transport>) -> Delivered<Event<Transport>> {
        let Some(layer) = self.this.upgrade() else { return Delivered::Done { keep_open: false } };
        let keep_open = match event {
            Event::Made(_) => {
                layer.start_handshake();
                false
            }
            Event::Data(data) => {
                layer.on_ciphertext(&data);
                false
            }
            Event::Eof => layer.on_eof(),
            Event::Lost(error) => {
                layer.on_lost(error);
                false
            }
            Event::PauseWriting => {
                layer.lower_paused.set(true);
                false
            }
            Event::ResumeWriting => {
                layer.lower_paused.set(false);
                layer.pump_backlog();
                false
            }
        };
        Delivered::Done { keep_open }
    }

    fn data(&self, data: &[u8]) -> Delivered<Event<Transport>> {
        if let Some(layer) = self.this.upgrade() {
            layer.on_ciphertext(data);
        }
        Delivered::Done { keep_open: false }
    }

    /// The stream below was released with its closed loop: the user's protocol, which may
    /// hold this layer through its transport, is let go of (no `connection_lost`), and so is
    /// the stream.
    fn released(&self) {
        self.shut();
        let waiter = self.waiter.borrow_mut().take();
        let (lower, sendfile) = (self.lower.borrow_mut().take(), self.sendfile.borrow_mut().take());
        drop((waiter, lower, sendfile));
        self.dispatcher.release();
    }

    fn as_any(&self) -> Rc<dyn Any> {
        match self.this.upgrade() {
            Some(layer) => layer,
            None => Rc::new(()),
        }
    }
}

/// `host:port` of the stream's peer, or "the peer".
fn describe_peer(lower: &Transport) -> String {
    match lower.peername() {
        Some(addr) if addr.as_socket().is_some() || addr.as_pathname().is_some() => {
            crate::transport::describe_addr(&addr)
        }
        _ => "the peer".into(),
    }
}
