//! Display the current date with `call_later()`: the asyncio documentation's example, ported.
//! A callback prints the local date and time, then reschedules itself with
//! [`EventLoop::call_later`] every second; after 5 seconds it stops the loop instead.
//!
//! Each line is what Python's `print(datetime.datetime.now())` prints:
//! `YYYY-MM-DD HH:MM:SS.ffffff` in local time (like Python, the `.ffffff` part is left out when
//! the microseconds are exactly zero). Local time comes from `clock_gettime(CLOCK_REALTIME)` and
//! `localtime_r`, so the `TZ` environment variable applies.
//!
//! Run it with `cargo run --example display_date` (add `RINGLOOP_BACKEND=epoll` and
//! `--features fallback` to run it on the epoll backend).
//!
//! [`EventLoop::call_later`]: ringloop::EventLoop::call_later

use std::cell::RefCell;
use std::io::{self, Write};
use std::process::ExitCode;
use std::rc::Rc;

use ringloop::EventLoop;

mod support;

/// The first error met inside a callback (callbacks cannot return one).
type ErrorSlot = Rc<RefCell<Option<String>>>;

/// `datetime.datetime.now()` as Python's `str()` prints it.
fn now_local() -> io::Result<String> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: all-zero bytes are a valid `tm` (integers and a null `tm_zone` pointer).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r writes only into `tm` and is
    // the thread-safe variant.
    if unsafe { libc::localtime_r(&ts.tv_sec, &mut tm) }.is_null() {
        return Err(io::Error::last_os_error());
    }
    // Python's datetime.now() truncates the nanoseconds to microseconds.
    let micros = ts.tv_nsec / 1000;
    let mut text = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    );
    if micros != 0 {
        text.push_str(&format!(".{micros:06}"));
    }
    Ok(text)
}

/// Prints the date; reschedules itself one second later until `end_time`, then stops the loop.
fn display_date(end_time: f64, event_loop: EventLoop, error: ErrorSlot) {
    let outcome = now_local().map_err(|e| format!("reading the local time: {e}")).and_then(|now| {
        writeln!(io::stdout(), "{now}").map_err(|e| format!("writing to stdout: {e}"))?;
        if event_loop.time() + 1.0 < end_time {
            let (lp, err) = (event_loop.clone(), error.clone());
            event_loop
                .call_later(1.0, move || display_date(end_time, lp, err))
                .map(|_| ())
                .map_err(|e| format!("call_later: {e}"))
        } else {
            event_loop.stop();
            Ok(())
        }
    });
    if let Err(message) = outcome {
        error.borrow_mut().get_or_insert(message);
        event_loop.stop();
    }
}

fn run(event_loop: &EventLoop) -> Result<(), String> {
    let error: ErrorSlot = Rc::new(RefCell::new(None));
    // Schedule the first call to display_date().
    let end_time = event_loop.time() + 5.0;
    let (lp, err) = (event_loop.clone(), error.clone());
    event_loop
        .call_soon(move || display_date(end_time, lp, err))
        .map_err(|e| format!("call_soon: {e}"))?;
    // Blocking call interrupted by stop().
    event_loop.run_forever().map_err(|e| format!("run_forever: {e}"))?;
    let failed = error.borrow_mut().take();
    failed.map_or(Ok(()), Err)
}

fn main() -> ExitCode {
    support::run_example("display_date", EventLoop::new, run)
}
