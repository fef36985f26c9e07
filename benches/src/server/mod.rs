//! The echo servers, one per implementation; the runner starts each in a child process of its
//! own (`ringloop-bench serve --impl NAME --port 0`).
//!
//! A server binds `127.0.0.1:PORT`, prints `listening on PORT` on stdout, and echoes every
//! byte it reads until its stdin closes (the runner holds the other end) or it gets SIGTERM.

mod raw_uring;
mod ringloop_echo;
mod tokio_echo;

use std::io::{self, Read, Write};
use std::net::TcpListener;

/// An echo server implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// ringloop on its io_uring backend.
    RingloopUring,
    /// ringloop on its epoll backend.
    RingloopEpoll,
    /// tokio's current_thread runtime: the reference.
    Tokio,
    /// io_uring with no runtime: the limit.
    RawUring,
}

impl Impl {
    /// Every implementation, in the order the runner interleaves them.
    pub const ALL: [Impl; 4] =
        [Impl::RingloopUring, Impl::RingloopEpoll, Impl::Tokio, Impl::RawUring];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Impl::RingloopUring => "ringloop-uring",
            Impl::RingloopEpoll => "ringloop-epoll",
            Impl::Tokio => "tokio",
            Impl::RawUring => "raw-uring",
        }
    }

    /// Parses a name as [`Impl::name`] prints it.
    pub fn parse(name: &str) -> Result<Impl, String> {
        Impl::ALL.into_iter().find(|i| i.name() == name).ok_or_else(|| {
            let names: Vec<_> = Impl::ALL.iter().map(|i| i.name()).collect();
            format!("unknown implementation {name:?} (one of: {})", names.join(", "))
        })
    }
}

/// Runs one echo server until stdin closes; `cpu` pins it first.
pub fn serve(which: Impl, port: u16, cpu: Option<usize>) -> Result<(), String> {
    if let Some(cpu) = cpu {
        crate::sys::pin_to_cpu(cpu).map_err(|e| e.to_string())?;
    }
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| format!("binding 127.0.0.1:{port}: {e}"))?;
    let port = listener.local_addr().map_err(|e| format!("local_addr: {e}"))?.port();
    exit_when_stdin_closes();
    let announce = move || -> Result<(), String> {
        let mut out = io::stdout().lock();
        writeln!(out, "listening on {port}").and_then(|()| out.flush()).map_err(|e| e.to_string())
    };
    let result = match which {
        Impl::RingloopUring => ringloop_echo::serve(listener, ringloop::Backend::Uring, announce),
        Impl::RingloopEpoll => ringloop_echo::serve(listener, ringloop::Backend::Epoll, announce),
        Impl::Tokio => tokio_echo::serve(listener, announce),
        Impl::RawUring => raw_uring::serve(listener, announce),
    };
    result.map_err(|e| format!("{} server: {e}", which.name()))
}

/// Ends the process once stdin reaches EOF: the runner's end of the pipe closes when it
/// exits, however it exits, so no server outlives it.
fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
}
