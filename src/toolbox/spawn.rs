//! `create_task` and `spawn`: schedule a future as a task on the running loop.

use std::future::Future;

use super::running_loop_for;
use crate::error::Result;
use crate::task::Task;

/// Wraps `future` in a task on the loop running on this thread (asyncio's
/// `asyncio.create_task`); see [`EventLoop::create_task`](crate::EventLoop::create_task).
/// [`Error::Runtime`](crate::Error::Runtime) ("no running event loop") when none runs here.
///
/// ```
/// ringloop::run(async {
///     let task = ringloop::create_task(async { 6 * 7 }).unwrap();
///     assert_eq!(task.await.unwrap(), 42);
/// })
/// .unwrap();
/// assert!(ringloop::create_task(async {}).is_err(), "no loop runs here");
/// ```
pub fn create_task<F>(future: F) -> Result<Task<F::Output>>
where
    F: Future + 'static,
    F::Output: 'static,
{
    running_loop_for("create_task")?.create_task(future)
}

/// [`create_task`] under tokio's name.
pub fn spawn<F>(future: F) -> Result<Task<F::Output>>
where
    F: Future + 'static,
    F::Output: 'static,
{
    running_loop_for("spawn")?.create_task(future)
}
