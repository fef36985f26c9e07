//! Graceful shutdown: [`Shutdown`], a request any thread (or SIGINT/SIGTERM) can make, and
//! [`Server::serve_until`] / [`Server::serve_until_signal`], which stop listening, give the
//! connections a grace period to finish, then abort what is left.
//!
//! # Why a server should not just die on SIGTERM
//! On io_uring a process killed by a signal leaves its ring to be torn down by the kernel
//! *after* the process is gone: an accept still in flight holds the listening socket, so for a
//! few milliseconds the port stays bound and a server restarted at once fails with
//! `EADDRINUSE` (9 times in 10 in the trial of issue 16; epoll and tokio: never). Closing the
//! server first cancels the accept and closes the socket while the process still runs, so the
//! port is free when it exits. SIGKILL cannot be caught: after `kill -9` a restart on the same
//! port may need to retry for a moment (or both servers may set
//! [`ServerOptions::reuse_port`](crate::ServerOptions::reuse_port)).

use std::fmt;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use nix::sys::signal::Signal;
use slab::Slab;

use crate::error::{Error, Result};
use crate::event_loop::{Delay, EventLoop};
use crate::server::Server;

/// The signals a [`Shutdown`] listens to: Ctrl-C and `kill`'s default.
const SIGNALS: [Signal; 2] = [Signal::SIGINT, Signal::SIGTERM];

/// How far a [`Shutdown`] has gone; only ever moves forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
enum Stage {
    /// Nothing asked yet.
    Running = 0,
    /// Asked once: stop accepting, let connections finish.
    Graceful = 1,
    /// Asked again: abort what is left now.
    Immediate = 2,
}

impl Stage {
    fn from_u8(value: u8) -> Stage {
        match value {
            0 => Stage::Running,
            1 => Stage::Graceful,
            _ => Stage::Immediate,
        }
    }
}

/// A request to shut down, shared by every clone and usable from any thread: a cancellation
/// token with two steps. The first [`request`](Self::request) asks for a graceful shutdown
/// (stop accepting, let connections finish), a second one for an immediate one (abort them).
/// [`on_signals`](Self::on_signals) makes SIGINT and SIGTERM request it, so a second Ctrl-C
/// cuts the grace period short.
///
/// Servers take it in [`Server::serve_until`]; anything else can await
/// [`requested`](Self::requested) (a UDP endpoint, a connection that wants to say goodbye,
/// the loops of other threads: see [`spawn_loops`](crate::spawn_loops)).
///
/// asyncio has no counterpart: there, `asyncio.run` turns SIGINT into a `KeyboardInterrupt`
/// that cancels the main task, and a server's `close()`, `wait_closed()`, `close_clients()` and
/// `abort_clients()` are called by hand.
///
/// ```
/// let shutdown = ringloop::Shutdown::new();
/// let remote = shutdown.clone();
/// std::thread::spawn(move || remote.request());
/// ringloop::run(async move {
///     shutdown.requested().await;
///     assert!(shutdown.is_requested() && !shutdown.is_forced());
/// })
/// .unwrap();
/// ```
#[derive(Clone, Default)]
pub struct Shutdown {
    /// Shared by the clones.
    inner: Arc<Shared>,
}

/// What the clones of a [`Shutdown`] share.
#[derive(Default)]
struct Shared {
    /// The [`Stage`], readable without the lock.
    stage: AtomicU8,
    /// The waiters and the first signal.
    locked: Mutex<Waiters>,
}

/// The part of [`Shared`] behind its lock.
#[derive(Default)]
struct Waiters {
    /// Tasks waiting for a stage, each removed when its future is dropped.
    wakers: Slab<Waker>,
    /// The signal that made the first request, if one did.
    signal: Option<Signal>,
}

impl Shared {
    fn stage(&self) -> Stage {
        Stage::from_u8(self.stage.load(Ordering::Acquire))
    }

