//! asyncio's module-level helpers for coroutines and tasks, as free functions of the crate:
//! `sleep`, `wait_for`/`timeout`, `gather`, `wait`, `shield`, `create_task`/`spawn`, and
//! `run_coroutine_threadsafe` on [`LoopHandle`](crate::LoopHandle).
//!
//! Every helper works on the loop running on the calling thread (asyncio's
//! `get_running_loop()`), and futures given to `gather`, `wait_for` and `timeout` are polled in
//! place by the caller: they need not be `'static`, and dropping the caller drops them.

mod children;
mod gather;
mod shield;
mod sleep;
mod spawn;
mod threadsafe;
mod time_limit;
mod wait;

pub use gather::{gather, gather_all};
pub use shield::{shield, Shield};
pub(crate) use sleep::sleep_on;
pub use sleep::{sleep, Sleep};
pub use spawn::{create_task, spawn};
pub use threadsafe::ConcurrentFuture;
pub use time_limit::{timeout, wait_for, TimeLimit};
pub use wait::{wait, Fallible, ReturnWhen};

use crate::error::{Error, Result, RuntimeKind};
use crate::event_loop::{get_running_loop, EventLoop};

/// The loop running on this thread, or an [`Error::Runtime`] saying that `what` needs one.
pub(crate) fn running_loop_for(what: &str) -> Result<EventLoop> {
    get_running_loop().map_err(|_| {
        Error::runtime(
            RuntimeKind::NoRunningLoop,
            format!(
                "{what}: no running event loop on this thread (call it from a task or callback of \
             a running loop)"
            ),
        )
    })
}
