//! Helpers shared by the crate's unit tests.

use std::fmt::Display;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::{Backend, EventLoop};

/// Reports that io_uring is missing for `test`: a printed SKIPPED line, or a failure under
/// `RINGLOOP_REQUIRE_URING=1` (CI sets it where io_uring is expected).
pub(crate) fn uring_missing(test: &str, why: &dyn Display) {
    let required = std::env::var_os("RINGLOOP_REQUIRE_URING").is_some_and(|v| v == "1");
    assert!(!required, "{test}: io_uring required (RINGLOOP_REQUIRE_URING=1) but: {why}");
    // Past the harness's capture: a skip must be seen.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test} on {}: {why}", Backend::Uring);
}

/// A loop on each backend this build has: io_uring (skipped through [`uring_missing`] when
/// the kernel lacks it), plus epoll with `fallback`.
pub(crate) fn loops(test: &str) -> Vec<EventLoop> {
    let mut loops = Vec::new();
    match EventLoop::with_backend(Backend::Uring) {
        Ok(event_loop) => loops.push(event_loop),
        Err(err) => uring_missing(test, &err),
    }
    if cfg!(feature = "fallback") {
        loops.push(EventLoop::with_backend(Backend::Epoll).expect("an epoll loop"));
    }
    loops
}

/// A non-blocking, close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a live array of two ints, as pipe2 requires.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just created and nothing else owns them.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}
