//! `ringloop::Executor`: a bounded thread pool for blocking work (asyncio's default executor).

use std::collections::VecDeque;
use std::fmt;
use std::mem;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::error::{ArgumentKind, Error, RuntimeKind};

/// A unit of work: runs once on some worker thread.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// The thread-name prefix when none is given.
const DEFAULT_THREAD_NAME_PREFIX: &str = "ringloop-executor";

/// A bounded pool of worker threads for blocking calls: the equivalent of Python's
/// `concurrent.futures.ThreadPoolExecutor`, which asyncio's `run_in_executor`, `getaddrinfo` and
/// `getnameinfo` use.
///
/// Clones share one pool. Jobs run in submission order on at most [`max_workers`] threads; a job
/// reports its own result (through a channel, a future, ...), so the pool only runs it. A job
/// that panics is caught and forgotten: the worker survives and takes the next job.
///
/// Dropping the last clone has the effect of `shutdown(false, None)`: no new work, and the
/// workers exit once they have drained the queue.
///
/// # Example
///
/// ```
/// use std::sync::mpsc;
/// use ringloop::Executor;
///
/// let executor = Executor::new(2)?.with_thread_name_prefix("dns");
/// let (tx, rx) = mpsc::channel();
/// for n in 1..=4u64 {
///     let tx = tx.clone();
///     executor.submit(Box::new(move || tx.send(n * n).unwrap()))?;
/// }
/// let mut squares: Vec<u64> = rx.iter().take(4).collect();
/// squares.sort();
/// assert_eq!(squares, [1, 4, 9, 16]);
/// assert!(executor.worker_count() <= 2);
///
/// assert!(executor.shutdown(true, None));
/// assert!(executor.submit(Box::new(|| {})).is_err());
/// # Ok::<(), ringloop::Error>(())
/// ```
///
/// # Implementation
///
/// One mutex guards the queue and the counters; workers wait on `work_ready` when the queue is
/// empty, and [`shutdown`] waits on `worker_exited`. A worker is spawned by [`submit`] when the
/// queued jobs outnumber the idle workers and fewer than `max_workers` are alive, as
/// `ThreadPoolExecutor._adjust_thread_count` does; workers never retire while the pool runs.
/// Since std has no timed join, a worker counts itself out under the lock just before it
/// returns, and [`shutdown`] waits for that count to reach zero before joining.
///
/// [`max_workers`]: Executor::max_workers
/// [`submit`]: Executor::submit
/// [`shutdown`]: Executor::shutdown
#[derive(Clone, Debug)]
pub struct Executor {
    /// The pool; shut down when the last clone drops.
    inner: Arc<Owner>,
}

/// The users' side of the pool. Workers hold [`Shared`] but not this, so its `Drop` runs when
/// the last [`Executor`] clone goes, whatever the workers are doing.
#[derive(Debug)]
struct Owner {
    /// The state the workers share.
    shared: Arc<Shared>,
}

/// What the workers and the owners share.
struct Shared {
    /// The most threads the pool runs at once.
    max_workers: usize,
    /// The queue and the counters.
    state: Mutex<State>,
    /// Signalled when a job is queued or the pool shuts down; idle workers wait on it.
    work_ready: Condvar,
    /// Signalled when a worker exits; `shutdown(wait = true)` waits on it.
    worker_exited: Condvar,
}

/// Whether the pool accepts new work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    /// Accepting jobs; workers wait for more when the queue is empty.
    Running,
    /// Refusing jobs; workers drain the queue, then exit.
    ShutDown,
}

/// The mutable part of [`Shared`].
struct State {
    /// Accepting work or not.
    lifecycle: Lifecycle,
    /// Jobs not yet taken by a worker, oldest first.
    queue: VecDeque<Job>,
    /// Workers blocked on `work_ready`.
    idle: usize,
    /// Workers whose thread has not yet counted itself out.
    alive: usize,
    /// Workers spawned so far; numbers the thread names.
    spawned: usize,
    /// Join handles of the workers not yet joined.
    handles: Vec<JoinHandle<()>>,
    /// Worker threads are named `{prefix}-{n}`.
    thread_name_prefix: String,
}

