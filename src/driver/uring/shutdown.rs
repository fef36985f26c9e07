//! Dropping the driver: detach every owner, cancel everything in the kernel, wait (bounded) for
//! the final CQEs, close the fds that waited for them, and only then drop the owners.

use std::time::{Duration, Instant};

use io_uring::{opcode, types::CancelBuilder};

use super::slot::{user_data, CANCEL_ANY};
use super::{cancel_sqe, UringDriver};
use crate::driver::Op;

/// How long a dropped driver waits for the kernel to finish with its ops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

impl<T: Clone> Drop for UringDriver<T> {
    fn drop(&mut self) {
        let (clean, owners) = self.shutdown();
        drop(owners);
        self.release_buffer_rings(clean);
        // Before the ring's fd closes: a registration would keep the instance alive.
        self.ring_fd.unregister();
    }
}

impl<T: Clone> UringDriver<T> {
    /// Cancels everything and waits up to [`SHUTDOWN_GRACE`] for the final CQEs; returns
    /// whether they all came (otherwise the memory the kernel may still touch is leaked, and
    /// so are the fds whose close waited for those ops) and the owners it detached, for the
    /// caller to drop now that the kernel is done (or to know it may not be). Idempotent.
    ///
    /// # Implementation
    /// Closing the ring fd does make the kernel cancel what is left, but asynchronously, in a
    /// kernel worker that may run after `close` returns: an op could still write into its
    /// buffer after Rust freed it, or act on an fd number that was closed and reused. So the
    /// driver withdraws what the kernel has not seen, cancels the rest itself with one
    /// `IORING_ASYNC_CANCEL_ANY`, and waits for each final CQE; what those CQEs still carry (an
    /// accepted connection, a received buffer) is closed or given back. The owners detached
    /// first are dropped last, once the kernel is done: an owner's drop may close an fd (a
    /// transport's, when the loop is gone), which is safe only then. Whatever is still out
    /// after the grace period (an op the kernel cannot interrupt) has its memory deliberately
    /// leaked with `mem::forget`: a few bytes lost beat a kernel write into freed memory.
    pub(crate) fn shutdown(&mut self) -> (bool, Vec<T>) {
        self.wake.retire();
        let keys: Vec<usize> = self.table.slots.iter().map(|(key, _)| key).collect();
        let owners: Vec<T> =
            keys.into_iter().filter_map(|key| self.table.detach(key)).map(|(o, _)| o).collect();
        self.table.drop_out_of_kernel();
        let clean = self.drain_kernel();
        if !clean {
            log::warn!(
                "io_uring: {} op(s){} still in the kernel at shutdown; leaking their memory \
                 rather than freeing what the kernel may still write",
                self.table.slots.len(),
                if self.wake.is_armed() { " and the wakeup read" } else { "" },
            );
            self.table.leak();
            self.wake.abandon();
            self.leaked = true;
        }
        (!self.leaked, owners)
    }

    /// Sends one `IORING_ASYNC_CANCEL_ANY` (and a cancel per `WAITID`, below) and turns until
    /// every op and the wake read are back, or the grace period is over; true if they are all
    /// back.
    ///
    /// A cancel-any stops at the first `WAITID` it cannot cancel (one a child's exit already
    /// woke, whose reap waits for our next enter): the kernel's cancel loop takes that
    /// `ENOENT` for "nothing left", so the `WAITID`s behind it would wait for their children
    /// past the grace period. A cancel by `user_data` for each one reaches them all.
    fn drain_kernel(&mut self) -> bool {
        if !self.holds_kernel_memory() {
            return true;
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let cancel_any = opcode::AsyncCancel2::new(CancelBuilder::any()).build();
        self.internal.push(cancel_any.user_data(CANCEL_ANY));
        let waits = (self.table.slots.iter())
            .filter(|(_, slot)| matches!(slot.op, Op::WaitId { .. }) && slot.state.in_kernel())
            .map(|(key, _)| cancel_sqe(user_data(key)));
        self.internal.extend(waits.collect::<Vec<_>>());
        let mut out = Vec::new();
        while self.holds_kernel_memory() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if let Err(e) = self.turn(Some(deadline - now), &mut out) {
                log::warn!("io_uring: waiting for cancelled ops at shutdown failed: {e}");
                break;
            }
            debug_assert!(out.is_empty(), "no owner is left to complete");
        }
        !self.holds_kernel_memory()
    }

    /// Unregisters the provided-buffer rings once no op can use them (`clean`: every final
    /// CQE is in). Otherwise, or if the kernel refuses, their memory is leaked: the kernel may
    /// use it until the buffer group is unregistered or an op using it has ended. `RecvBuf`s
    /// still out keep the memory alive and no longer publish their buffers.
    fn release_buffer_rings(&mut self, clean: bool) {
        let rings = [
            (Some(self.rings.stream.clone()), super::persistent::BUF_GROUP),
            (self.rings.dgram.take(), super::persistent::DGRAM_GROUP),
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
        if !clean {
            // The driver's own reference too: the kernel may still write into the ring.
            leak(self.rings.stream.clone());
        }
    }

    /// Whether the kernel may still use memory the driver owns.
    fn holds_kernel_memory(&self) -> bool {
        self.table.any_in_kernel() || self.wake.is_armed()
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
