//! The thread-safe side of a loop: `LoopHandle`, `call_soon_threadsafe` and cross-thread wakes.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::driver::EventFd;
use crate::error::{Error, Result};
use crate::event_loop::EventLoop;

/// Work handed to the loop thread from anywhere.
pub(crate) enum RemoteItem {
    /// A `call_soon_threadsafe` callback.
    Callback(Arc<RemoteCallback>),
    /// A completion produced off the loop thread (executor results, cross-thread wakes' payloads).
    WithLoop(Box<dyn FnOnce(&EventLoop) + Send>),
    /// A task woken from another thread (its id in the loop's task slab).
    Wake(usize),
    /// `LoopHandle::stop`.
    Stop,
}

/// A callback queued by `call_soon_threadsafe`, cancellable from any thread.
pub(crate) struct RemoteCallback {
    /// Set by [`ThreadsafeHandle::cancel`].
    cancelled: AtomicBool,
    /// The callback, dropped at cancel or taken when run.
    callback: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl RemoteCallback {
    /// Runs the callback unless it was cancelled.
    pub(crate) fn run(&self) {
        if self.cancelled.load(Ordering::Acquire) {
            return;
        }
        let callback = lock(&self.callback).take();
        if let Some(callback) = callback {
            callback();
        }
    }
}

/// The queue the loop drains on its own thread.
pub(crate) struct RemoteQueue {
    /// Items in arrival order.
    pub(crate) items: Vec<RemoteItem>,
    /// The loop's eventfd; `None` once the loop is closed (then every push is refused).
    waker: Option<Arc<EventFd>>,
}

/// State shared between a loop and every [`LoopHandle`] and task waker.
pub(crate) struct Remote {
    /// Pending items and the waker.
    queue: Mutex<RemoteQueue>,
    /// True when items may be queued and the eventfd was written since the loop last drained:
    /// at most one wake write per batch, and a cheap "anything queued?" check for the loop.
    notified: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the data inconsistent (pushes and takes
    // only), so poisoning is ignored.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Remote {
    pub(crate) fn new(waker: Arc<EventFd>) -> Remote {
        Remote {
            queue: Mutex::new(RemoteQueue { items: Vec::new(), waker: Some(waker) }),
            notified: AtomicBool::new(false),
        }
    }

    /// Queues `item` and wakes the loop; `Error::Closed` after the loop closed.
    pub(crate) fn push(&self, item: RemoteItem) -> Result<()> {
        let waker = {
            let mut queue = lock(&self.queue);
            let waker = queue.waker.clone().ok_or(Error::Closed)?;
            queue.items.push(item);
            waker
        };
        if !self.notified.swap(true, Ordering::AcqRel) {
            // The loop may be blocked in the kernel: wake it. A failed write can only mean the
            // eventfd is gone, and then the loop is closing anyway.
            let _ = waker.wake();
        }
        Ok(())
    }

    /// True when items may be waiting (cheap; called on every `call_soon`).
    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        self.notified.load(Ordering::Acquire)
    }

    /// Takes everything queued (loop thread). Clears the notification first, so a push racing
    /// with this either lands in the batch taken or writes the eventfd again.
    pub(crate) fn take(&self) -> Vec<RemoteItem> {
        self.notified.store(false, Ordering::SeqCst);
        std::mem::take(&mut lock(&self.queue).items)
    }

    /// Refuses all further pushes and drops the eventfd reference (loop close).
    pub(crate) fn close(&self) -> Vec<RemoteItem> {
        let mut queue = lock(&self.queue);
        queue.waker = None;
        std::mem::take(&mut queue.items)
    }

    /// True once the loop closed.
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.queue).waker.is_none()
    }

    /// Queues a callback for the loop thread: `call_soon_threadsafe`.
    pub(crate) fn call_soon_threadsafe(
        &self,
        callback: Box<dyn FnOnce() + Send>,
    ) -> Result<ThreadsafeHandle> {
        let remote = Arc::new(RemoteCallback {
            cancelled: AtomicBool::new(false),
            callback: Mutex::new(Some(callback)),
        });
        self.push(RemoteItem::Callback(remote.clone()))?;
        Ok(ThreadsafeHandle { inner: remote })
    }
}

/// A `Send + Sync` handle to an event loop, for other threads: asyncio's
/// `call_soon_threadsafe` and a thread-safe `stop`.
///
/// ```
/// let event_loop = ringloop::EventLoop::new().unwrap();
/// let handle = event_loop.handle();
/// std::thread::spawn(move || {
///     handle.call_soon_threadsafe(|| println!("hello from the loop thread")).unwrap();
///     handle.stop().unwrap();
/// });
/// event_loop.run_forever().unwrap();
/// ```
#[derive(Clone)]
pub struct LoopHandle {
    /// The shared state.
    pub(crate) remote: Arc<Remote>,
}

impl LoopHandle {
    /// Schedules `callback` to run on the loop thread at its next iteration, waking the loop if
    /// it is blocked. Callbacks run in the order they were queued, also relative to `call_soon`
    /// calls made on the loop thread afterwards. `Error::Closed` once the loop is closed.
    pub fn call_soon_threadsafe<F>(&self, callback: F) -> Result<ThreadsafeHandle>
    where
        F: FnOnce() + Send + 'static,
    {
        self.remote.call_soon_threadsafe(Box::new(callback))
    }

    /// Runs `f` with the loop on the loop thread (for results computed elsewhere).
    pub(crate) fn call_with_loop<F>(&self, f: F) -> Result<()>
    where
        F: FnOnce(&EventLoop) + Send + 'static,
    {
        self.remote.push(RemoteItem::WithLoop(Box::new(f)))
    }

    /// Asks the loop to stop, as [`EventLoop::stop`] does, from any thread.
    pub fn stop(&self) -> Result<()> {
        self.remote.push(RemoteItem::Stop)
    }

    /// True once the loop is closed.
    pub fn is_closed(&self) -> bool {
        self.remote.is_closed()
    }
}

impl fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopHandle").field("closed", &self.is_closed()).finish()
    }
}

/// The handle `call_soon_threadsafe` returns; `Send + Sync`, so any thread may cancel.
#[derive(Clone)]
pub struct ThreadsafeHandle {
    /// The queued callback.
    inner: Arc<RemoteCallback>,
}

impl ThreadsafeHandle {
    /// Cancels the callback if it has not run yet, dropping it.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::Release);
        drop(lock(&self.inner.callback).take());
    }

    /// True once cancelled.
    pub fn cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
    }
}

impl fmt::Debug for ThreadsafeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadsafeHandle").field("cancelled", &self.cancelled()).finish()
    }
}