    fn lock(&self) -> MutexGuard<'_, Waiters> {
        // Pushes and takes only: a panic holding the lock leaves nothing half-done.
        self.locked.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves one stage on (never past `Immediate`) and wakes every waiter.
    fn advance(&self, signal: Option<Signal>) {
        let wakers: Vec<Waker> = {
            let mut waiters = self.lock();
            let next = match self.stage() {
                Stage::Running => {
                    waiters.signal = signal;
                    Stage::Graceful
                }
                Stage::Graceful | Stage::Immediate => Stage::Immediate,
            };
            self.stage.store(next as u8, Ordering::Release);
            waiters.wakers.iter().map(|(_, waker)| waker.clone()).collect()
        };
        for waker in wakers {
            waker.wake();
        }
    }
}

impl Shutdown {
    /// A shutdown not requested yet.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Requests the shutdown: the first call a graceful one, any later call an immediate one.
    /// Any thread may call it; every [`requested`](Self::requested) (and, from the second
    /// call on, [`forced`](Self::forced)) future completes.
    pub fn request(&self) {
        self.inner.advance(None);
    }

    /// True once [`request`](Self::request) was called (or a signal came).
    pub fn is_requested(&self) -> bool {
        self.inner.stage() >= Stage::Graceful
    }

    /// True once it was requested twice: connections are to be aborted now.
    pub fn is_forced(&self) -> bool {
        self.inner.stage() == Stage::Immediate
    }

    /// The signal that made the first request, if a signal did.
    pub fn signal(&self) -> Option<Signal> {
        self.inner.lock().signal
    }

    /// Completes once the shutdown is requested (at once if it was). `Send`, cancel-safe;
    /// dropping it unregisters its waker.
    pub fn requested(&self) -> Requested {
        Requested { shared: self.inner.clone(), stage: Stage::Graceful, waiting: None }
    }

    /// Completes once the shutdown is requested a second time (a second Ctrl-C).
    pub fn forced(&self) -> Requested {
        Requested { shared: self.inner.clone(), stage: Stage::Immediate, waiting: None }
    }

    /// Makes SIGINT and SIGTERM request this shutdown, through `event_loop`'s
    /// [`add_signal_handler`](EventLoop::add_signal_handler) (replacing this loop's handlers of
    /// those two). Every delivery is a request, so a second signal forces the shutdown. The
    /// handlers stay until the loop closes (or `remove_signal_handler`); with several loops in
    /// the process, each loop that calls this gets every signal.
    ///
    /// Errors: those of `add_signal_handler` ([`Error::Closed`] on a closed loop).
    pub fn on_signals(&self, event_loop: &EventLoop) -> Result<()> {
        for signal in SIGNALS {
            let shared = self.inner.clone();
            event_loop.add_signal_handler(signal, move || shared.advance(Some(signal)))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("stage", &self.inner.stage())
            .field("signal", &self.signal())
            .finish()
    }
}

/// The future of [`Shutdown::requested`] and [`Shutdown::forced`].
pub struct Requested {
    /// The shutdown's state.
    shared: Arc<Shared>,
    /// The stage it waits for.
    stage: Stage,
    /// Its slot among the waiters, and the waker stored there.
    waiting: Option<(usize, Waker)>,
}

impl Future for Requested {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.shared.stage() >= this.stage {
            return Poll::Ready(());
        }
        if let Some((_, waker)) = &this.waiting {
            if waker.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        let mut waiters = this.shared.lock();
        // Checked again under the lock: `advance` stores the stage, then wakes under it.
        if this.shared.stage() >= this.stage {
            return Poll::Ready(());
        }
        let waker = cx.waker().clone();
        match &this.waiting {
            Some((key, _)) => waiters.wakers[*key] = waker.clone(),
            None => {
                let key = waiters.wakers.insert(waker.clone());
                drop(waiters);
                this.waiting = Some((key, waker));
                return Poll::Pending;
            }
        }
        drop(waiters);
        if let Some((_, stored)) = &mut this.waiting {
            *stored = waker;
        }
        Poll::Pending
    }
}

impl Drop for Requested {
    fn drop(&mut self) {
        if let Some((key, _)) = self.waiting.take() {
            self.shared.lock().wakers.try_remove(key);
        }
    }
}

impl fmt::Debug for Requested {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Requested").field("waits_for", &self.stage).finish()
    }
}

