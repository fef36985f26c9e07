//! `LoopTimer`: hyper's `rt::Timer` on the running loop's own timers.
//!
//! # Implementation
//! hyper makes a sleep per request for its header-read timeout (armed while it waits for a
//! head, dropped once the head is in), so a sleep must cost little. The sleeps of a thread share
//! one registry ([`SLEEPS`]): a slab of the armed ones (deadline, waker) and a min-heap of
//! their deadlines, served by **one** loop timer ([`call_later`](crate::EventLoop::call_later))
//! at the earliest deadline. Arming is a slab insert and a heap push; dropping a sleep takes
//! it out of the slab and leaves its heap entry stale: the timer, when it fires, rings what
//! is due, skips what is stale and arms itself for the next live deadline. The heap is
//! rebuilt from the slab once stale entries outnumber live ones, so memory stays O(live
//! sleeps). (A `call_later` per sleep, with its handle, boxed callback and an `Arc<Mutex>`
//! alarm, cost ~1,300 instructions per hyper request and 4-8% of its CPU:
//! `docs/benchmarks.md`.)
//!
//! hyper wants its timer and sleeps `Send + Sync`: a [`LoopSleep`] holds only its deadline and
//! where its entry is (its thread's registry, key, generation). Polled or dropped on another thread than
//! the one that armed it (hyper does neither), it arms again there, or leaves its entry to
//! ring a waker nobody waits on.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ::hyper::rt::{Sleep, Timer};
use slab::Slab;

use crate::event_loop::{Inner, TimerHandle};
use crate::toolbox::running_loop_for;
use crate::EventLoop;

thread_local! {
    /// The armed [`LoopSleep`]s of this thread and their loop timer.
    static SLEEPS: RefCell<Sleeps> = RefCell::new(Sleeps::new());
}

/// The next registry's number: a [`LoopSleep`] knows its thread's registry by it.
static NEXT_REGISTRY: AtomicU64 = AtomicU64::new(0);

/// hyper's timer (`hyper::rt::Timer`) on the loop running on the calling thread: a sleep is
/// armed at its first poll, on one loop timer its thread's sleeps share, and disarmed when
/// dropped. Give it to `hyper::server::conn::http1::Builder::timer` for hyper's timeouts
/// (`header_read_timeout`); [`http1_builder`](super::http1_builder) does.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoopTimer;

impl Timer for LoopTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(LoopSleep::until(deadline))
    }
}

/// The sleep [`LoopTimer`] gives: completes at its deadline (never early: loop deadlines round
/// up to the clock's nanosecond). Polled where no loop runs, it completes at once, after
/// logging an error: a hyper timeout then fires early rather than never.
pub struct LoopSleep {
    /// When it completes.
    deadline: Instant,
    /// Its entry in its thread's [`SLEEPS`], once armed.
    armed: Option<Armed>,
}

/// Where an armed [`LoopSleep`]'s entry is.
#[derive(Clone, Copy, Debug)]
struct Armed {
    /// The number of the [`SLEEPS`] that holds it (its thread's).
    registry: u64,
    /// Its key in the slab.
    key: usize,
    /// Its generation: the key of a rung or dropped entry is reused by later ones.
    generation: u64,
}

/// A thread's armed sleeps.
struct Sleeps {
    /// This registry's number, unique in the process.
    id: u64,
    /// The armed sleeps not rung yet.
    entries: Slab<Entry>,
    /// Their deadlines, earliest first, with the entry each was pushed for (stale once that
    /// entry rang or was dropped).
    deadlines: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// The next generation.
    next_generation: u64,
    /// The loop timer that rings them, if one is set.
    timer: Option<LoopAlarm>,
}

/// An armed sleep.
struct Entry {
    /// When it rings.
    deadline: Instant,
    /// Which arming it is.
    generation: u64,
    /// The task to wake.
    waker: Waker,
}

/// The loop timer a thread's sleeps share.
struct LoopAlarm {
    /// The loop it is set on (another loop running on the thread later sets its own).
    event_loop: Weak<Inner>,
    /// When it fires.
    deadline: Instant,
    /// The timer.
    handle: TimerHandle,
}

impl Sleeps {
    /// The registry of a thread's first sleep.
    fn new() -> Sleeps {
        Sleeps {
            id: NEXT_REGISTRY.fetch_add(1, Ordering::Relaxed),
            entries: Slab::new(),
            deadlines: BinaryHeap::new(),
            next_generation: 0,
            timer: None,
        }
    }

