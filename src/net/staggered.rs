//! The staggered race of RFC 8305 ("Happy Eyeballs"), as asyncio's `staggered.staggered_race`.
//!
//! [`staggered_race`] starts attempts one after another: the next one starts as soon as the
//! latest one fails, or when `delay` seconds pass with the latest one still pending. The first
//! attempt to succeed wins and every other running attempt is cancelled by dropping its future.
//! With no `delay` the attempts run strictly one after another.
//!
//! # Implementation
//!
//! One future polls every running attempt itself (attempts are few), so cancelling the race
//! (dropping it) cancels every attempt at once, with no tasks to clean up.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use crate::error::Result;
use crate::event_loop::EventLoop;
use crate::toolbox::{sleep_on, Sleep};

/// What became of one attempt of a [`staggered_race`].
#[derive(Debug)]
pub(crate) enum Attempt<E> {
    /// It succeeded and won the race.
    Won,
    /// It failed with this error.
    Failed(E),
    /// It was still running when another attempt won, and was cancelled.
    Cancelled,
}

/// The outcome of a [`staggered_race`]: asyncio's `(winner_result, winner_index, exceptions)`.
#[derive(Debug)]
pub(crate) struct RaceOutcome<T, E> {
    /// The winner's index and result; `None` if every attempt failed (or there were none).
    pub(crate) winner: Option<(usize, T)>,
    /// One entry per attempt started, in start order.
    pub(crate) attempts: Vec<Attempt<E>>,
}

/// Runs the attempts made by `factories` as a staggered race (see the module docs).
///
/// An attempt factory is called only when its attempt starts, so attempts never started cost
/// nothing. `delay` is in seconds; `None` runs the attempts one after another. An attempt
/// whose error `ends_race` accepts ends the race at once, as a win would: the other running
/// attempts are cancelled and no more are started (create_connection's non-OS errors).
pub(crate) async fn staggered_race<T, E, Fut, F>(
    event_loop: &EventLoop,
    factories: Vec<F>,
    delay: Option<f64>,
    ends_race: fn(&E) -> bool,
) -> Result<RaceOutcome<T, E>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let mut factories = factories.into_iter();
    let mut running: Vec<(usize, Pin<Box<Fut>>)> = Vec::new();
    let mut attempts: Vec<Option<Attempt<E>>> = Vec::new();
    let mut timer: Option<Sleep> = None;
    let mut start_next = true;
    std::future::poll_fn(move |cx| {
        loop {
            if start_next {
                start_next = false;
                timer = None;
                if let Some(factory) = factories.next() {
                    running.push((attempts.len(), Box::pin(factory())));
                    attempts.push(None);
                    if let Some(delay) = delay {
                        timer = Some(sleep_on(event_loop, delay)?);
                    }
                }
            }
            let latest = attempts.len().checked_sub(1);
            let mut winner = None;
            let mut ended = false;
            running.retain_mut(|(index, attempt)| {
                if winner.is_some() || ended {
                    return true;
                }
                match attempt.as_mut().poll(cx) {
                    Poll::Pending => true,
                    Poll::Ready(Ok(value)) => {
                        winner = Some((*index, value));
                        false
                    }
                    Poll::Ready(Err(err)) => {
                        ended = ends_race(&err);
                        attempts[*index] = Some(Attempt::Failed(err));
                        // The latest attempt failed: start the next one at once.
                        start_next |= Some(*index) == latest;
                        false
                    }
                }
            });
            if let Some((index, value)) = winner {
                attempts[index] = Some(Attempt::Won);
                running.clear(); // cancels the losers
                return Poll::Ready(Ok(finish(Some((index, value)), &mut attempts)));
            }
            if ended {
                running.clear(); // cancels the others
                return Poll::Ready(Ok(finish(None, &mut attempts)));
            }
            if let Some(delay_over) = timer.as_mut() {
                if Pin::new(delay_over).poll(cx).is_ready() {
                    start_next = true;
                }
            }
            if start_next && factories.len() > 0 {
                continue;
            }
            start_next = false;
            if running.is_empty() && factories.len() == 0 {
                return Poll::Ready(Ok(finish(None, &mut attempts)));
            }
            return Poll::Pending;
        }
    })
    .await
}

