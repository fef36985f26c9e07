//! `run_in_executor`, `set_default_executor`, `shutdown_default_executor`.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use super::EventLoop;
use crate::error::{panic_message, Error, Result};
use crate::executor::Executor;
use crate::future::Future;

impl EventLoop {
    /// Runs `f` on `executor` (the default executor when `None`) and returns a future for its
    /// result (asyncio's `run_in_executor`). A panic in `f` becomes `Error::Panic`. Cancelling
    /// the future does not stop `f`; its result is then dropped, and nothing is delivered to a
    /// loop that has closed meanwhile.
    pub fn run_in_executor<F, R>(&self, executor: Option<&Executor>, f: F) -> Result<Future<R>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.check_open()?;
        let executor = match executor {
            Some(executor) => executor.clone(),
            None => self.default_executor()?,
        };
        let future = self.create_future::<R>();
        let target = future.clone();
        let call = self.inner.executor_calls.borrow_mut().insert(Box::new(
            move |result: Box<dyn Any + Send>| {
                if target.done() {
                    return; // cancelled meanwhile
                }
                let result = match result.downcast::<std::thread::Result<R>>() {
                    Ok(result) => *result,
                    Err(_) => return,
                };
                let _ = match result {
                    Ok(value) => target.set_result(value),
                    Err(payload) => target.set_exception(Error::Panic(panic_message(&*payload))),
                };
            },
        ));
        let handle = self.handle();
        let job = move || {
            let result: std::thread::Result<R> = catch_unwind(AssertUnwindSafe(f));
            // Err(Closed): the loop is gone; the result is dropped here, on this thread.
            let _ = handle.call_with_loop(move |event_loop| {
                let deliver = event_loop.inner.executor_calls.borrow_mut().try_remove(call);
                if let Some(deliver) = deliver {
                    deliver(Box::new(result));
                }
            });
        };
        if let Err(err) = executor.submit(Box::new(job)) {
            drop(self.inner.executor_calls.borrow_mut().try_remove(call));
            return Err(err);
        }
        Ok(future)
    }

    fn default_executor(&self) -> Result<Executor> {
        if self.inner.executor_shutdown_called.get() {
            return Err(Error::Runtime("Executor shutdown has been called".into()));
        }
        Ok(self.inner.default_executor.borrow_mut().get_or_insert_with(Executor::default).clone())
    }

    /// Makes `executor` the default for `run_in_executor(None, ..)`.
    pub fn set_default_executor(&self, executor: Executor) {
        *self.inner.default_executor.borrow_mut() = Some(executor);
    }

    /// Shuts the default executor down and waits (without blocking the loop) for its threads
    /// to finish, at most `timeout`. On timeout a warning is logged and the future completes
    /// anyway. After this, `run_in_executor(None, ..)` refuses work.
    pub async fn shutdown_default_executor(&self, timeout: Option<Duration>) -> Result<()> {
        self.check_open()?;
        self.inner.executor_shutdown_called.set(true);
        let Some(executor) = self.inner.default_executor.borrow_mut().take() else {
            return Ok(());
        };
        let done = self.create_future::<bool>();
        let target = done.clone();
        let handle = self.handle();
        let call = self.inner.executor_calls.borrow_mut().insert(Box::new(
            move |joined: Box<dyn Any + Send>| {
                let _ = target.set_result(joined.downcast::<bool>().map(|b| *b).unwrap_or(false));
            },
        ));
        std::thread::Builder::new()
            .name("ringloop-executor-shutdown".into())
            .spawn(move || {
                let joined = executor.shutdown(true, timeout);
                let _ = handle.call_with_loop(move |event_loop| {
                    let deliver = event_loop.inner.executor_calls.borrow_mut().try_remove(call);
                    if let Some(deliver) = deliver {
                        deliver(Box::new(joined));
                    }
                });
            })
            .map_err(|e| Error::io("spawning the executor shutdown thread", e))?;
        if !done.await? {
            log::warn!(
                target: "ringloop",
                "The executor did not finish joining its threads within {:?}",
                timeout.unwrap_or_default()
            );
        }
        Ok(())
    }
}
