//! `shield`: work that keeps running when whoever awaits it goes away.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::running_loop_for;
use crate::error::Result;
use crate::task::Task;

/// Runs `future` as a task on the running loop and returns a handle to await it that does not
/// cancel it (asyncio's `asyncio.shield`): dropping the [`Shield`], or cancelling the task that
/// awaits it, leaves the work running to completion. If the work itself is cancelled, awaiting
/// the shield gives [`Error::Cancelled`](crate::Error::Cancelled).
///
/// [`Error::Runtime`](crate::Error::Runtime) when no loop runs on this thread.
///
/// ```
/// use std::{cell::Cell, rc::Rc};
///
/// ringloop::run(async {
///     let saved = Rc::new(Cell::new(false));
///     let flag = saved.clone();
///     let save = ringloop::shield(async move {
///         ringloop::sleep(0.01).await.unwrap();
///         flag.set(true);
///     })
///     .unwrap();
///     // The caller gives up early; the save goes on.
///     let gave_up = ringloop::wait_for(save, 0.001).await;
///     assert!(gave_up.is_err());
///     ringloop::sleep(0.05).await.unwrap();
///     assert!(saved.get());
/// })
/// .unwrap();
/// ```
pub fn shield<F>(future: F) -> Result<Shield<F::Output>>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let task = running_loop_for("shield")?.create_task(future)?;
    Ok(Shield { task })
}

/// The handle [`shield`] returns: awaiting it gives the work's output; dropping it does not
/// stop the work.
pub struct Shield<T> {
    /// The task running the work.
    task: Task<T>,
}

impl<T> Shield<T> {
    /// True once the work finished, whatever the outcome.
    pub fn done(&self) -> bool {
        self.task.done()
    }
}

impl<T> Future for Shield<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        Pin::new(&mut self.task).poll(cx)
    }
}

impl<T> fmt::Debug for Shield<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shield").field("task", &self.task).finish()
    }
}