    /// Arms a sleep until `deadline` that wakes `waker`, on `event_loop`.
    fn arm(&mut self, event_loop: &EventLoop, deadline: Instant, waker: &Waker) -> (usize, u64) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let key = self.entries.insert(Entry { deadline, generation, waker: waker.clone() });
        self.deadlines.push(Reverse((deadline, key, generation)));
        self.compact();
        self.keep_timer(event_loop, deadline);
        (key, generation)
    }

    /// The entry armed as `key` and `generation`, if it is still armed (not rung, not dropped).
    fn entry(&mut self, key: usize, generation: u64) -> Option<&mut Entry> {
        self.entries.get_mut(key).filter(|entry| entry.generation == generation)
    }

    /// Disarms the sleep armed as `key` and `generation` (its heap entry goes stale) and
    /// returns its waker, for the caller to drop once the registry is no longer borrowed.
    fn disarm(&mut self, key: usize, generation: u64) -> Option<Waker> {
        self.entry(key, generation)?;
        Some(self.entries.remove(key).waker)
    }

    /// Rebuilds the heap from the armed entries once stale ones outnumber them.
    fn compact(&mut self) {
        if self.deadlines.len() > 2 * self.entries.len() + 64 {
            let live = self.entries.iter().map(|(key, e)| Reverse((e.deadline, key, e.generation)));
            self.deadlines = live.collect();
        }
    }

    /// Drops stale deadlines off the top of the heap.
    fn skip_stale(&mut self) {
        while let Some(&Reverse((_, key, generation))) = self.deadlines.peek() {
            if self.entry(key, generation).is_some() {
                return;
            }
            self.deadlines.pop();
        }
    }

    /// Takes out every sleep due by `now` and returns their wakers.
    fn take_due(&mut self, now: Instant) -> Vec<Waker> {
        let mut due = Vec::new();
        while let Some(&Reverse((deadline, key, generation))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            if self.entry(key, generation).is_some() {
                due.push(self.entries.remove(key).waker);
            }
        }
        due
    }

    /// Keeps a loop timer on `event_loop` due by every armed deadline, `armed` the one armed
    /// last. A timer on that loop is due by every earlier one already (set for the earliest,
    /// and moved whenever an earlier one was armed), so only `armed` is compared: stale heap
    /// entries are left for the timer's firing and the compaction, not popped per arming.
    fn keep_timer(&mut self, event_loop: &EventLoop, armed: Instant) {
        let on_this_loop = self.timer.as_ref().filter(|timer| {
            let same_loop =
                timer.event_loop.upgrade().is_some_and(|l| Rc::ptr_eq(&l, &event_loop.inner));
            same_loop && !timer.handle.cancelled()
        });
        match on_this_loop {
            Some(timer) if timer.deadline <= armed => {}
            Some(_) => self.set_timer(event_loop, armed),
            None => self.set_timer_for_earliest(event_loop),
        }
    }

    /// Sets the loop timer on `event_loop` for the earliest live deadline, if any.
    fn set_timer_for_earliest(&mut self, event_loop: &EventLoop) {
        self.skip_stale();
        if let Some(&Reverse((deadline, ..))) = self.deadlines.peek() {
            self.set_timer(event_loop, deadline);
        }
    }

    /// Sets the loop timer on `event_loop` for `deadline`, in place of the one set before.
    fn set_timer(&mut self, event_loop: &EventLoop, deadline: Instant) {
        if let Some(old) = self.timer.take() {
            old.handle.cancel();
        }
        let delay = deadline.saturating_duration_since(Instant::now());
        let Ok(handle) = event_loop.call_later(delay, ring_due) else { return };
        let event_loop = Rc::downgrade(&event_loop.inner);
        self.timer = Some(LoopAlarm { event_loop, deadline, handle });
    }
}

/// The loop timer's callback: wakes the sleeps due and sets the timer for the next.
fn ring_due() {
    let due = SLEEPS.try_with(|sleeps| {
        let mut sleeps = sleeps.borrow_mut();
        sleeps.timer = None;
        let due = sleeps.take_due(Instant::now());
        if let Ok(event_loop) = crate::get_running_loop() {
            sleeps.set_timer_for_earliest(&event_loop);
        }
        due
    });
    // Woken outside the borrow: a waker may poll its sleep at once.
    for waker in due.unwrap_or_default() {
        waker.wake();
    }
}

impl LoopSleep {
    /// A sleep until `deadline`, armed at its first poll.
    pub fn until(deadline: Instant) -> LoopSleep {
        LoopSleep { deadline, armed: None }
    }

