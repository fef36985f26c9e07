//! The servers, one per (workload, implementation); the runner starts each in a child process
//! of its own (`ringloop-bench serve --workload echo|http|sendfile --impl NAME --port 0`).
//!
//! A server binds `127.0.0.1:PORT`, prints `listening on PORT` on stdout, and serves until its
//! stdin closes (the runner holds the other end) or it gets SIGTERM: the echo servers write
//! back every byte they read, the HTTP servers answer every request with
//! [`crate::http::RESPONSE`] (hyper's with its own head and the same body), the TLS servers
//! echo over TLS with the config of [`crate::tls::material`], the sendfile servers send the
//! file named by `--file` to every connection and close it ([`sendfile`]).

mod http_hyper;
mod raw_epoll;
mod raw_uring;
pub mod raw_uring_max;
pub mod ringloop_protocol;
mod ringloop_streams;
pub mod sendfile;
mod tokio_server;
mod tokio_tls;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::path::Path;

use ringloop::Backend;

use crate::http::Responder;
pub use raw_uring_max::Techniques;

/// What a connection of a chunk-at-a-time server (ringloop protocols, tokio) answers to
/// each chunk received: the echo gives the chunk back, the HTTP [`Responder`] a response per
/// complete request.
pub trait Reply: Default + fmt::Debug + 'static {
    /// The bytes to write back for `data` (empty: nothing yet); an error hangs up.
    fn reply<'a>(&'a mut self, data: &'a [u8]) -> Result<&'a [u8], String>;
}

/// The echo's [`Reply`]: every chunk, as it came.
#[derive(Debug, Default)]
pub struct Echo;

impl Reply for Echo {
    fn reply<'a>(&'a mut self, data: &'a [u8]) -> Result<&'a [u8], String> {
        Ok(data)
    }
}

impl Reply for Responder {
    fn reply<'a>(&'a mut self, data: &'a [u8]) -> Result<&'a [u8], String> {
        self.feed(data)
    }
}

/// What the servers serve and the load generator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Echo every byte.
    Echo,
    /// Keep-alive HTTP/1.1 hello-world.
    Http,
    /// Echo over TLS 1.3.
    Tls,
    /// A whole file to every connection (`-- sendfile`).
    Sendfile,
}

impl Workload {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Echo => "echo",
            Workload::Http => "http",
            Workload::Tls => "tls",
            Workload::Sendfile => "sendfile",
        }
    }

    /// Parses a name as [`Workload::name`] prints it.
    pub fn parse(name: &str) -> Result<Workload, String> {
        [Workload::Echo, Workload::Http, Workload::Tls, Workload::Sendfile]
            .into_iter()
            .find(|w| w.name() == name)
            .ok_or_else(|| format!("unknown workload {name:?} (echo, http, tls or sendfile)"))
    }

    /// The servers run by default, in the order the runner interleaves them.
    pub fn impls(self) -> Vec<Impl> {
        match self {
            Workload::Echo => vec![
                Impl::RingloopUring,
                Impl::RingloopEpoll,
                Impl::Tokio,
                Impl::RawUring,
                Impl::RawUringMax(Techniques::MAX),
                Impl::RawEpoll,
            ],
            Workload::Http => [&RINGLOOP_SERVERS[..], &[Impl::Tokio, Impl::TokioHyper]].concat(),
            Workload::Tls => vec![Impl::RingloopUring, Impl::RingloopEpoll, Impl::Tokio],
            Workload::Sendfile => vec![
                Impl::RingloopUring,
                Impl::RingloopEpoll,
                Impl::RingloopCopy,
                Impl::RawSendfile,
                Impl::RawSplice,
            ],
        }
    }

    /// Whether this workload has a server for `which`.
    pub fn serves(self, which: Impl) -> bool {
        match which {
            Impl::RawUringMax(_) => self == Workload::Echo,
            Impl::Alt(_) => which.alt_base().is_some_and(|base| self.serves(base)),
            _ => self.impls().contains(&which),
        }
    }

    /// The servers the report divides each row by: tokio (the reference) and, for echo, the
    /// strongest raw io_uring loop (the limit) and the raw epoll loop (the epoll backend's
    /// baseline); for sendfile, the raw `sendfile(2)` loop.
    pub fn baselines(self) -> &'static [Impl] {
        match self {
            Workload::Echo => &[Impl::Tokio, Impl::RawUringMax(Techniques::MAX), Impl::RawEpoll],
            Workload::Http => &[Impl::Tokio, Impl::TokioHyper],
            Workload::Tls => &[Impl::Tokio],
            Workload::Sendfile => &[Impl::RawSendfile],
        }
    }
}