/// Polls `a` and `b` together; the output of whichever completes first (`a` on a tie).
async fn first_of<A: Future, B: Future>(a: A, b: B) -> std::result::Result<A::Output, B::Output> {
    let (mut a, mut b) = (pin!(a), pin!(b));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = a.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        b.as_mut().poll(cx).map(Err)
    })
    .await
}

impl Server {
    /// Serves until `shutdown` is requested (or the server is closed), then shuts down
    /// gracefully:
    ///
    /// 1. [`close`](Self::close): the listening sockets close, so the port is free and new
    ///    connections are refused (a Unix server removes its socket file);
    /// 2. the connections have `grace` (seconds or a `Duration`) to finish on their own;
    /// 3. those still open then, or at once when the shutdown is [forced](Shutdown::forced),
    ///    are aborted ([`abort_clients`](Self::abort_clients)), and it returns once every
    ///    connection is gone ([`wait_closed`](Self::wait_closed)).
    ///
    /// Returning lets the caller's `main` end, and [`run`](crate::run) close the loop. A
    /// connection handler that wants to end sooner can await the same
    /// [`Shutdown::requested`] (`ringloop::hyper::serve_http1_until` does: an idle HTTP
    /// keep-alive connection closes at once, a request in progress is answered first).
    ///
    /// # Errors
    /// Those of [`serve_forever`](Self::serve_forever) (a second `serve_forever`), and
    /// [`Error::Runtime`] outside a running loop (the grace period is a loop timer). A
    /// server closed by someone else is not an error: the shutdown goes on from step 2.
    ///
    /// ```
    /// use ringloop::{Protocol, Server, ServerOptions, Shutdown};
    ///
    /// #[derive(Default)]
    /// struct Quiet;
    /// impl ringloop::BaseProtocol for Quiet {}
    /// impl Protocol for Quiet {}
    ///
    /// ringloop::run(async {
    ///     let lp = ringloop::get_running_loop()?;
    ///     let server = lp.create_server(Quiet::default, "127.0.0.1:0", ServerOptions::new()).await?;
    ///     let shutdown = Shutdown::new();
    ///     shutdown.request(); // as SIGTERM would, with `shutdown.on_signals(&lp)?`
    ///     server.serve_until(&shutdown, 5.0).await?;
    ///     assert!(server.sockets().is_empty());
    ///     Ok::<_, ringloop::Error>(())
    /// })??;
    /// # Ok::<(), ringloop::Error>(())
    /// ```
    pub async fn serve_until(&self, shutdown: &Shutdown, grace: impl Into<Delay>) -> Result<()> {
        let grace = grace.into();
        // A closed server has no sockets left (`serve_forever` would refuse it).
        if !shutdown.is_requested() && !self.sockets().is_empty() {
            match first_of(self.serve_forever(), shutdown.requested()).await {
                Ok(Ok(()) | Err(Error::Cancelled)) | Err(()) => {}
                Ok(Err(err)) => return Err(err),
            }
        }
        self.close();
        if self.connection_count() > 0 && !shutdown.is_forced() {
            let finished = first_of(self.wait_closed(), shutdown.forced());
            match crate::timeout(grace, finished).await {
                Ok(_) | Err(Error::Timeout(_)) => {}
                Err(err) => {
                    self.abort_clients();
                    return Err(err);
                }
            }
        }
        self.abort_clients();
        self.wait_closed().await;
        Ok(())
    }