    /// When it completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Arms it on this thread's loop to wake `waker`; false when there is no loop to arm it on.
    fn arm(&mut self, waker: &Waker) -> bool {
        let event_loop = match running_loop_for("hyper's LoopTimer") {
            Ok(event_loop) => event_loop,
            Err(err) => {
                log::error!(target: "ringloop", "{err}: the sleep ends at once");
                return false;
            }
        };
        let deadline = self.deadline;
        let armed = SLEEPS.try_with(|sleeps| {
            let mut sleeps = sleeps.borrow_mut();
            let (key, generation) = sleeps.arm(&event_loop, deadline, waker);
            Armed { registry: sleeps.id, key, generation }
        });
        self.armed = armed.ok();
        self.armed.is_some()
    }

    /// Polls an armed sleep on its own thread: `Some(pending)` with its waker updated, `None`
    /// if it is not armed here.
    fn poll_armed(&self, waker: &Waker) -> Option<bool> {
        let armed = self.armed?;
        let polled = SLEEPS.try_with(|sleeps| {
            let mut sleeps = sleeps.borrow_mut();
            if sleeps.id != armed.registry {
                return None; // armed on another thread
            }
            let Some(entry) = sleeps.entry(armed.key, armed.generation) else {
                return Some((false, None)); // rung
            };
            if entry.waker.will_wake(waker) {
                return Some((true, None));
            }
            Some((true, Some(std::mem::replace(&mut entry.waker, waker.clone()))))
        });
        // The thread's registry is gone (thread exit): rung for good.
        let (pending, replaced) = polled.unwrap_or(Some((false, None)))?;
        drop(replaced); // out of the registry's borrow (see `Drop`)
        Some(pending)
    }
}

