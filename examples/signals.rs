//! Set signal handlers for SIGINT and SIGTERM: the asyncio documentation's example, ported.
//!
//! The loop runs for an hour; SIGINT (Ctrl+C) or SIGTERM makes a handler print
//! `got signal SIGINT: exit` (or `SIGTERM`) and stop the loop, and the program exits with
//! status 0. Closing the loop removes both handlers.
//!
//! Two differences from the Python program, both deliberate: the handlers are installed before
//! the pid is printed (so a signal sent as soon as the line appears is handled), and the hour
//! is a timer under `run_forever` rather than `asyncio.run(asyncio.sleep(3600))`, whose early
//! `stop()` ends the Python program with "Event loop stopped before Future completed."
//!
//! Run it with `cargo run --example signals`, then press Ctrl+C or `kill -TERM <pid>`
//! (`--backend uring|epoll` picks a backend; epoll needs `--features fallback`).

use std::process::ExitCode;

use ringloop::{EventLoop, Signal};

mod support;

const USAGE: &str = "usage: signals [--backend uring|epoll]";

/// The handler: says which signal came and stops the loop.
fn ask_exit(signal: Signal, event_loop: &EventLoop) {
    println!("got signal {signal}: exit");
    event_loop.stop();
}

fn run(event_loop: &EventLoop) -> Result<(), String> {
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        let lp = event_loop.clone();
        event_loop
            .add_signal_handler(signal, move || ask_exit(signal, &lp))
            .map_err(|e| format!("add_signal_handler({signal}): {e}"))?;
    }
    let stopper = event_loop.clone();
    event_loop
        .call_later(3600.0, move || stopper.stop())
        .map_err(|e| format!("call_later: {e}"))?;

    println!("Event loop running for 1 hour, press Ctrl+C to interrupt.");
    println!("pid {}: send SIGINT or SIGTERM to exit.", std::process::id());
    event_loop.run_forever().map_err(|e| format!("run_forever: {e}"))
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let backend = match (args.next().as_deref(), args.next(), args.next()) {
        (None, _, _) => None,
        (Some("--backend"), Some(name), None) => match support::parse_backend(&name) {
            Ok(backend) => Some(backend),
            Err(err) => {
                eprintln!("signals: {err}");
                return ExitCode::FAILURE;
            }
        },
        _ => {
            eprintln!("signals: {USAGE}");
            return ExitCode::FAILURE;
        }
    };
    support::run_example("signals", || support::open_loop(backend), run)
}
