//! Helpers shared by the crate's unit tests.

use std::io::Write;

use crate::{Backend, EventLoop};

/// A loop on each backend the kernel (and this build) has; a missing one is skipped with a
/// printed line naming `test`.
pub(crate) fn loops(test: &str) -> Vec<EventLoop> {
    let mut loops = Vec::new();
    for backend in [Backend::Uring, Backend::Epoll] {
        match EventLoop::with_backend(backend) {
            Ok(event_loop) => loops.push(event_loop),
            Err(err) => {
                let _ = writeln!(std::io::stderr(), "SKIPPED {test} on {backend}: {err}");
            }
        }
    }
    loops
}