/// A server implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// ringloop protocols on its io_uring backend.
    RingloopUring,
    /// ringloop protocols on its epoll backend.
    RingloopEpoll,
    /// ringloop streams (`start_server`, `StreamReader`/`StreamWriter`) on io_uring.
    StreamsUring,
    /// ringloop streams on epoll.
    StreamsEpoll,
    /// hyper on ringloop (`ringloop::hyper::serve_http1`), io_uring.
    HyperUring,
    /// hyper on ringloop, epoll.
    HyperEpoll,
    /// hyper on tokio's current_thread runtime: the hyper servers' reference.
    TokioHyper,
    /// tokio's current_thread runtime: the reference.
    Tokio,
    /// io_uring with no runtime, one op per connection at a time: the simple loop.
    RawUring,
    /// io_uring with no runtime and every technique that helped: the limit
    /// (`raw-uring-max`), or it without some of them, to measure what each buys.
    RawUringMax(Techniques),
    /// epoll with no runtime, level-triggered, a `recv` and a `send` per request: the
    /// baseline of ringloop's epoll backend.
    RawEpoll,
    /// sendfile: ringloop's chunked fallback (read into a buffer, then write), on io_uring.
    RingloopCopy,
    /// sendfile: a `poll(2)` loop calling `sendfile(2)`, no runtime: the baseline.
    RawSendfile,
    /// sendfile: a `poll(2)` loop splicing file → pipe → socket with `splice(2)`, no runtime.
    RawSplice,
    /// A ringloop server as another build of this runner serves it (`--alt-exe`), named
    /// `NAME@alt`: two builds side by side in the same rounds, each round's ratio paired. The
    /// index of its server in [`RINGLOOP_SERVERS`].
    Alt(u8),
}

/// ringloop's servers: the HTTP runs' first six, and those another build can run as
/// `NAME@alt`.
const RINGLOOP_SERVERS: [Impl; 6] = [
    Impl::RingloopUring,
    Impl::RingloopEpoll,
    Impl::StreamsUring,
    Impl::StreamsEpoll,
    Impl::HyperUring,
    Impl::HyperEpoll,
];

impl fmt::Display for Impl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Impl::RingloopUring => f.write_str("ringloop-uring"),
            Impl::RingloopEpoll => f.write_str("ringloop-epoll"),
            Impl::StreamsUring => f.write_str("ringloop-streams-uring"),
            Impl::StreamsEpoll => f.write_str("ringloop-streams-epoll"),
            Impl::HyperUring => f.write_str("ringloop-hyper-uring"),
            Impl::HyperEpoll => f.write_str("ringloop-hyper-epoll"),
            Impl::TokioHyper => f.write_str("tokio-hyper"),
            Impl::Tokio => f.write_str("tokio"),
            Impl::RawUring => f.write_str("raw-uring"),
            Impl::RawUringMax(techniques) => f.write_str(&techniques.name()),
            Impl::RawEpoll => f.write_str("raw-epoll"),
            Impl::RingloopCopy => f.write_str("ringloop-copy"),
            Impl::RawSendfile => f.write_str("raw-sendfile"),
            Impl::RawSplice => f.write_str("raw-splice"),
            Impl::Alt(_) => write!(f, "{}@alt", self.alt_base().ok_or(fmt::Error)?),
        }
    }
}

impl Impl {
    /// The server an `@alt` one runs in the other build; `None` for any other.
    pub fn alt_base(self) -> Option<Impl> {
        match self {
            Impl::Alt(index) => RINGLOOP_SERVERS.get(usize::from(index)).copied(),
            _ => None,
        }
    }

