//! Without a `log` backend, what the default exception handler reports (a panicking callback,
//! a failing streams handler, a protocol's fatal error), the loop's own warnings (an executor
//! that did not join in time) and the "io_uring is unavailable" notice go to stderr, as Python
//! logging's last-resort handler does. Checked on a child process (`src/bin/no_logger.rs`),
//! since this test binary's harness sets up a logger.

use std::process::{Command, Output};

use uring_tests::backend_tests;

/// Runs the `no_logger` program with `args` and `envs`; fails unless it ran to the end.
fn run_child(args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_no_logger"));
    command.args(args).env_remove("RINGLOOP_BACKEND").env_remove("RUST_LOG");
    let Output { status, stdout, stderr } =
        command.envs(envs.iter().copied()).output().expect("running no_logger");
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    assert!(status.success(), "no_logger {args:?}: {status}; stderr:\n{stderr}");
    assert_eq!(String::from_utf8_lossy(&stdout), "done\n", "stderr:\n{stderr}");
    stderr
}

/// Asserts that `stderr` has a line `starts` and, somewhere, `also`.
fn assert_reported(stderr: &str, starts: &str, also: &str) {
    assert!(stderr.lines().any(|l| l.starts_with(starts)), "no {starts:?} in:\n{stderr}");
    assert!(stderr.contains(also), "no {also:?} in:\n{stderr}");
}

backend_tests! {
    fn default_handler_writes_to_stderr_without_a_logger(lp) {
        let stderr = run_child(&[lp.backend().name()], &[]);
        assert_reported(&stderr, "ringloop: error: Exception in callback", "error: panicked: boom in a callback");
        assert_reported(
            &stderr,
            "ringloop: error: Unhandled exception in client_connected_cb",
            "error: boom in the handler",
        );
        assert_reported(
            &stderr,
            "ringloop: error: Fatal error: protocol.data_received() call failed.",
            "error: panicked: boom in data_received",
        );
        assert_reported(
            &stderr,
            "ringloop: warn: The executor did not finish joining its threads",
            "within 10ms",
        );
    }
}

/// The notice that the loop runs on epoll because the kernel lacks part of io_uring
/// (`RINGLOOP_DISABLE` makes it look so) is on stderr too.
#[cfg(feature = "fallback")]
#[test]
fn epoll_notice_goes_to_stderr_without_a_logger() {
    let stderr = run_child(&["auto"], &[("RINGLOOP_DISABLE", "multishot_recv")]);
    assert_reported(&stderr, "ringloop: warn: io_uring is unavailable", "ringloop runs on epoll");
}
