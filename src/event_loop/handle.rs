//! `Handle` and `TimerHandle`: cancellable callbacks, as returned by `call_soon` and `call_later`.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

/// The callback inside a handle: run once (`call_soon`) or repeatedly (`add_reader`).
pub(crate) trait CallbackSlot {
    /// Runs the callback. A one-shot callback is consumed; a repeating one stays.
    fn run(&self);
    /// Drops the callback and what it captured (cancel must release references at once).
    fn release(&self);
    /// The callback's type name, for debug logs and exception contexts.
    fn name(&self) -> &'static str;
}

/// A callback run once.
struct Once<F>(Cell<Option<F>>);

impl<F: FnOnce()> CallbackSlot for Once<F> {
    fn run(&self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
    fn release(&self) {
        drop(self.0.take());
    }
    fn name(&self) -> &'static str {
        std::any::type_name::<F>()
    }
}

/// A callback run every time its fd is ready.
struct Repeat<F>(RefCell<Option<F>>);

impl<F: FnMut()> CallbackSlot for Repeat<F> {
    fn run(&self) {
        // A re-entrant run (the callback running itself) is impossible: handles only run from
        // the ready queue. `try_borrow_mut` keeps a removal from inside the callback safe.
        if let Ok(mut slot) = self.0.try_borrow_mut() {
            if let Some(f) = slot.as_mut() {
                f();
            }
        }
    }
    fn release(&self) {
        // From inside its own callback the slot is borrowed; `run` finishes and `release`
        // is called again by the loop when it sees the handle cancelled.
        if let Ok(mut slot) = self.0.try_borrow_mut() {
            slot.take();
        }
    }
    fn name(&self) -> &'static str {
        std::any::type_name::<F>()
    }
}

/// The shared part of a handle; the callback slot is unsized so a handle is one allocation.
pub(crate) struct HandleCore<C: ?Sized> {
    /// Set by `cancel`; a cancelled handle is skipped by the ready queue and the timer heap.
    cancelled: Cell<bool>,
    /// For timers: the loop's count of cancelled handles still in its heap (asyncio's
    /// `_timer_cancelled_count`), and whether this handle is in the heap.
    timer: Option<TimerLink>,
    /// The callback.
    callback: C,
}

/// A timer's link to the heap bookkeeping of its loop.
pub(crate) struct TimerLink {
    /// Cancelled handles still in the loop's heap.
    pub(crate) cancelled_in_heap: Rc<Cell<usize>>,
    /// True while the handle sits in the heap.
    pub(crate) in_heap: Cell<bool>,
}

/// A callback scheduled on the loop: asyncio's `Handle`. Cheap to clone; every clone refers
/// to the same callback.
#[derive(Clone)]
pub struct Handle {
    /// The callback and its state.
    pub(crate) core: Rc<HandleCore<dyn CallbackSlot>>,
}

impl Handle {
    /// A handle running `f` once.
    pub(crate) fn once<F: FnOnce() + 'static>(f: F, timer: Option<TimerLink>) -> Handle {
        let core: Rc<HandleCore<dyn CallbackSlot>> = Rc::new(HandleCore {
            cancelled: Cell::new(false),
            timer,
            callback: Once(Cell::new(Some(f))),
        });
        Handle { core }
    }

    /// A handle running `f` each time it is queued.
    pub(crate) fn repeating<F: FnMut() + 'static>(f: F) -> Handle {
        let core: Rc<HandleCore<dyn CallbackSlot>> = Rc::new(HandleCore {
            cancelled: Cell::new(false),
            timer: None,
            callback: Repeat(RefCell::new(Some(f))),
        });
        Handle { core }
    }

    /// Cancels the callback: it will not run, and what it captured is dropped now. Cancelling
    /// twice, or after the callback ran, does nothing.
    pub fn cancel(&self) {
        if self.core.cancelled.replace(true) {
            return;
        }
        if let Some(link) = &self.core.timer {
            if link.in_heap.get() {
                link.cancelled_in_heap.set(link.cancelled_in_heap.get() + 1);
            }
        }
        self.core.callback.release();
    }

    /// True once [`cancel`](Self::cancel) was called.
    pub fn cancelled(&self) -> bool {
        self.core.cancelled.get()
    }

    /// Runs the callback unless cancelled (the ready queue's job).
    pub(crate) fn run(&self) {
        if !self.cancelled() {
            self.core.callback.run();
            if self.cancelled() {
                self.core.callback.release();
            }
        }
    }

    /// The callback's type name (`my_app::main::{{closure}}`).
    pub fn callback_name(&self) -> &'static str {
        self.core.callback.name()
    }

    pub(crate) fn timer_link(&self) -> Option<&TimerLink> {
        self.core.timer.as_ref()
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.cancelled() { " cancelled" } else { "" };
        write!(f, "<Handle{state} {}>", self.callback_name())
    }
}

/// A callback scheduled for a point in time: asyncio's `TimerHandle`.
///
/// Handles compare by [`when`](Self::when): equal `when` and the same cancelled state compare
/// equal, a cancelled handle is unequal to a live one, and `<`/`>` order by `when`. The hash is
/// that of `when`.
#[derive(Clone)]
pub struct TimerHandle {
    /// The callback.
    pub(crate) handle: Handle,
    /// The absolute time (in [`EventLoop::time`](crate::EventLoop::time) seconds) it is due.
    pub(crate) when: f64,
}

impl TimerHandle {
    /// Cancels the timer; the loop drops it from its heap lazily.
    pub fn cancel(&self) {
        self.handle.cancel();
    }

    /// True once cancelled.
    pub fn cancelled(&self) -> bool {
        self.handle.cancelled()
    }

    /// When the callback is due, in loop time (seconds). Unchanged by cancel or firing.
    pub fn when(&self) -> f64 {
        self.when
    }

    /// The handle behind the timer.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl fmt::Debug for TimerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.cancelled() { " cancelled" } else { "" };
        write!(f, "<TimerHandle{state} when={} {}>", self.when, self.handle.callback_name())
    }
}

impl PartialEq for TimerHandle {
    fn eq(&self, other: &TimerHandle) -> bool {
        self.when == other.when && self.cancelled() == other.cancelled()
    }
}

/// `when` is never NaN (`call_at` rejects it), so equality is an equivalence.
impl Eq for TimerHandle {}

impl PartialOrd for TimerHandle {
    fn partial_cmp(&self, other: &TimerHandle) -> Option<std::cmp::Ordering> {
        match self.when.partial_cmp(&other.when)? {
            std::cmp::Ordering::Equal if self != other => None,
            ordering => Some(ordering),
        }
    }
}

impl Hash for TimerHandle {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.when.to_bits().hash(state);
    }
}