    /// Parses a name as `Display` prints it, for a server of `workload`.
    pub fn parse(name: &str, workload: Workload) -> Result<Impl, String> {
        if let Some(base) = name.strip_suffix("@alt") {
            let base = Impl::parse(base, workload)?;
            let index = RINGLOOP_SERVERS.iter().position(|&b| b == base);
            let alt = index.map(|i| Impl::Alt(i as u8));
            return alt.ok_or_else(|| format!("{base}@alt: only ringloop servers"));
        }
        let found = workload.impls().into_iter().find(|i| i.to_string() == name);
        let found = found.or_else(|| Techniques::parse(name).map(Impl::RawUringMax));
        match found {
            Some(which) if workload.serves(which) => Ok(which),
            _ => {
                let names: Vec<_> = workload.impls().iter().map(Impl::to_string).collect();
                let more =
                    if workload == Workload::Echo { ", raw-uring-max-no-TECHNIQUE" } else { "" };
                Err(format!(
                    "no {} server {name:?} (one of: {}{more})",
                    workload.name(),
                    names.join(", ")
                ))
            }
        }
    }
}

/// Runs one server until stdin closes; `cpu` pins it first. A sendfile server needs `file`.
pub fn serve(
    workload: Workload,
    which: Impl,
    port: u16,
    cpu: Option<usize>,
    file: Option<&Path>,
) -> Result<(), String> {
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
    match (workload, file) {
        (Workload::Sendfile, Some(file)) => sendfile::serve(which, listener, file, announce),
        (Workload::Sendfile, None) => Err("a sendfile server needs --file".into()),
        _ => run(workload, which, listener, announce),
    }
}

/// Serves `workload` with `which` on `listener` for ever; `announce` once it is ready.
fn run(
    workload: Workload,
    which: Impl,
    listener: TcpListener,
    announce: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let (uring, epoll) = (Backend::Uring, Backend::Epoll);
    let result = match (workload, which) {
        (Workload::Echo, Impl::RingloopUring) => {
            ringloop_protocol::serve::<Echo>(listener, uring, announce)
        }
        (Workload::Echo, Impl::RingloopEpoll) => {
            ringloop_protocol::serve::<Echo>(listener, epoll, announce)
        }
        (Workload::Echo, Impl::Tokio) => tokio_server::serve::<Echo>(listener, announce),
        (Workload::Echo, Impl::RawUring) => raw_uring::serve(listener, announce),
        (Workload::Echo, Impl::RawUringMax(t)) => raw_uring_max::serve(listener, t, announce),
        (Workload::Echo, Impl::RawEpoll) => raw_epoll::serve(listener, announce),
        (Workload::Http, Impl::RingloopUring) => {
            ringloop_protocol::serve::<Responder>(listener, uring, announce)
        }
        (Workload::Http, Impl::RingloopEpoll) => {
            ringloop_protocol::serve::<Responder>(listener, epoll, announce)
        }
        (Workload::Http, Impl::StreamsUring) => ringloop_streams::serve(listener, uring, announce),
        (Workload::Http, Impl::StreamsEpoll) => ringloop_streams::serve(listener, epoll, announce),
        (Workload::Http, Impl::Tokio) => tokio_server::serve::<Responder>(listener, announce),
        (Workload::Http, Impl::HyperUring) => http_hyper::serve_ringloop(listener, uring, announce),
        (Workload::Http, Impl::HyperEpoll) => http_hyper::serve_ringloop(listener, epoll, announce),
        (Workload::Http, Impl::TokioHyper) => http_hyper::serve_tokio(listener, announce),
        (Workload::Tls, Impl::RingloopUring) => {
            ringloop_protocol::serve_tls(listener, uring, announce)
        }
        (Workload::Tls, Impl::RingloopEpoll) => {
            ringloop_protocol::serve_tls(listener, epoll, announce)
        }
        (Workload::Tls, Impl::Tokio) => tokio_tls::serve(listener, announce),
        _ => Err(format!("no {} server {which}", workload.name())),
    };
    result.map_err(|e| format!("{} {which} server: {e}", workload.name()))
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

#[cfg(test)]
mod tests;
