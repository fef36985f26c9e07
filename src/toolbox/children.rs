//! Futures polled in place by one parent future, each only when its own waker fired.
//!
//! # Implementation
//! Each child gets a waker that records its index in a shared queue and wakes the parent, so
//! a parent of `n` children polls the children that made progress, not all `n`, at each wake
//! (as `futures::FuturesUnordered` does). The queue sits behind a mutex because a `Waker` may
//! be woken from any thread; the children themselves never leave the parent's thread.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

/// Children woken since the parent last looked, and the parent to wake.
struct WokenQueue {
    /// Indices of woken children, each at most once.
    indices: Vec<usize>,
    /// `queued[i]`: child `i` is in `indices`.
    queued: Vec<bool>,
    /// The parent's waker, as of its last poll.
    parent: Option<Waker>,
}

/// The queue, shared with every child's waker.
struct Woken(Mutex<WokenQueue>);

impl Woken {
    fn lock(&self) -> MutexGuard<'_, WokenQueue> {
        // Pushes and takes only: a panic while holding the lock leaves nothing inconsistent.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The waker handed to one child.
struct ChildWaker {
    /// The child's index.
    index: usize,
    /// Where to record the wake.
    woken: Arc<Woken>,
}

impl Wake for ChildWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let parent = {
            let mut queue = self.woken.lock();
            if queue.queued[self.index] {
                return;
            }
            queue.queued[self.index] = true;
            queue.indices.push(self.index);
            queue.parent.clone()
        };
        if let Some(parent) = parent {
            parent.wake();
        }
    }
}

/// A fixed set of futures driven by one parent; finished children are dropped at once.
pub(crate) struct ChildFutures<F: Future> {
    /// The children; `None` once finished.
    children: Vec<Option<Pin<Box<F>>>>,
    /// Each child's waker, made once.
    wakers: Vec<Waker>,
    /// Wakes recorded by the children's wakers.
    woken: Arc<Woken>,
    /// Woken children taken from the queue and not polled yet.
    to_poll: VecDeque<usize>,
    /// Children not finished.
    running: usize,
}

impl<F: Future> ChildFutures<F> {
    /// The children, each to be polled (in order) at the first [`poll_next`](Self::poll_next).
    pub(crate) fn new(futures: impl IntoIterator<Item = F>) -> ChildFutures<F> {
        let children: Vec<_> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
        let count = children.len();
        let woken = Arc::new(Woken(Mutex::new(WokenQueue {
            indices: Vec::new(),
            queued: vec![false; count],
            parent: None,
        })));
        let wakers = (0..count)
            .map(|index| Waker::from(Arc::new(ChildWaker { index, woken: woken.clone() })))
            .collect();
        ChildFutures { children, wakers, woken, to_poll: (0..count).collect(), running: count }
    }

    /// How many children there are, finished or not.
    pub(crate) fn len(&self) -> usize {
        self.children.len()
    }

    /// Polls woken children until one finishes: `Ready(Some((index, output)))`, that child
    /// dropped; `Ready(None)` once every child has finished; `Pending` when none is ready.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<(usize, F::Output)>> {
        loop {
            if let Some(index) = self.to_poll.pop_front() {
                if let Some(output) = self.poll_child(index) {
                    return Poll::Ready(Some((index, output)));
                }
                continue;
            }
            if self.running == 0 {
                return Poll::Ready(None);
            }
            let mut queue = self.woken.lock();
            if !queue.parent.as_ref().is_some_and(|p| p.will_wake(cx.waker())) {
                queue.parent = Some(cx.waker().clone());
            }
            if queue.indices.is_empty() {
                return Poll::Pending;
            }
            for index in std::mem::take(&mut queue.indices) {
                queue.queued[index] = false;
                self.to_poll.push_back(index);
            }
        }
    }

    /// Polls child `index` once (if still running); its output if it finished.
    fn poll_child(&mut self, index: usize) -> Option<F::Output> {
        let child = self.children[index].as_mut()?;
        let Poll::Ready(output) =
            child.as_mut().poll(&mut Context::from_waker(&self.wakers[index]))
        else {
            return None;
        };
        self.children[index] = None;
        self.running -= 1;
        Some(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A future pending until opened; counts its polls and keeps the last waker.
    #[derive(Clone, Default)]
    struct Gate(Rc<GateState>);

    #[derive(Default)]
    struct GateState {
        open: Cell<bool>,
        polls: Cell<u32>,
        waker: RefCell<Option<Waker>>,
    }

    impl Gate {
        fn open(&self) {
            self.0.open.set(true);
            if let Some(waker) = self.0.waker.take() {
                waker.wake();
            }
        }
    }

    impl Future for Gate {
        type Output = u32;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            self.0.polls.set(self.0.polls.get() + 1);
            if self.0.open.get() {
                return Poll::Ready(self.0.polls.get());
            }
            *self.0.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// Counts the parent's wakes.
    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn polls_only_woken_children_and_reports_each_once() {
        let gates = [Gate::default(), Gate::default()];
        let mut children = ChildFutures::new(gates.clone());
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(children.poll_next(&mut cx).is_pending());
        assert_eq!((gates[0].0.polls.get(), gates[1].0.polls.get()), (1, 1));

        gates[1].open();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the child's wake reached the parent");
        assert_eq!(children.poll_next(&mut cx), Poll::Ready(Some((1, 2))));
        assert!(children.poll_next(&mut cx).is_pending());
        assert_eq!(gates[0].0.polls.get(), 1, "a child that was not woken was polled");

        gates[0].open();
        assert_eq!(children.poll_next(&mut cx), Poll::Ready(Some((0, 2))));
        assert_eq!(children.poll_next(&mut cx), Poll::Ready(None));
    }
}
