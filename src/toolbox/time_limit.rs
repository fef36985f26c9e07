//! Time limits: `wait_for`, `timeout`, and the [`TimeLimit`] argument `wait` takes as well.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use super::sleep::{sleep, Sleep};
use crate::error::{ArgumentKind, Error, Result};
use crate::event_loop::Delay;

/// A time limit: a [`Delay`] (`f64` seconds or a `Duration`), or `None` for none (asyncio's
/// `timeout=None`).
///
/// Anything a delay converts from converts to a limit: `0.5`, `Duration::from_millis(500)`,
/// and `None`. An `Option<f64>` or `Option<Duration>` converts with `.map(Delay::from)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeLimit(Option<Delay>);

impl TimeLimit {
    /// No limit: wait as long as it takes.
    pub const NONE: TimeLimit = TimeLimit(None);

    /// The limit's delay; `None` when there is no limit.
    pub fn delay(self) -> Option<Delay> {
        self.0
    }

    /// The limit as a `Duration` for blocking waits: negative delays are zero, and `None` (no
    /// limit) also for delays too long for a `Duration`. NaN is an `InvalidArgument` error.
    pub(crate) fn as_duration(self, what: &str) -> Result<Option<Duration>> {
        let Some(delay) = self.0 else { return Ok(None) };
        let seconds = delay.as_secs_f64();
        if seconds.is_nan() {
            return Err(Error::invalid_argument(
                ArgumentKind::NotANumber,
                format!("{what}: the timeout must not be NaN"),
            ));
        }
        Ok(Duration::try_from_secs_f64(seconds.max(0.0)).ok())
    }

    /// The timer that tells when the limit has passed (none without a limit).
    pub(crate) fn expiry(self) -> Expiry {
        Expiry { timer: self.0.map(sleep) }
    }

    /// `Error::Timeout` for a future that did not complete within the limit.
    pub(crate) fn elapsed(self, what: &str) -> Error {
        Error::Timeout(format!("{what}: the future did not complete within {self} and was dropped"))
    }
}

impl fmt::Display for TimeLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(delay) => write!(f, "{} s", delay.as_secs_f64()),
            None => f.write_str("no time limit"),
        }
    }
}

impl From<Delay> for TimeLimit {
    fn from(delay: Delay) -> TimeLimit {
        TimeLimit(Some(delay))
    }
}

impl From<f64> for TimeLimit {
    fn from(seconds: f64) -> TimeLimit {
        TimeLimit(Some(seconds.into()))
    }
}

impl From<Duration> for TimeLimit {
    fn from(duration: Duration) -> TimeLimit {
        TimeLimit(Some(duration.into()))
    }
}

/// `None` is no limit. The only `Option` conversion, so that a bare `None` needs no type.
impl From<Option<Delay>> for TimeLimit {
    fn from(delay: Option<Delay>) -> TimeLimit {
        TimeLimit(delay)
    }
}

/// The timer of a [`TimeLimit`], armed at its first poll on the running loop.
pub(crate) struct Expiry {
    /// The loop timer; none without a limit.
    timer: Option<Sleep>,
}

impl Expiry {
    /// `Ready(Ok)` once the limit has passed, `Ready(Err)` when no timer can be set (no
    /// running loop), `Pending` until then (for ever without a limit).
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        match &mut self.timer {
            Some(timer) => Pin::new(timer).poll(cx),
            None => Poll::Pending,
        }
    }
}

/// Waits for `future` for at most `timeout` (asyncio's `asyncio.wait_for`). On time-out the
/// future is dropped (cancelled) before this returns [`Error::Timeout`]; with `None` it waits
/// as long as it takes. A future that completes is returned even if the limit passed while it
/// did.
///
/// The future is polled in place, so it may borrow. The timer is the running loop's; without
/// one (and with a limit), the result is [`Error::Runtime`].
///
/// ```
/// use ringloop::{wait_for, Error};
///
/// ringloop::run(async {
///     let quick = wait_for(async { 7 }, 1.0).await;
///     assert_eq!(quick.unwrap(), 7);
///     let slow = wait_for(std::future::pending::<()>(), 0.01).await;
///     assert!(matches!(slow, Err(Error::Timeout(_))));
///     let unlimited = wait_for(ringloop::sleep(0.001), None).await;
///     assert!(unlimited.unwrap().is_ok());
/// })
/// .unwrap();
/// ```
pub async fn wait_for<F: Future>(future: F, timeout: impl Into<TimeLimit>) -> Result<F::Output> {
    within(future, timeout.into(), "wait_for").await
}

/// [`wait_for`] with tokio's argument order and a limit that is always set: `future`, or
/// [`Error::Timeout`] (and the future dropped) once `delay` has passed.
///
/// ```
/// use std::time::Duration;
///
/// ringloop::run(async {
///     let late = ringloop::timeout(Duration::from_millis(5), ringloop::sleep(10.0)).await;
///     assert!(matches!(late, Err(ringloop::Error::Timeout(_))));
/// })
/// .unwrap();
/// ```
pub async fn timeout<F: Future>(delay: impl Into<Delay>, future: F) -> Result<F::Output> {
    within(future, TimeLimit::from(delay.into()), "timeout").await
}

/// `future`'s output, or `limit.elapsed(what)` with the future dropped once the limit passed.
async fn within<F: Future>(future: F, limit: TimeLimit, what: &str) -> Result<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut expiry = limit.expiry();
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        expiry.poll_expired(cx).map(|expired| expired.and_then(|()| Err(limit.elapsed(what))))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_convert_and_read_as_durations() {
        assert_eq!(TimeLimit::from(None), TimeLimit::NONE);
        assert_eq!(
            TimeLimit::from(0.5).as_duration("t").unwrap(),
            Some(Duration::from_millis(500))
        );
        let from_duration = TimeLimit::from(Duration::from_millis(250));
        assert_eq!(from_duration.as_duration("t").unwrap(), Some(Duration::from_millis(250)));
        assert_eq!(TimeLimit::from(-1.0).as_duration("t").unwrap(), Some(Duration::ZERO));
        assert_eq!(TimeLimit::from(f64::INFINITY).as_duration("t").unwrap(), None);
        assert_eq!(TimeLimit::NONE.as_duration("t").unwrap(), None);
        let nan = TimeLimit::from(f64::NAN).as_duration("result");
        assert!(
            matches!(nan, Err(Error::InvalidArgument { message: ref m, .. }) if m.starts_with("result:"))
        );
    }

    #[test]
    fn elapsed_says_what_and_how_long() {
        let err = TimeLimit::from(0.25).elapsed("wait_for");
        let text = err.to_string();
        assert_eq!(text, "wait_for: the future did not complete within 0.25 s and was dropped");
        assert!(matches!(err, Error::Timeout(_)));
    }
}
