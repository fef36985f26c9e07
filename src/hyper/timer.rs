//! `LoopTimer`: hyper's `rt::Timer` on the running loop's own timers.
//!
//! # Implementation
//! hyper wants its timer and sleeps `Send + Sync`, and a loop's timers are not (they live in
//! the loop thread's `Rc`s). So a [`LoopSleep`] holds only `Send` things: its deadline, an
//! `Arc`'d [`Alarm`] the timer callback rings, and the key of its [`TimerHandle`] in a
//! thread-local table ([`ARMED`]) on the thread that armed it. Dropped on that thread, it
//! takes its handle out of the table and cancels the timer; dropped elsewhere (hyper never
//! does), the timer fires in its time and takes its own entry out. Whichever comes first
//! removes the entry, and the alarm says which did, so a key is never removed twice.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use ::hyper::rt::{Sleep, Timer};
use slab::Slab;

use crate::event_loop::TimerHandle;
use crate::toolbox::running_loop_for;

thread_local! {
    /// The loop timers of this thread's armed [`LoopSleep`]s.
    static ARMED: RefCell<Slab<TimerHandle>> = const { RefCell::new(Slab::new()) };
}

/// hyper's timer (`hyper::rt::Timer`) on the loop running on the calling thread: each sleep
/// is one [`call_later`](crate::EventLoop::call_later) timer, armed at its first poll and
/// cancelled when it is dropped. Give it to
/// `hyper::server::conn::http1::Builder::timer` for hyper's timeouts
/// (`header_read_timeout`); [`http1_builder`](super::http1_builder) does.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoopTimer;

impl Timer for LoopTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(LoopSleep::until(deadline))
    }
}

/// The sleep [`LoopTimer`] gives: completes at its deadline (never early: loop deadlines round
/// up to the clock's nanosecond). Polled where no loop runs, it completes at once, after
/// logging an error: a hyper timeout then fires early rather than never.
pub struct LoopSleep {
    /// When it completes.
    deadline: Instant,
    /// Rung by the timer.
    alarm: Arc<SharedAlarm>,
    /// Where its timer is, once armed.
    armed: Option<Armed>,
}

/// Where an armed [`LoopSleep`]'s timer handle is kept.
#[derive(Clone, Copy, Debug)]
struct Armed {
    /// The thread (and so the loop) it was armed on.
    thread: ThreadId,
    /// Its key in that thread's [`ARMED`].
    key: usize,
}

/// What a sleep shares with its timer's callback.
#[derive(Debug)]
enum Alarm {
    /// Not rung yet: the task to wake when it is.
    Waiting(Option<Waker>),
    /// The timer fired.
    Rang,
}

/// An [`Alarm`] shared across threads.
type SharedAlarm = Mutex<Alarm>;

fn lock(alarm: &SharedAlarm) -> MutexGuard<'_, Alarm> {
    // Plain assignments only under this lock: never left half-done.
    alarm.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LoopSleep {
    /// A sleep until `deadline`, armed at its first poll.
    pub fn until(deadline: Instant) -> LoopSleep {
        LoopSleep { deadline, alarm: Arc::new(Mutex::new(Alarm::Waiting(None))), armed: None }
    }

    /// When it completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Arms the loop timer; false when there is no loop to arm it on.
    fn arm(&mut self, delay: Duration) -> bool {
        let event_loop = match running_loop_for("hyper's LoopTimer") {
            Ok(event_loop) => event_loop,
            Err(err) => {
                log::error!(target: "ringloop", "{err}: the sleep ends at once");
                return false;
            }
        };
        let armed = ARMED.try_with(|armed| {
            let mut armed = armed.borrow_mut();
            let key = armed.vacant_key();
            let alarm = self.alarm.clone();
            let ring = move || {
                let waiting = std::mem::replace(&mut *lock(&alarm), Alarm::Rang);
                // `try_with`: nothing to remove once the thread's table is gone.
                let _ = ARMED.try_with(|armed| armed.borrow_mut().try_remove(key));
                if let Alarm::Waiting(Some(waker)) = waiting {
                    waker.wake();
                }
            };
            let timer = event_loop.call_later(delay, ring).ok()?;
            armed.insert(timer);
            Some(key)
        });
        let armed = armed.ok().flatten();
        match armed {
            Some(key) => {
                self.armed = Some(Armed { thread: std::thread::current().id(), key });
                true
            }
            None => false,
        }
    }
}

impl Future for LoopSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.armed.is_none() {
            // A deadline that is due now is ready (and never rounded down into a busy wait).
            let delay = this.deadline.saturating_duration_since(Instant::now());
            if delay.is_zero() || !this.arm(delay) {
                *lock(&this.alarm) = Alarm::Rang;
            }
        }
        let mut alarm = lock(&this.alarm);
        match &mut *alarm {
            Alarm::Rang => Poll::Ready(()),
            Alarm::Waiting(waker) => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl Sleep for LoopSleep {}

impl Drop for LoopSleep {
    fn drop(&mut self) {
        let Some(armed) = self.armed else { return };
        if armed.thread != std::thread::current().id() || matches!(*lock(&self.alarm), Alarm::Rang)
        {
            return;
        }
        let timer = ARMED.try_with(|table| table.borrow_mut().try_remove(armed.key));
        if let Ok(Some(timer)) = timer {
            timer.cancel();
        }
    }
}

impl fmt::Debug for LoopSleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopSleep")
            .field("deadline", &self.deadline)
            .field("armed", &self.armed)
            .field("alarm", &*lock(&self.alarm))
            .finish()
    }
}
