//! Helpers shared by the crate's unit tests.

use std::fmt::Display;
use std::io::Write;
use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;
use nix::unistd::pipe2;

use crate::{Backend, EventLoop};

/// Reports that io_uring is missing for `test`: a printed SKIPPED line, or a failure under
/// `RINGLOOP_REQUIRE_URING=1` (CI sets it where io_uring is expected).
pub(crate) fn uring_missing(test: &str, why: &dyn Display) {
    let required = std::env::var_os("RINGLOOP_REQUIRE_URING").is_some_and(|v| v == "1");
    assert!(!required, "{test}: io_uring required (RINGLOOP_REQUIRE_URING=1) but: {why}");
    // Past the harness's capture: a skip must be seen.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// A loop on each backend this build has: io_uring (skipped through [`uring_missing`] when
/// the kernel lacks it), plus epoll with `fallback`.
pub(crate) fn loops(test: &str) -> Vec<EventLoop> {
    let mut loops = Vec::new();
    match EventLoop::with_backend(Backend::Uring) {
        Ok(event_loop) => loops.push(event_loop),
        Err(err) => uring_missing(&format!("{test} on uring"), &err),
    }
    if cfg!(feature = "fallback") {
        loops.push(EventLoop::with_backend(Backend::Epoll).expect("an epoll loop"));
    }
    loops
}

/// A non-blocking, close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> (OwnedFd, OwnedFd) {
    pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).unwrap_or_else(|errno| panic!("pipe2: {errno}"))
}
