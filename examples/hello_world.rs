//! Hello World with `call_soon()`: the first example of the asyncio event loop documentation,
//! ported. A callback scheduled with [`EventLoop::call_soon`] prints `Hello World` and stops
//! the loop; the loop is closed afterwards.
//!
//! Run it with `cargo run --example hello_world` (add `RINGLOOP_BACKEND=epoll` and
//! `--features fallback` to run it on the epoll backend).
//!
//! [`EventLoop::call_soon`]: ringloop::EventLoop::call_soon

use std::cell::RefCell;
use std::io::{self, Write};
use std::process::ExitCode;
use std::rc::Rc;

use ringloop::EventLoop;

mod support;

/// A callback to print "Hello World" and stop the event loop. A failed write to stdout is kept
/// in `error` (callbacks cannot return errors).
fn hello_world(event_loop: &EventLoop, error: &RefCell<Option<io::Error>>) {
    if let Err(err) = writeln!(io::stdout(), "Hello World") {
        *error.borrow_mut() = Some(err);
    }
    event_loop.stop();
}

fn run(event_loop: &EventLoop) -> Result<(), String> {
    let error = Rc::new(RefCell::new(None));
    // Schedule a call to hello_world().
    let (lp, err) = (event_loop.clone(), error.clone());
    event_loop.call_soon(move || hello_world(&lp, &err)).map_err(|e| format!("call_soon: {e}"))?;
    // Blocking call interrupted by stop().
    event_loop.run_forever().map_err(|e| format!("run_forever: {e}"))?;
    let failed = error.borrow_mut().take();
    failed.map_or(Ok(()), |e| Err(format!("writing to stdout: {e}")))
}

fn main() -> ExitCode {
    support::run_example("hello_world", EventLoop::new, run)
}
