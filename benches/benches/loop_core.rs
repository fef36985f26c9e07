//! Callback and timer throughput of the loop core, each beside a raw baseline measured in the
//! same run: `call_soon` against a `VecDeque<Box<dyn FnOnce()>>` drained in a loop, timers
//! against a `BinaryHeap` of deadlines.
//!
//! Run: `cargo bench -p ringloop-bench --bench loop_core` (`RINGLOOP_BACKEND=epoll` for the
//! epoll backend: this crate builds ringloop with `fallback`; the backend barely matters here:
//! no I/O is involved).

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::rc::Rc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringloop::EventLoop;

const CALLBACKS: u64 = 1_000_000;
const TIMERS: u64 = 100_000;
const CANCELLED: u64 = 1_000_000;

/// Benches `ringloop` (given one loop, kept across iterations) against the baseline `raw`
/// named `raw_name`, in the group `name` of `elements` per iteration.
fn beside_baseline(
    c: &mut Criterion,
    name: &str,
    elements: u64,
    ringloop: impl Fn(&EventLoop),
    (raw_name, raw): (&str, impl Fn()),
) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(elements));
    group.sample_size(10);
    let event_loop = EventLoop::new().expect("event loop");
    group.bench_function("ringloop", |b| b.iter(|| ringloop(&event_loop)));
    group.bench_function(raw_name, |b| b.iter(&raw));
    group.finish();
    event_loop.close().unwrap();
}

/// Runs the loop until the callbacks scheduled so far have run.
fn run_scheduled(event_loop: &EventLoop) {
    let stopper = event_loop.clone();
    event_loop.call_soon(move || stopper.stop()).unwrap();
    event_loop.run_forever().unwrap();
}

fn call_soon(c: &mut Criterion) {
    beside_baseline(
        c,
        "call_soon_1M",
        CALLBACKS,
        call_soon_ringloop,
        ("raw_vecdeque", call_soon_raw),
    );
}

fn call_soon_ringloop(event_loop: &EventLoop) {
    let count = Rc::new(Cell::new(0u64));
    for _ in 0..CALLBACKS {
        let count = count.clone();
        event_loop.call_soon(move || count.set(count.get() + 1)).unwrap();
    }
    run_scheduled(event_loop);
    assert_eq!(count.get(), CALLBACKS);
}

fn call_soon_raw() {
    let count = Rc::new(Cell::new(0u64));
    let mut queue: VecDeque<Box<dyn FnOnce()>> = VecDeque::new();
    for _ in 0..CALLBACKS {
        let count = count.clone();
        queue.push_back(Box::new(move || count.set(count.get() + 1)));
    }
    while let Some(callback) = queue.pop_front() {
        callback();
    }
    assert_eq!(count.get(), CALLBACKS);
}

fn timers_fired(c: &mut Criterion) {
    let raw = ("raw_binaryheap", timers_fired_raw);
    beside_baseline(c, "call_at_100k_fired_in_order", TIMERS, timers_fired_ringloop, raw);
}

fn timers_fired_ringloop(event_loop: &EventLoop) {
    // Deadlines already past, in reverse order of scheduling: the heap must sort them.
    let base = event_loop.time() - 1.0;
    let last = Rc::new(Cell::new(0u64));
    for i in 0..TIMERS {
        let last = last.clone();
        let when = base + (TIMERS - i) as f64 * 1e-6;
        event_loop.call_at(when, move || last.set(i)).unwrap();
    }
    run_scheduled(event_loop);
    assert_eq!(last.get(), 0, "the earliest-scheduled deadline is the latest");
}

fn timers_fired_raw() {
    let last = Rc::new(Cell::new(0u64));
    let mut heap: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let mut callbacks: Vec<Option<Box<dyn FnOnce()>>> = Vec::new();
    for i in 0..TIMERS {
        let last = last.clone();
        heap.push(Reverse(((TIMERS - i) * 1000, i)));
        callbacks.push(Some(Box::new(move || last.set(i))));
    }
    while let Some(Reverse((_, i))) = heap.pop() {
        if let Some(callback) = callbacks[i as usize].take() {
            callback();
        }
    }
    assert_eq!(last.get(), 0);
}

fn timers_cancelled(c: &mut Criterion) {
    let raw = ("raw_binaryheap", timers_cancelled_raw);
    beside_baseline(c, "call_later_1M_cancelled", CANCELLED, timers_cancelled_ringloop, raw);
}

fn timers_cancelled_ringloop(event_loop: &EventLoop) {
    for i in 0..CANCELLED {
        event_loop.call_later(3600.0 + i as f64, || {}).unwrap().cancel();
    }
    run_scheduled(event_loop);
    assert!(event_loop.scheduled_timers().0 < 1000);
}

fn timers_cancelled_raw() {
    // Like for like: a boxed callback per timer, dropped when cancelled, and the heap
    // compacted once at the end.
    let mut heap: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let mut callbacks: Vec<Option<Box<dyn FnOnce()>>> = Vec::new();
    for i in 0..CANCELLED {
        heap.push(Reverse((3600 + i, i)));
        callbacks.push(Some(Box::new(move || {
            std::hint::black_box(i);
        })));
        callbacks[i as usize] = None;
    }
    heap.retain(|Reverse((_, i))| callbacks[*i as usize].is_some());
    assert!(heap.is_empty());
}

criterion_group!(benches, call_soon, timers_fired, timers_cancelled);
criterion_main!(benches);
