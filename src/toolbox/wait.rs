//! `wait`: wait for tasks until the first completes, the first fails, or all complete.

use std::task::Poll;

use super::time_limit::TimeLimit;
use crate::error::{ArgumentKind, Error, Result};
use crate::task::Task;

/// When [`wait`] returns (asyncio's `FIRST_COMPLETED`, `FIRST_EXCEPTION`, `ALL_COMPLETED`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReturnWhen {
    /// As soon as any task is done (cancelled or failed included).
    FirstCompleted,
    /// As soon as any task fails: it panicked, or its output is a failure (an `Err`; see
    /// [`Fallible`]). Cancellation is no failure. When no task fails, once all are done.
    FirstException,
    /// Once every task is done.
    #[default]
    AllCompleted,
}

impl ReturnWhen {
    /// True when tasks in these states end the wait.
    fn is_met<T: Fallible>(self, tasks: &[Task<T>]) -> bool {
        match self {
            ReturnWhen::FirstCompleted => tasks.iter().any(Task::done),
            ReturnWhen::FirstException => tasks.iter().any(failed) || tasks.iter().all(Task::done),
            ReturnWhen::AllCompleted => tasks.iter().all(Task::done),
        }
    }
}

/// A task output that may stand for a failure, for [`ReturnWhen::FirstException`]: in Rust a
/// failing future returns an `Err` where an asyncio coroutine raises. Implemented for
/// `Result` (`Err` is a failure) and `()` (never); implement it for an output type of your own
/// to [`wait`] on its tasks (as `main` needs `std::process::Termination`).
pub trait Fallible {
    /// True if this output is a failure.
    fn is_failure(&self) -> bool;
}

impl<T, E> Fallible for Result<T, E> {
    fn is_failure(&self) -> bool {
        self.is_err()
    }
}

impl Fallible for () {
    fn is_failure(&self) -> bool {
        false
    }
}

/// True if `task` failed: it panicked, or its output (not taken yet) is a failure.
fn failed<T: Fallible>(task: &Task<T>) -> bool {
    task.ended_with_error() || task.peek_output(|output| output.is_some_and(Fallible::is_failure))
}

/// Waits for `tasks` until `return_when` is met or `timeout` passes (asyncio's
/// `asyncio.wait`), and returns them as `(done, pending)`, each in the order given. A
/// time-out is not an error: the unfinished tasks are in `pending`. Nothing is cancelled, and
/// no output is taken: await a done task to get its output. The tasks' outputs are
/// [`Fallible`] (`Result`s or `()`), so that `FirstException` can tell failures.
///
/// [`Error::InvalidArgument`] when `tasks` is empty; [`Error::Runtime`] when a timer is
/// needed (a limit was given and the condition is not met yet) and no loop runs.
///
/// ```
/// use ringloop::{create_task, sleep, wait, ReturnWhen};
///
/// ringloop::run(async {
///     let quick = create_task(async { sleep(0.001).await.map(|()| "quick") }).unwrap();
///     let slow = create_task(async { sleep(10.0).await.map(|()| "slow") }).unwrap();
///     let (done, pending) = wait([quick, slow], ReturnWhen::FirstCompleted, None).await.unwrap();
///     assert_eq!((done.len(), pending.len()), (1, 1));
///     for task in done {
///         assert_eq!(task.await.unwrap().unwrap(), "quick");
///     }
///     pending[0].cancel();
/// })
/// .unwrap();
/// ```
pub async fn wait<T: Fallible>(
    tasks: impl IntoIterator<Item = Task<T>>,
    return_when: ReturnWhen,
    timeout: impl Into<TimeLimit>,
) -> Result<(Vec<Task<T>>, Vec<Task<T>>)> {
    let tasks: Vec<Task<T>> = tasks.into_iter().collect();
    if tasks.is_empty() {
        return Err(Error::invalid_argument(
            ArgumentKind::Missing,
            "wait: the set of tasks is empty",
        ));
    }
    let mut expiry = timeout.into().expiry();
    std::future::poll_fn(|cx| {
        for task in &tasks {
            // Registers the waker of every unfinished task.
            let _ = task.poll_done(cx);
        }
        if return_when.is_met(&tasks) {
            return Poll::Ready(Ok(()));
        }
        expiry.poll_expired(cx)
    })
    .await?;
    Ok(tasks.into_iter().partition(Task::done))
}