    /// [`serve_until`](Self::serve_until) a SIGINT or SIGTERM: the one call a server's `main`
    /// needs to exit cleanly on Ctrl-C or `kill`. Returns the signal that ended it (`None`
    /// when the server was closed otherwise). A second signal during the grace period aborts
    /// the connections at once. The two signal handlers are removed on return (the signals'
    /// default action, termination, is back); they replace this loop's own handlers of
    /// SIGINT and SIGTERM meanwhile.
    ///
    /// A SIGKILL cannot be caught: nothing is closed, and on io_uring the kernel tears the
    /// ring down after the process is gone, so the listening socket can outlive the process
    /// for a few milliseconds and a server restarted at once on the same port may fail with
    /// `EADDRINUSE` (retry for a moment, or give both servers
    /// [`reuse_port`](crate::ServerOptions::reuse_port)). After SIGTERM or SIGINT handled here
    /// the port is free when the process exits.
    ///
    /// ```no_run
    /// # use ringloop::{ServerOptions, StreamReader, StreamWriter};
    /// # async fn echo(_: StreamReader, _: StreamWriter) {}
    /// ringloop::run(async {
    ///     let lp = ringloop::get_running_loop()?;
    ///     let server = lp.start_server(echo, "127.0.0.1:8888", ServerOptions::new()).await?;
    ///     let signal = server.serve_until_signal(10.0).await?;
    ///     eprintln!("stopped by {signal:?}");
    ///     Ok::<_, ringloop::Error>(())
    /// })??;
    /// # Ok::<(), ringloop::Error>(())
    /// ```
    pub async fn serve_until_signal(&self, grace: impl Into<Delay>) -> Result<Option<Signal>> {
        let shutdown = Shutdown::new();
        let event_loop = self.get_loop();
        let served = match shutdown.on_signals(&event_loop) {
            Ok(()) => self.serve_until(&shutdown, grace).await,
            Err(err) => Err(err),
        };
        for signal in SIGNALS {
            let _ = event_loop.remove_signal_handler(signal);
        }
        served.map(|()| shutdown.signal())
    }
}

#[cfg(test)]
mod tests {
    use std::task::Wake;

    use super::*;

    /// A waker that does nothing.
    struct Noop;

    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }

    /// Polls `future` once with a no-op waker (the same one every time).
    fn poll_once(future: &mut Requested) -> Poll<()> {
        thread_local!(static NOOP: Waker = Waker::from(Arc::new(Noop)));
        NOOP.with(|waker| Pin::new(future).poll(&mut Context::from_waker(waker)))
    }

    #[test]
    fn requests_move_graceful_then_immediate_and_never_back() {
        let shutdown = Shutdown::new();
        let (mut requested, mut forced) = (shutdown.requested(), shutdown.forced());
        assert!(poll_once(&mut requested).is_pending() && poll_once(&mut forced).is_pending());
        shutdown.request();
        assert!(shutdown.is_requested() && !shutdown.is_forced());
        assert!(poll_once(&mut requested).is_ready() && poll_once(&mut forced).is_pending());
        shutdown.request();
        shutdown.request();
        assert!(shutdown.is_forced() && poll_once(&mut forced).is_ready());
        assert_eq!(shutdown.signal(), None);
    }

    #[test]
    fn a_dropped_waiter_leaves_no_waker_behind() {
        let shutdown = Shutdown::new();
        for _ in 0..3 {
            let mut requested = shutdown.requested();
            assert!(poll_once(&mut requested).is_pending());
            assert!(poll_once(&mut requested).is_pending(), "polled again: one slot");
            assert_eq!(shutdown.inner.lock().wakers.len(), 1);
        }
        assert_eq!(shutdown.inner.lock().wakers.len(), 0);
    }

    #[test]
    fn the_first_signal_is_kept() {
        let shutdown = Shutdown::new();
        shutdown.inner.advance(Some(Signal::SIGTERM));
        shutdown.inner.advance(Some(Signal::SIGINT));
        assert_eq!(shutdown.signal(), Some(Signal::SIGTERM));
        assert!(shutdown.is_forced());
    }
}