impl Future for LoopSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let Some(pending) = this.poll_armed(cx.waker()) {
            // Rung (its entry taken out) or still armed.
            return if pending { Poll::Pending } else { Poll::Ready(()) };
        }
        // Not armed, or armed on another thread: arm it here. A deadline that is due now is
        // ready (and never rounded down into a busy wait).
        if this.deadline <= Instant::now() || !this.arm(cx.waker()) {
            this.armed = None;
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Sleep for LoopSleep {}

impl Drop for LoopSleep {
    fn drop(&mut self) {
        let Some(armed) = self.armed else { return };
        // The entry's waker is dropped after the registry's borrow ends: it may hold the last
        // reference to a task (another executor's waker), whose future may hold sleeps that
        // disarm in turn. On another thread than its own, the entry is left to ring.
        let waker = SLEEPS.try_with(|sleeps| {
            let mut sleeps = sleeps.borrow_mut();
            (sleeps.id == armed.registry).then(|| sleeps.disarm(armed.key, armed.generation))
        });
        drop(waker);
    }
}

impl fmt::Debug for LoopSleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopSleep")
            .field("deadline", &self.deadline)
            .field("armed", &self.armed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What this thread's registry holds: (armed sleeps, heap entries).
    fn held() -> (usize, usize) {
        SLEEPS.with(|sleeps| {
            let sleeps = sleeps.borrow();
            (sleeps.entries.len(), sleeps.deadlines.len())
        })
    }

    #[test]
    fn dropped_sleeps_leave_memory_bounded_by_the_live_ones() {
        let event_loop = EventLoop::new().expect("a loop");
        event_loop
            .run_until_complete(async {
                let waker = Waker::noop();
                let mut cx = Context::from_waker(waker);
                // Ten live sleeps, and 10,000 armed and dropped after them, as hyper arms and
                // drops one per request; their deadlines are later, so that no arming finds
                // the stale entries on top of the heap.
                let mut live: Vec<_> = (0..10)
                    .map(|_| LoopSleep::until(Instant::now() + Duration::from_secs(10)))
                    .collect();
                for sleep in &mut live {
                    assert!(Pin::new(sleep).poll(&mut cx).is_pending());
                }
                for _ in 0..10_000 {
                    let mut sleep = LoopSleep::until(Instant::now() + Duration::from_secs(30));
                    assert!(Pin::new(&mut sleep).poll(&mut cx).is_pending());
                }
                let (armed, heap) = held();
                assert_eq!(armed, 10);
                assert!(heap <= 2 * armed + 64 + 1, "{heap} heap entries for {armed} sleeps");
                drop(live);
                assert_eq!(held().0, 0);
            })
            .expect("run");
        event_loop.close().expect("close");
    }

    /// A waker that holds a sleep: the last reference to it is the registry's, as another
    /// executor's waker may hold the last reference to a task whose future holds sleeps.
    struct HoldsSleep {
        /// Held for its drop.
        _sleep: LoopSleep,
    }

    impl std::task::Wake for HoldsSleep {
        fn wake(self: std::sync::Arc<Self>) {}
    }

    /// A waker holding `inner`, after arming it.
    fn waker_holding_armed(cx: &mut Context<'_>) -> Waker {
        let mut inner = LoopSleep::until(Instant::now() + Duration::from_secs(10));
        assert!(Pin::new(&mut inner).poll(cx).is_pending());
        Waker::from(std::sync::Arc::new(HoldsSleep { _sleep: inner }))
    }

    #[test]
    fn a_waker_dropped_by_the_registry_may_drop_sleeps() {
        let event_loop = EventLoop::new().expect("a loop");
        event_loop
            .run_until_complete(async {
                let mut cx = Context::from_waker(Waker::noop());
                // Dropping the sleep drops its waker, which drops the sleep it holds.
                let mut outer = LoopSleep::until(Instant::now() + Duration::from_secs(10));
                let holder = waker_holding_armed(&mut cx);
                assert!(Pin::new(&mut outer).poll(&mut Context::from_waker(&holder)).is_pending());
                drop(holder);
                assert_eq!(held().0, 2);
                drop(outer);
                assert_eq!(held().0, 0);
                // Polling with another waker replaces (drops) the one that holds a sleep.
                let mut outer = LoopSleep::until(Instant::now() + Duration::from_secs(10));
                let holder = waker_holding_armed(&mut cx);
                assert!(Pin::new(&mut outer).poll(&mut Context::from_waker(&holder)).is_pending());
                drop(holder);
                assert!(Pin::new(&mut outer).poll(&mut cx).is_pending());
                assert_eq!(held().0, 1);
            })
            .expect("run");
        event_loop.close().expect("close");
    }

    /// Arms `sleep` on a loop of this thread, with a no-op waker.
    fn arm_here(sleep: &mut LoopSleep) {
        let event_loop = EventLoop::new().expect("a loop");
        event_loop
            .run_until_complete(async {
                let mut cx = Context::from_waker(Waker::noop());
                assert!(Pin::new(sleep).poll(&mut cx).is_pending());
            })
            .expect("run");
        event_loop.close().expect("close");
    }

    #[test]
    fn a_sleep_moved_to_another_thread_arms_there_and_leaves_its_first_entry() {
        // Armed here, polled to its end on another thread: armed again there.
        // Long enough to arm it first, also under valgrind.
        let mut sleep = LoopSleep::until(Instant::now() + Duration::from_millis(500));
        arm_here(&mut sleep);
        assert_eq!(held().0, 1);
        let rang_there = std::thread::spawn(move || {
            let event_loop = EventLoop::new().expect("a loop");
            let armed_there = event_loop
                .run_until_complete(async move {
                    let mut cx = Context::from_waker(Waker::noop());
                    let pending = Pin::new(&mut sleep).poll(&mut cx).is_pending();
                    let armed_there = held().0;
                    sleep.await;
                    (pending, armed_there, held().0)
                })
                .expect("run");
            event_loop.close().expect("close");
            armed_there
        })
        .join()
        .expect("the other thread");
        assert_eq!(rang_there, (true, 1, 0), "pending, armed there, then rung there");
        assert_eq!(held().0, 1, "the first entry is left to ring here");

        // Armed here, dropped on another thread: this registry is not touched from there.
        let mut sleep = LoopSleep::until(Instant::now() + Duration::from_secs(10));
        arm_here(&mut sleep); // (that loop rang the first entry, due by then)
        let armed_here = held().0;
        assert!(armed_here >= 1);
        let there = std::thread::spawn(move || {
            // A sleep of that thread with the moved one's key and generation, which a drop
            // that did not tell the registries apart would disarm.
            let event_loop = EventLoop::new().expect("a loop");
            let left = event_loop
                .run_until_complete(async move {
                    let mut cx = Context::from_waker(Waker::noop());
                    let moved = sleep.armed.expect("armed");
                    let arm = |cx: &mut Context<'_>| {
                        let mut own = LoopSleep::until(sleep.deadline);
                        assert!(Pin::new(&mut own).poll(cx).is_pending());
                        own
                    };
                    // Keys 0, 1, ... are taken in turn; the moved one's key is re-armed until
                    // its generation comes.
                    let mut own: Vec<_> = (0..moved.key).map(|_| arm(&mut cx)).collect();
                    loop {
                        let last = arm(&mut cx);
                        let armed = last.armed.expect("armed");
                        assert_eq!(armed.key, moved.key);
                        assert!(armed.generation <= moved.generation);
                        if armed.generation == moved.generation {
                            own.push(last);
                            break;
                        }
                    }
                    drop(sleep);
                    (own.len(), held().0)
                })
                .expect("run");
            event_loop.close().expect("close");
            left
        });
        let (own, armed_there) = there.join().expect("the other thread");
        assert_eq!(armed_there, own, "that thread's own sleeps stay armed");
        assert_eq!(held().0, armed_here);
    }
}
