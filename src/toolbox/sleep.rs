//! `sleep`: a future that completes after a delay, on the running loop's own timers.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::running_loop_for;
use crate::error::{ArgumentKind, Error, Result};
use crate::event_loop::{Delay, EventLoop, TimerHandle};

/// Completes after `delay` (`f64` seconds or a `Duration`), as asyncio's `asyncio.sleep`.
///
/// The timer is the running loop's own (a [`call_later`](crate::EventLoop::call_later)
/// timer, armed at the first poll): it never fires early, since deadlines round up to the
/// clock's nanosecond, and dropping the `Sleep` cancels it. A delay of zero or less yields
/// once to the loop without a timer, as `asyncio.sleep(0)` does.
///
/// Awaiting it gives [`Error::Runtime`](crate::Error::Runtime) when polled where no loop
/// runs, and [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a NaN delay.
///
/// ```
/// ringloop::run(async {
///     let lp = ringloop::get_running_loop().unwrap();
///     let start = lp.time();
///     ringloop::sleep(0.01).await.unwrap();
///     assert!(lp.time() - start >= 0.01);
/// })
/// .unwrap();
/// ```
pub fn sleep(delay: impl Into<Delay>) -> Sleep {
    Sleep { delay: delay.into(), stage: Stage::Unarmed }
}

/// A sleep of `delay` armed now on `event_loop` (its timer runs from here, not from the first
/// poll): for the crate's own waits (Happy Eyeballs' stagger, a server's accept retry).
/// `Error::Closed` on a closed loop.
pub(crate) fn sleep_on(event_loop: &EventLoop, delay: impl Into<Delay>) -> Result<Sleep> {
    let delay = delay.into();
    let alarm = Rc::new(Alarm { rang: Cell::new(false), waker: RefCell::new(None) });
    let ringer = alarm.clone();
    let timer = event_loop.call_later(delay, move || ringer.ring())?;
    Ok(Sleep { delay, stage: Stage::Armed { timer, alarm } })
}

/// The future [`sleep`] returns. Dropping it cancels its timer.
pub struct Sleep {
    /// How long to sleep.
    delay: Delay,
    /// Where it is.
    stage: Stage,
}

/// The life of a [`Sleep`].
enum Stage {
    /// Not polled yet: no timer.
    Unarmed,
    /// A timer is scheduled; the alarm records that it fired.
    Armed {
        /// The loop timer (cancelled on drop).
        timer: TimerHandle,
        /// Shared with the timer's callback.
        alarm: Rc<Alarm>,
    },
    /// A zero delay yielded once and asked to be polled again.
    Yielded,
    /// Completed.
    Done,
}

/// What a sleep's timer callback shares with the sleep.
struct Alarm {
    /// The timer fired.
    rang: Cell<bool>,
    /// The task to wake when it does.
    waker: RefCell<Option<Waker>>,
}

impl Alarm {
    fn ring(&self) {
        self.rang.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    fn listen(&self, waker: &Waker) {
        let mut slot = self.waker.borrow_mut();
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }
}

impl Sleep {
    /// Arms the timer on the running loop (the first poll).
    fn arm(&mut self, cx: &mut Context<'_>) -> Result<Poll<()>> {
        if self.delay.as_secs_f64().is_nan() {
            return Err(Error::invalid_argument(
                ArgumentKind::NotANumber,
                "sleep: the delay must be a number, not NaN",
            ));
        }
        if self.delay.as_secs_f64() <= 0.0 {
            cx.waker().wake_by_ref();
            self.stage = Stage::Yielded;
            return Ok(Poll::Pending);
        }
        let event_loop = running_loop_for("sleep")?;
        let alarm = Rc::new(Alarm { rang: Cell::new(false), waker: RefCell::new(None) });
        alarm.listen(cx.waker());
        let ringer = alarm.clone();
        let timer = event_loop.call_later(self.delay, move || ringer.ring())?;
        self.stage = Stage::Armed { timer, alarm };
        Ok(Poll::Pending)
    }
}

impl Future for Sleep {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        match &this.stage {
            Stage::Unarmed => match this.arm(cx) {
                Ok(poll) => poll.map(Ok),
                Err(err) => {
                    this.stage = Stage::Done;
                    Poll::Ready(Err(err))
                }
            },
            Stage::Armed { alarm, .. } if !alarm.rang.get() => {
                alarm.listen(cx.waker());
                Poll::Pending
            }
            Stage::Armed { .. } | Stage::Yielded | Stage::Done => {
                this.stage = Stage::Done;
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Stage::Armed { timer, .. } = &self.stage {
            timer.cancel();
        }
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = match &self.stage {
            Stage::Unarmed => "unarmed".to_string(),
            Stage::Armed { timer, .. } => format!("armed, due at {}", timer.when()),
            Stage::Yielded => "yielded".to_string(),
            Stage::Done => "done".to_string(),
        };
        f.debug_struct("Sleep")
            .field("delay", &self.delay.as_secs_f64())
            .field("stage", &stage)
            .finish()
    }
}