/// The outcome, with every unfinished attempt recorded as cancelled.
fn finish<T, E>(
    winner: Option<(usize, T)>,
    attempts: &mut Vec<Option<Attempt<E>>>,
) -> RaceOutcome<T, E> {
    let attempts =
        attempts.drain(..).map(|attempt| attempt.unwrap_or(Attempt::Cancelled)).collect();
    RaceOutcome { winner, attempts }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::{staggered_race, Attempt, RaceOutcome};
    use crate::event_loop::EventLoop;
    use crate::toolbox::sleep_on as sleep;

    type LocalBoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>;

    /// An attempt that sleeps `secs`, logs its start and end, then succeeds or fails.
    fn attempt(
        lp: &EventLoop,
        log: &Rc<RefCell<Vec<String>>>,
        name: &'static str,
        secs: f64,
        ok: bool,
    ) -> impl FnOnce() -> LocalBoxFuture<'static, Result<&'static str, String>> {
        let (lp, log) = (lp.clone(), log.clone());
        move || {
            log.borrow_mut().push(format!("start {name}"));
            Box::pin(async move {
                sleep(&lp, secs).unwrap().await.unwrap();
                log.borrow_mut().push(format!("end {name}"));
                if ok {
                    Ok(name)
                } else {
                    Err(format!("{name} failed"))
                }
            })
        }
    }

    fn race(
        lp: &EventLoop,
        factories: Vec<
            impl FnOnce() -> LocalBoxFuture<'static, Result<&'static str, String>> + 'static,
        >,
        delay: Option<f64>,
    ) -> RaceOutcome<&'static str, String> {
        let lp2 = lp.clone();
        let watchdog = lp.call_later(5.0, move || lp2.stop()).unwrap();
        let outcome = lp
            .run_until_complete(async move {
                let lp = crate::get_running_loop().unwrap();
                staggered_race(&lp, factories, delay, |_| false).await
            })
            .unwrap()
            .unwrap();
        watchdog.cancel();
        outcome
    }

    fn names<E: std::fmt::Debug>(attempts: &[Attempt<E>]) -> Vec<String> {
        attempts.iter().map(|a| format!("{a:?}")).collect()
    }

    /// How a race went: its outcome, the log of the attempts' starts and ends, its seconds.
    struct Raced {
        outcome: RaceOutcome<&'static str, String>,
        log: Vec<String>,
        seconds: f64,
    }

    /// Races `attempts` (name, seconds, whether it succeeds) staggered by `delay`, on a loop
    /// of its own.
    fn race_attempts(attempts: &[(&'static str, f64, bool)], delay: Option<f64>) -> Raced {
        let lp = EventLoop::new().unwrap();
        let log = Rc::new(RefCell::new(Vec::new()));
        let factories =
            attempts.iter().map(|&(name, secs, ok)| attempt(&lp, &log, name, secs, ok)).collect();
        let started = lp.time();
        let outcome = race(&lp, factories, delay);
        let seconds = lp.time() - started;
        lp.close().unwrap();
        Raced { outcome, log: log.take(), seconds }
    }

    #[test]
    fn no_attempts_gives_no_winner() {
        let raced = race_attempts(&[], Some(0.1));
        assert!(raced.outcome.winner.is_none());
        assert!(raced.outcome.attempts.is_empty());
    }

    #[test]
    fn a_failure_starts_the_next_attempt_at_once() {
        let raced = race_attempts(&[("a", 0.0, false), ("b", 0.0, true)], Some(10.0));
        assert!(raced.seconds < 1.0, "the 10 s delay was waited out");
        assert_eq!(raced.outcome.winner, Some((1, "b")));
        assert_eq!(names(&raced.outcome.attempts), ["Failed(\"a failed\")", "Won"]);
        assert_eq!(raced.log, ["start a", "end a", "start b", "end b"]);
    }

    #[test]
    fn a_slow_attempt_lets_the_next_start_and_loses() {
        let raced = race_attempts(&[("a", 2.0, true), ("b", 0.0, true)], Some(0.02));
        assert_eq!(raced.outcome.winner, Some((1, "b")));
        assert_eq!(names(&raced.outcome.attempts), ["Cancelled", "Won"]);
        assert_eq!(raced.log, ["start a", "start b", "end b"]);
    }

    #[test]
    fn the_first_success_wins_even_if_started_first() {
        let attempts = [("a", 0.05, true), ("b", 1.0, true), ("c", 1.0, true)];
        let Raced { outcome, log, .. } = race_attempts(&attempts, Some(0.01));
        assert_eq!(outcome.winner, Some((0, "a")));
        // c never started when a won only if a won before the second delay; accept both.
        assert_eq!(outcome.attempts.len(), log.iter().filter(|l| l.starts_with("start")).count());
        assert!(matches!(outcome.attempts[0], Attempt::Won));
        assert!(outcome.attempts[1..].iter().all(|a| matches!(a, Attempt::Cancelled)));
    }

    #[test]
    fn without_delay_attempts_run_one_after_another() {
        let raced = race_attempts(&[("a", 0.02, false), ("b", 0.02, false)], None);
        assert!(raced.outcome.winner.is_none());
        let failed = ["Failed(\"a failed\")", "Failed(\"b failed\")"];
        assert_eq!(names(&raced.outcome.attempts), failed);
        assert_eq!(raced.log, ["start a", "end a", "start b", "end b"]);
    }

    #[test]
    fn an_earlier_failure_does_not_start_another_attempt() {
        // b starts after a's delay; a then fails, but b is the latest: c waits for b's delay.
        // 100 ms between events, so a loaded machine's late wake-ups keep their order.
        let attempts = [("a", 0.3, false), ("b", 2.0, true), ("c", 0.0, true)];
        let raced = race_attempts(&attempts, Some(0.2));
        assert!(raced.seconds >= 0.39, "c started when a failed");
        assert_eq!(raced.outcome.winner, Some((2, "c")));
        assert_eq!(raced.log, ["start a", "start b", "end a", "start c", "end c"]);
        let attempts = ["Failed(\"a failed\")", "Cancelled", "Won"];
        assert_eq!(names(&raced.outcome.attempts), attempts);
    }
}