impl Executor {
    /// A pool of at most `max_workers` threads, none started yet.
    ///
    /// Fails with [`Error::InvalidArgument`] if `max_workers` is 0.
    pub fn new(max_workers: usize) -> Result<Executor, Error> {
        if max_workers == 0 {
            return Err(Error::invalid_argument(
                ArgumentKind::OutOfRange,
                "Executor::new: max_workers must be greater than 0",
            ));
        }
        Ok(Executor::with_max_workers(max_workers))
    }

    /// asyncio's default pool size: `min(32, available_parallelism + 4)`, at least 5.
    pub fn default_workers() -> usize {
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        cpus.saturating_add(4).min(32)
    }

    /// Names the worker threads `{prefix}-0`, `{prefix}-1`, ... (default
    /// `ringloop-executor-N`). Applies to every clone, and to workers spawned from now on.
    pub fn with_thread_name_prefix(self, prefix: impl Into<String>) -> Executor {
        self.inner.shared.lock().thread_name_prefix = prefix.into();
        self
    }

    /// Queues `job` to run on a worker thread, starting one if none is idle and fewer than
    /// [`max_workers`](Executor::max_workers) are alive.
    ///
    /// Fails with [`Error::Runtime`] once the pool is shut down, and with [`Error::Io`] if no
    /// worker is alive and a thread cannot be spawned; the job is dropped unrun in both cases.
    pub fn submit(&self, job: Box<dyn FnOnce() + Send + 'static>) -> Result<(), Error> {
        let shared = &self.inner.shared;
        let mut state = shared.lock();
        if state.lifecycle == Lifecycle::ShutDown {
            return Err(Error::runtime(
                RuntimeKind::ExecutorShutdown,
                "cannot schedule new work after the executor was shut down",
            ));
        }
        state.queue.push_back(job);
        if state.queue.len() > state.idle && state.alive < shared.max_workers {
            if let Err(err) = Shared::spawn_worker(shared, &mut state) {
                if state.alive == 0 {
                    // Nobody would ever run it: the job just queued is the only one.
                    state.queue.pop_back();
                    return Err(err);
                }
                // A live worker will get to it; the pool is merely smaller for now.
                log::debug!("executor runs with {} workers: {err}", state.alive);
            }
        }
        shared.work_ready.notify_one();
        Ok(())
    }

    /// Stops accepting work; jobs already queued still run (`ThreadPoolExecutor.shutdown` with
    /// `cancel_futures=False`). Idempotent.
    ///
    /// If `wait`, blocks until every worker has exited or `timeout` (`None`: forever) has
    /// passed, and returns whether they all exited; on timeout the remaining workers are
    /// detached and finish the queue on their own. Called from a worker (a job shutting down
    /// its own pool), it waits for the other workers only: the caller drains what is left once
    /// its job returns. Without `wait` it returns at once, `true` if no worker is alive.
    pub fn shutdown(&self, wait: bool, timeout: Option<Duration>) -> bool {
        let shared = &self.inner.shared;
        let mut state = shared.lock();
        state.lifecycle = Lifecycle::ShutDown;
        shared.work_ready.notify_all();
        if !wait {
            return state.alive == 0;
        }
        let me = thread::current().id();
        let on_worker = state.handles.iter().any(|h| h.thread().id() == me);
        let others_alive = |state: &State| state.alive - usize::from(on_worker);
        // A timeout too large to represent is as good as none.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        while others_alive(&state) > 0 {
            state = match deadline {
                None => shared.worker_exited.wait(state).unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        return false;
                    };
                    let (state, _) = shared
                        .worker_exited
                        .wait_timeout(state, left)
                        .unwrap_or_else(PoisonError::into_inner);
                    state
                }
            };
        }
        // Every other worker has counted itself out and is returning: joining is brief.
        let (mine, others): (Vec<_>, Vec<_>) =
            state.handles.drain(..).partition(|h| h.thread().id() == me);
        state.handles = mine;
        drop(state);
        for handle in others {
            // Jobs' panics are caught, so a worker cannot end in one.
            let _ = handle.join();
        }
        true
    }

    /// True once [`shutdown`](Executor::shutdown) was called on any clone.
    pub fn is_shutdown(&self) -> bool {
        self.inner.shared.lock().lifecycle == Lifecycle::ShutDown
    }

    /// The most threads this pool runs at once.
    pub fn max_workers(&self) -> usize {
        self.inner.shared.max_workers
    }

    /// Worker threads alive now (0 until the first [`submit`](Executor::submit)).
    pub fn worker_count(&self) -> usize {
        self.inner.shared.lock().alive
    }

    /// A pool of `max_workers` (> 0) threads, none started yet.
    fn with_max_workers(max_workers: usize) -> Executor {
        let state = State {
            lifecycle: Lifecycle::Running,
            queue: VecDeque::new(),
            idle: 0,
            alive: 0,
            spawned: 0,
            handles: Vec::new(),
            thread_name_prefix: DEFAULT_THREAD_NAME_PREFIX.to_string(),
        };
        let shared = Arc::new(Shared {
            max_workers,
            state: Mutex::new(state),
            work_ready: Condvar::new(),
            worker_exited: Condvar::new(),
        });
        Executor { inner: Arc::new(Owner { shared }) }
    }
}

