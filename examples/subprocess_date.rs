//! Get the current date from a child process: the asyncio documentation's subprocess example
//! ("Using subprocesses"), ported. A child prints the date; its output is read through a pipe
//! by the loop, one line, and the program waits for the child's exit, then prints
//! `Current date: YYYY-MM-DD HH:MM:SS.ffffff`.
//!
//! Python's example runs `sys.executable -c 'import datetime; print(datetime.datetime.now())'`;
//! this runs `date` with the format that prints the same text (local time, microseconds), so
//! no Python is needed.
//!
//! Run it with `cargo run --example subprocess_date` (add `RINGLOOP_BACKEND=epoll` and
//! `--features fallback` to run it on the epoll backend).

use std::process::ExitCode;

use ringloop::subprocess::{create_subprocess_exec, ProcessOptions, Stdio};
use ringloop::EventLoop;

mod support;

/// `datetime.datetime.now()` as Python prints it.
const DATE_FORMAT: &str = "+%Y-%m-%d %H:%M:%S.%6N";

async fn get_date() -> Result<String, String> {
    // Create the subprocess; redirect the standard output into a pipe.
    let options = ProcessOptions::new().stdin(Stdio::DevNull).stderr(Stdio::Inherit);
    let process = create_subprocess_exec("date", [DATE_FORMAT], options)
        .await
        .map_err(|e| format!("create_subprocess_exec: {e}"))?;

    // Read one line of output.
    let stdout = process.stdout.as_ref().ok_or("stdout is not a pipe")?;
    let data = stdout.readline().await.map_err(|e| format!("reading the child's output: {e}"))?;
    let line = String::from_utf8_lossy(&data).trim_end().to_owned();

    // Wait for the subprocess exit.
    match process.wait().await {
        0 => Ok(line),
        code => Err(format!("date exited with returncode {code}")),
    }
}

fn run(event_loop: &EventLoop) -> Result<(), String> {
    let date = support::run_until_complete(event_loop, get_date())??;
    println!("Current date: {date}");
    Ok(())
}

fn main() -> ExitCode {
    support::run_example("subprocess_date", EventLoop::new, run)
}
