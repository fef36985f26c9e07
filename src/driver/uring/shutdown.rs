//! Dropping the driver: cancel every op in flight, wait (bounded) for their final CQEs, and
//! leak whatever memory the kernel may still touch.

use std::time::{Duration, Instant};

use io_uring::{opcode, types::CancelBuilder};
use slab::Slab;

use super::multi::Multi;
use super::op::{self, Route, Slot, CANCEL, CANCEL_ANY, WAKE};
use super::setup::Feature;
use super::UringDriver;

/// How long a dropped driver waits for the kernel to finish with its ops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

impl<T> Drop for UringDriver<T> {
    fn drop(&mut self) {
        let clean = self.shutdown();
        self.release_buffer_ring(clean);
        // Before the ring's fd closes: a registration would keep the instance alive.
        self.ring_fd.unregister();
    }
}

impl<T> UringDriver<T> {
    /// Cancels everything and waits up to [`SHUTDOWN_GRACE`] for the final CQEs; returns
    /// whether they all came (otherwise the memory the kernel may still touch is leaked).
    ///
    /// # Implementation
    /// Closing the ring fd does make the kernel cancel what is left, but asynchronously, in a
    /// kernel worker that may run after `close` returns: an op could still write into its
    /// buffer after Rust freed it. So the driver cancels everything itself and waits for each
    /// final CQE. Whatever is still out after the grace period (an op the kernel cannot
    /// interrupt) has its
    /// memory deliberately leaked with `mem::forget`: a few bytes lost beat a kernel write
    /// into freed memory. Owners are dropped at once either way; the kernel sees none of
    /// their memory.
    pub(super) fn shutdown(&mut self) -> bool {
        if !self.holds_kernel_memory() {
            return true;
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        self.wake.retire();
        for (_, slot) in self.slots.iter_mut() {
            drop(slot.cancel());
        }
        // A parked op (see `multi.rs`) has nothing in the kernel: no CQE will free it.
        self.slots.retain(|_, slot| slot.route != Route::Parked);
        let mut any_sent = self.cancel_all();
        let mut retire =
            |slots: &mut Slab<Slot<T>>, _: &mut Multi, key: usize, _res: i32, flags: u32| {
                op::retire(slots, key, flags)
            };
        while self.holds_kernel_memory() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if any_sent && !self.features.contains(Feature::CancelAny) {
                // The kernel answered IORING_ASYNC_CANCEL_ANY with EINVAL: cancel one by one.
                any_sent = self.cancel_all();
            }
            if let Err(e) = self.turn_with(Some(deadline - now), &mut retire) {
                log::warn!("io_uring: waiting for cancelled ops at shutdown failed: {e}");
                break;
            }
        }
        if !self.holds_kernel_memory() {
            return true;
        }
        log::warn!(
            "io_uring: {} op(s){} still in the kernel at shutdown; leaking their memory \
             rather than freeing what the kernel may still write",
            self.slots.len(),
            if self.wake.is_armed() { " and the wakeup read" } else { "" },
        );
        std::mem::forget(std::mem::take(&mut self.slots));
        self.wake.abandon();
        false
    }

    /// Unregisters the provided-buffer rings once no op can use it (`clean`: every final CQE
    /// is in). Otherwise, or if the kernel refuses, its memory is leaked: the kernel may use it
    /// until the buffer group is unregistered or an op using it has ended. `RecvBuf`s still
    /// out keep the memory alive and no longer publish their buffers.
    fn release_buffer_ring(&mut self, clean: bool) {
        let rings = [
            (self.multi.ring.take(), super::multi::BUF_GROUP),
            (self.multi.dgram_ring.take(), super::multi::DGRAM_GROUP),
        ];
        for (ring, group) in rings {
            let Some(ring) = ring else { continue };
            ring.retire();
            if !clean {
                leak(ring);
                continue;
            }
            if let Err(e) = self.ring.submitter().unregister_buf_ring(group) {
                log::debug!("io_uring: unregistering buffer ring {group} failed ({e}); leaked");
                leak(ring);
            }
        }
    }

    /// Whether the kernel may still use memory the driver owns.
    fn holds_kernel_memory(&self) -> bool {
        !self.slots.is_empty() || self.wake.is_armed()
    }

    /// Sends cancels for everything in the kernel: one `IORING_ASYNC_CANCEL_ANY` when the
    /// kernel has it (returns `true`), otherwise one `AsyncCancel` per op (returns `false`).
    fn cancel_all(&mut self) -> bool {
        if self.features.contains(Feature::CancelAny) {
            let sqe = opcode::AsyncCancel2::new(CancelBuilder::any()).build();
            // SAFETY: an `AsyncCancel` SQE points to no memory.
            unsafe { self.push_sqe(sqe.user_data(CANCEL_ANY)) };
            return true;
        }
        let ops = self.slots.iter().map(|(key, _)| op::user_data(key));
        let targets: Vec<u64> = ops.chain(self.wake.is_armed().then_some(WAKE)).collect();
        for target in targets {
            let sqe = opcode::AsyncCancel::new(target).build().user_data(CANCEL);
            // SAFETY: an `AsyncCancel` SQE points to no memory.
            unsafe { self.push_sqe(sqe) };
        }
        false
    }
}

/// Buffer rings the kernel may still use, kept for the life of the process: their addresses
/// (`Rc::into_raw`) stay reachable, so leak checkers do not report them, and they are never
/// freed.
static LEAKED_RINGS: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

fn leak(ring: std::rc::Rc<crate::driver::recv_buf::BufRing>) {
    let address = std::rc::Rc::into_raw(ring) as usize;
    LEAKED_RINGS.lock().unwrap_or_else(|e| e.into_inner()).push(address);
}
