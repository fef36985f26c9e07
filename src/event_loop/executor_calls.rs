//! `run_in_executor`, `set_default_executor`, `shutdown_default_executor`.

use std::any::Any;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use super::{EventLoop, LoopHandle};
use crate::error::{loop_log, panic_message, Error, Result, RuntimeKind};
use crate::executor::Executor;
use crate::future::Future;

/// Carries one value from another thread to a callback registered on the loop thread. If the
/// loop has closed when the value arrives, the value is dropped on the sending thread.
struct CrossThread<V> {
    /// The loop's thread-safe side.
    handle: LoopHandle,
    /// Key of the waiting callback in `Inner::executor_calls`.
    call: usize,
    /// The value type.
    _value: PhantomData<fn(V)>,
}

impl<V: Send + 'static> CrossThread<V> {
    fn send(self, value: V) {
        let call = self.call;
        let _ = self.handle.call_with_loop(move |event_loop| {
            let deliver = event_loop.inner.executor_calls.borrow_mut().try_remove(call);
            if let Some(deliver) = deliver {
                deliver(Box::new(value));
            }
        });
    }
}

impl EventLoop {
    /// Registers `deliver` to receive a value sent from another thread.
    fn cross_thread<V: Send + 'static>(&self, deliver: impl FnOnce(V) + 'static) -> CrossThread<V> {
        let call = self.inner.executor_calls.borrow_mut().insert(Box::new(
            move |value: Box<dyn Any + Send>| {
                if let Ok(value) = value.downcast::<V>() {
                    deliver(*value);
                }
            },
        ));
        CrossThread { handle: self.handle(), call, _value: PhantomData }
    }

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
        let sender = self.cross_thread(move |result: std::thread::Result<R>| {
            if target.done() {
                return; // cancelled meanwhile
            }
            let _ = match result {
                Ok(value) => target.set_result(value),
                Err(payload) => target.set_exception(Error::Panic(panic_message(&*payload))),
            };
        });
        let call = sender.call;
        let job = move || sender.send(catch_unwind(AssertUnwindSafe(f)));
        if let Err(err) = executor.submit(Box::new(job)) {
            drop(self.inner.executor_calls.borrow_mut().try_remove(call));
            return Err(err);
        }
        Ok(future)
    }

    fn default_executor(&self) -> Result<Executor> {
        if self.inner.executor_shutdown_called.get() {
            return Err(Error::runtime(
                RuntimeKind::ExecutorShutdown,
                "Executor shutdown has been called",
            ));
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
        let joined = self.create_future::<bool>();
        let target = joined.clone();
        let sender = self.cross_thread(move |all_joined: bool| {
            let _ = target.set_result(all_joined);
        });
        let call = sender.call;
        let spawned = std::thread::Builder::new()
            .name("ringloop-executor-shutdown".into())
            .spawn(move || sender.send(executor.shutdown(true, timeout)));
        if let Err(err) = spawned {
            drop(self.inner.executor_calls.borrow_mut().try_remove(call));
            return Err(Error::io("spawning the executor shutdown thread", err));
        }
        if !joined.await? {
            let timeout = timeout.unwrap_or_default();
            loop_log!(Warn, "The executor did not finish joining its threads within {timeout:?}");
        }
        Ok(())
    }
}