impl Default for Executor {
    /// A pool of [`Executor::default_workers`] threads.
    fn default() -> Executor {
        Executor::with_max_workers(Executor::default_workers())
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.lifecycle = Lifecycle::ShutDown;
        self.shared.work_ready.notify_all();
    }
}

impl Shared {
    /// The state, even if a thread panicked holding the lock (jobs never run under it, so the
    /// state is consistent regardless).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts one more worker; called under the lock, which the new worker waits for.
    fn spawn_worker(shared: &Arc<Shared>, state: &mut State) -> Result<(), Error> {
        let name = format!("{}-{}", state.thread_name_prefix, state.spawned);
        let worker = Arc::clone(shared);
        let handle = thread::Builder::new()
            .name(name.clone())
            .spawn(move || worker.run_worker())
            .map_err(|err| Error::io(format!("spawning executor thread {name}"), err))?;
        state.spawned += 1;
        state.alive += 1;
        state.handles.push(handle);
        Ok(())
    }

    /// A worker's life: run jobs until the pool is shut down and the queue empty.
    fn run_worker(&self) {
        while let Some(job) = self.next_job() {
            // The job reports its own outcome; a panic must only not take the worker with it,
            // nor may a payload whose own drop panics.
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(job)) {
                if let Err(inner) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
                    mem::forget(inner);
                }
            }
        }
    }

    /// The next job, waiting for one while the pool runs; `None` once it is shut down and
    /// drained, after counting this worker out.
    fn next_job(&self) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.queue.pop_front() {
                return Some(job);
            }
            if state.lifecycle == Lifecycle::ShutDown {
                state.alive -= 1;
                self.worker_exited.notify_all();
                return None;
            }
            state.idle += 1;
            state = self.work_ready.wait(state).unwrap_or_else(PoisonError::into_inner);
            state.idle -= 1;
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Executor");
        s.field("max_workers", &self.max_workers);
        match self.state.try_lock() {
            Ok(state) => s
                .field("lifecycle", &state.lifecycle)
                .field("workers", &state.alive)
                .field("idle", &state.idle)
                .field("queued", &state.queue.len()),
            Err(_) => s.field("state", &format_args!("<locked>")),
        };
        s.finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Weak};

    /// Long enough for a 2-core machine shared with other builds.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// Polls `cond` until it holds or [`PATIENCE`] runs out.
    fn eventually(mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            thread::sleep(Duration::from_millis(1));
        }
        cond()
    }

    /// A latch jobs block on until the test opens it.
    #[derive(Default)]
    struct Gate {
        open: Mutex<bool>,
        opened: Condvar,
    }

    impl Gate {
        fn wait(&self) {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
        }

        fn open(&self) {
            *self.open.lock().unwrap() = true;
            self.opened.notify_all();
        }
    }

    #[test]
    fn new_rejects_zero_workers() {
        assert!(matches!(Executor::new(0), Err(Error::InvalidArgument { .. })));
        let n = Executor::default_workers();
        assert!((5..=32).contains(&n), "default_workers = {n}");
        assert_eq!(Executor::default().max_workers(), n);
        assert_eq!(Executor::new(3).unwrap().max_workers(), 3);
    }

    #[test]
    fn results_come_back() {
        let executor = Executor::new(4).unwrap();
        let (tx, rx) = mpsc::channel();
        for i in 0..20u32 {
            let tx = tx.clone();
            executor.submit(Box::new(move || tx.send(i * i).unwrap())).unwrap();
        }
        let mut got: Vec<u32> = (0..20).map(|_| rx.recv_timeout(PATIENCE).unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, (0..20).map(|i| i * i).collect::<Vec<_>>());
    }

    #[test]
    fn workers_are_named() {
        let (tx, rx) = mpsc::channel();
        let name = move || tx.send(thread::current().name().map(str::to_string)).unwrap();
        let default = Executor::new(1).unwrap();
        default.submit(Box::new(name.clone())).unwrap();
        assert_eq!(rx.recv_timeout(PATIENCE).unwrap().as_deref(), Some("ringloop-executor-0"));
        let custom = Executor::new(1).unwrap().with_thread_name_prefix("dns");
        custom.submit(Box::new(name)).unwrap();
        assert_eq!(rx.recv_timeout(PATIENCE).unwrap().as_deref(), Some("dns-0"));
    }

    #[test]
    fn concurrency_is_bounded_by_max_workers() {
        const MAX: usize = 3;
        let executor = Executor::new(MAX).unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let high_water = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Gate::default());
        let (tx, rx) = mpsc::channel();
        for _ in 0..10 {
            let (running, high_water, gate, tx) =
                (running.clone(), high_water.clone(), gate.clone(), tx.clone());
            executor
                .submit(Box::new(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    high_water.fetch_max(now, Ordering::SeqCst);
                    gate.wait();
                    running.fetch_sub(1, Ordering::SeqCst);
                    tx.send(()).unwrap();
                }))
                .unwrap();
        }
        assert!(eventually(|| running.load(Ordering::SeqCst) == MAX));
        // Give an extra worker, were there one, the time to start a fourth job.
        thread::sleep(Duration::from_millis(50));
        assert_eq!(executor.worker_count(), MAX);
        gate.open();
        for _ in 0..10 {
            rx.recv_timeout(PATIENCE).unwrap();
        }
        assert_eq!(high_water.load(Ordering::SeqCst), MAX);
        assert_eq!(executor.worker_count(), MAX);
    }

    #[test]
    fn workers_spawn_lazily_and_idle_ones_are_reused() {
        let executor = Executor::new(4).unwrap();
        assert_eq!(executor.worker_count(), 0);
        let (tx, rx) = mpsc::channel();
        for _ in 0..3 {
            let tx = tx.clone();
            executor.submit(Box::new(move || tx.send(()).unwrap())).unwrap();
            rx.recv_timeout(PATIENCE).unwrap();
            // Once the worker waits for work, the next job goes to it.
            assert!(eventually(|| executor.inner.shared.lock().idle == 1));
            assert_eq!(executor.worker_count(), 1);
        }
    }

    #[test]
    fn submit_after_shutdown_fails() {
        let executor = Executor::new(2).unwrap();
        assert!(!executor.is_shutdown());
        assert!(executor.shutdown(false, None), "no worker was ever started");
        assert!(executor.is_shutdown());
        let err = executor.submit(Box::new(|| {})).unwrap_err();
        assert!(
            matches!(&err, Error::Runtime { message: msg, .. } if msg.contains("shut down")),
            "{err}"
        );
        assert!(executor.shutdown(true, None), "shutdown is idempotent");
    }

    #[test]
    fn shutdown_wait_times_out_on_a_long_job() {
        let executor = Executor::new(1).unwrap();
        let (started_tx, started) = mpsc::channel();
        executor
            .submit(Box::new(move || {
                started_tx.send(()).unwrap();
                thread::sleep(Duration::from_millis(500));
            }))
            .unwrap();
        started.recv_timeout(PATIENCE).unwrap();
        let begin = Instant::now();
        assert!(!executor.shutdown(true, Some(Duration::from_millis(10))));
        let took = begin.elapsed();
        assert!(took < Duration::from_millis(250), "shutdown took {took:?}");
        assert_eq!(executor.worker_count(), 1, "the worker is left to finish its job");
        // A later shutdown can still wait for it.
        assert!(executor.shutdown(true, None));
        assert_eq!(executor.worker_count(), 0);
    }

    #[test]
    fn shutdown_wait_runs_queued_jobs_first() {
        let executor = Executor::new(1).unwrap();
        let gate = Arc::new(Gate::default());
        let ran = Arc::new(AtomicUsize::new(0));
        let blocker = gate.clone();
        executor.submit(Box::new(move || blocker.wait())).unwrap();
        for _ in 0..5 {
            let ran = ran.clone();
            executor
                .submit(Box::new(move || {
                    ran.fetch_add(1, Ordering::SeqCst);
                }))
                .unwrap();
        }
        let opener = {
            let gate = gate.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                gate.open();
            })
        };
        assert!(executor.shutdown(true, None));
        assert_eq!(ran.load(Ordering::SeqCst), 5);
        assert_eq!(executor.worker_count(), 0);
        opener.join().unwrap();
    }

    #[test]
    fn panicking_jobs_do_not_shrink_the_pool() {
        const MAX: usize = 2;
        let executor = Executor::new(MAX).unwrap();
        for _ in 0..MAX {
            executor.submit(Box::new(|| panic!("job panics on purpose"))).unwrap();
        }
        // MAX jobs that each need all the others running at once.
        let running = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        for _ in 0..MAX {
            let (running, tx) = (running.clone(), tx.clone());
            executor
                .submit(Box::new(move || {
                    running.fetch_add(1, Ordering::SeqCst);
                    tx.send(eventually(|| running.load(Ordering::SeqCst) == MAX)).unwrap();
                }))
                .unwrap();
        }
        for _ in 0..MAX {
            assert!(rx.recv_timeout(PATIENCE * 2).unwrap(), "fewer than {MAX} jobs ran at once");
        }
        assert_eq!(executor.worker_count(), MAX);
    }

    #[test]
    fn shutdown_from_a_job_does_not_deadlock() {
        let executor = Executor::new(2).unwrap();
        let (tx, rx) = mpsc::channel();
        let inside = executor.clone();
        executor.submit(Box::new(move || tx.send(inside.shutdown(true, None)).unwrap())).unwrap();
        assert_eq!(rx.recv_timeout(PATIENCE), Ok(true));
        assert!(executor.is_shutdown());
        assert!(executor.shutdown(true, None));
        assert_eq!(executor.worker_count(), 0);
    }

    #[test]
    fn dropping_the_last_clone_drains_the_queue() {
        let executor = Executor::new(1).unwrap();
        let shared: Weak<Shared> = Arc::downgrade(&executor.inner.shared);
        let (tx, rx) = mpsc::channel();
        for i in 0..5 {
            let tx = tx.clone();
            executor
                .submit(Box::new(move || {
                    thread::sleep(Duration::from_millis(5));
                    tx.send(i).unwrap();
                }))
                .unwrap();
        }
        let clone = executor.clone();
        drop(executor);
        assert!(!clone.is_shutdown(), "a clone still owns the pool");
        drop(clone);
        let got: Vec<i32> = (0..5).map(|_| rx.recv_timeout(PATIENCE).unwrap()).collect();
        assert_eq!(got, [0, 1, 2, 3, 4]);
        // The workers exit, dropping the last references to the shared state.
        assert!(eventually(|| shared.upgrade().is_none()));
    }
}
