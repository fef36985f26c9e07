//! Shared by the examples: running one on a loop with clear errors, the echo examples' command
//! line ([`flags`]), printing ([`output`]), Python's `repr()` for their output ([`repr`]), the
//! servers' echo protocol ([`echo`]) and their serve-until tail ([`serve`]). (Not an example itself: no `main.rs`.)
// Each example uses part of this module.
#![allow(dead_code, unused_imports)]

pub mod echo;
pub mod flags;
pub mod output;
pub mod repr;
pub mod serve;
pub mod tls;

use std::future::Future;
use std::process::ExitCode;

use ringloop::{Backend, EventLoop};

pub use flags::{parse_backend, Args, Flag, Spec};
pub use output::{print, stdout_error, ErrorSlot};
pub use repr::{py_repr, py_sockaddr};

/// Creates a loop with `open`, runs `body` on it, closes it (asyncio's
/// `try: ... finally: loop.close()`), and turns any error into a message on stderr prefixed
/// with `name`, and exit status 1. Never panics on an error.
pub fn run_example(
    name: &str,
    open: impl FnOnce() -> ringloop::Result<EventLoop>,
    body: impl FnOnce(&EventLoop) -> Result<(), String>,
) -> ExitCode {
    let event_loop = match open() {
        Ok(event_loop) => event_loop,
        Err(err) => {
            eprintln!("{name}: cannot create the event loop: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = body(&event_loop);
    let closed = event_loop.close().map_err(|e| format!("close: {e}"));
    match result.and(closed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{name}: {err}");
            ExitCode::FAILURE
        }
    }
}

/// A loop on `backend`, or the best one (`RINGLOOP_BACKEND` honoured) when `None`.
pub fn open_loop(backend: Option<Backend>) -> ringloop::Result<EventLoop> {
    match backend {
        Some(backend) => EventLoop::with_backend(backend),
        None => EventLoop::new(),
    }
}

/// An echo example's `main`: parses the command line as `spec` says, then [`run_example`]s
/// `body` on a loop of the chosen backend. A bad command line is reported like any error.
pub fn run_with_args(
    spec: &Spec,
    body: impl FnOnce(&EventLoop, Args) -> Result<(), String>,
) -> ExitCode {
    let args = match spec.parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("{}: {err}", spec.name);
            return ExitCode::FAILURE;
        }
    };
    let backend = args.backend;
    run_example(spec.name, || open_loop(backend), |event_loop| body(event_loop, args))
}

/// [`run_with_args`] for a `main` that is one coroutine: asyncio's
/// `asyncio.run(main(args))`.
pub fn run_async<F>(spec: &Spec, main: impl FnOnce(EventLoop, Args) -> F) -> ExitCode
where
    F: Future<Output = Result<(), String>> + 'static,
{
    run_with_args(spec, |event_loop, args| {
        run_until_complete(event_loop, main(event_loop.clone(), args))?
    })
}

/// `event_loop.run_until_complete(future)`, its error as a message.
pub fn run_until_complete<T: 'static>(
    event_loop: &EventLoop,
    future: impl Future<Output = T> + 'static,
) -> Result<T, String> {
    event_loop.run_until_complete(future).map_err(|e| format!("run_until_complete: {e}"))
}

/// What an echo client's protocol shares with its program: the [`ErrorSlot`] its callbacks
/// print through (keeping the first failure), and the asyncio examples' `on_con_lost` future,
/// which `connection_lost` sets and the program awaits. Clones share both.
#[derive(Clone)]
pub struct Session {
    /// Where the callbacks print and keep their first failure.
    error: ErrorSlot,
    /// Set by [`lost`](Self::lost).
    on_con_lost: ringloop::Future<()>,
}

impl Session {
    /// A session whose `on_con_lost` is pending on `event_loop`.
    pub fn new(event_loop: &EventLoop) -> Session {
        Session { error: ErrorSlot::default(), on_con_lost: event_loop.create_future() }
    }

    /// [`ErrorSlot::print`].
    pub fn print(&self, line: impl std::fmt::Display) -> bool {
        self.error.print(line)
    }

    /// [`ErrorSlot::keep`].
    pub fn keep(&self, message: String) {
        self.error.keep(message);
    }

    /// `connection_lost`'s part: prints `line`, then sets `on_con_lost`.
    pub fn lost(&self, line: &str) {
        self.error.print(line);
        // Only fails if already done, which connection_lost (called once) rules out.
        let _ = self.on_con_lost.set_result(());
    }

    /// The program's `try: await on_con_lost finally: transport.close()`, then the first
    /// error a callback kept.
    pub async fn until_lost(self, close: impl FnOnce()) -> Result<(), String> {
        let lost = self.on_con_lost.await;
        close();
        lost.map_err(|e| format!("waiting for on_con_lost: {e}"))?;
        self.error.take()
    }
}
