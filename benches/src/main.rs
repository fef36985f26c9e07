//! `ringloop-bench`: the benchmark runner. `echo` compares echo servers, ringloop (io_uring and
//! epoll) against tokio (the reference) and raw io_uring loops (the limit); `http` compares
//! keep-alive HTTP/1.1 hello-world servers on ringloop (protocols and streams) and tokio;
//! `tls` compares TLS echo servers (ringloop on io_uring and epoll, tokio + tokio-rustls) and
//! their handshake rate and memory per idle connection; `sendfile` compares ringloop's
//! `EventLoop::sendfile` with raw `sendfile(2)` and `splice(2)` loops. See
//! `docs/benchmarks.md`.
//!
//! `ringloop-bench serve --workload W --impl NAME` runs one server, and is what `echo`,
//! `http` and `sendfile` start, once per implementation, in child processes.
#![deny(unsafe_op_in_unsafe_fn)]

mod cli;
mod client;
mod histogram;
mod http;
mod report;
mod rss;
mod runner;
mod sendfile;
mod server;
mod sys;
mod tls;

use std::process::ExitCode;

use report::Printed;
use runner::Options;
use server::Workload;

const USAGE: &str = "\
usage: ringloop-bench echo|http|tls [OPTIONS]
       ringloop-bench sendfile [OPTIONS]

echo: echo servers (ringloop on io_uring and on epoll, tokio current_thread, a simple raw
io_uring loop and the strongest raw io_uring loop, raw-uring-max).
http: keep-alive HTTP/1.1 hello-world servers (ringloop protocols and ringloop streams, each
on io_uring and on epoll, tokio current_thread), answering GET requests from the runner's
own client, which checks every response.
tls: echo over TLS 1.3 (ringloop on io_uring and on epoll, tokio current_thread with
tokio-rustls, all on one rustls ServerConfig, ring provider), 1 KiB ping-pong by default;
then the handshake rate (handshakes per server CPU-second) and the server memory per idle
TLS connection.

Each server runs in its own process on CPU 0, driven in short alternating windows by one
client on CPU 1 that holds connections to all of them. Prints req/s, p50/p99 latency,
server CPU time and context switches per request, with ratios to tokio (and, for echo, to
raw-uring-max) paired per round.

options:
  --connections N     connections per server (default 64)
  --sizes S[,S...]    echo and tls: message sizes in bytes, each run separately
                      (default echo 64,1024,16384; tls 1024)
  --pipeline K        messages in flight per connection (default 1: ping-pong); the client
                      writes all queued requests of a connection in one write
  --client uring|epoll  the load generator's loop: uring (echo and http default), a RECV
                      always in flight per connection and a turn's requests sent in one
                      io_uring_enter; or epoll (tls: the only one), a write per connection
                      as it walks its events
  --duration SECS     measured part of each server's window (default 0.2)
  --warmup SECS       unmeasured start of each window (default 0.05)
  --settle R          unmeasured rounds before the measured ones, for each size (default 20
                      with --pipeline above 1, else 0: under TCP BBR, pipelined connections
                      start with pacing that fades over the first rounds)
  --repeat R          rounds, each a window per server in turn; the report shows
                      medians, ratios paired per round (default 15)
  --impls A[,B...]    servers to run (echo default: ringloop-uring,ringloop-epoll,tokio,
                      raw-uring,raw-uring-max,raw-epoll; also
                      raw-uring-max-no-TECHNIQUE[-no-...], TECHNIQUE one of defer-taskrun,
                      ring-fd, fixed-files, multishot (then also link, skip; and
                      -with-poll-first, -with-fixed-buffers); http default:
                      ringloop-uring,ringloop-epoll,ringloop-streams-uring,
                      ringloop-streams-epoll,ringloop-hyper-uring,ringloop-hyper-epoll,
                      tokio,tokio-hyper)
  --json              print a JSON array instead of the table (the ping-pong part)
  --alt-exe PATH      another build of ringloop-bench (a copy of target/release/ringloop-bench
                      from another commit): NAME@alt in --impls runs the ringloop server
                      NAME from it, in the same rounds as this build's, so a change is
                      measured against its parent paired per round
  --handshakes N      tls: handshakes per server per round (default 200)
  --idle N            tls: idle connections per server for the memory (default 1000)

sendfile: a page-cached file (written once to a temporary directory) sent whole to every
connection over loopback TCP, by ringloop's EventLoop::sendfile on io_uring (ringloop-uring)
and on epoll (ringloop-epoll), by its chunked copy fallback (ringloop-copy: the file comes
through a pipe fed by a thread), and by raw poll(2) loops with no runtime calling sendfile(2)
(raw-sendfile, the baseline) or splice(2) file -> pipe -> socket (raw-splice). Servers pinned
as for echo; each window connects N clients at once that discard and count what they get
(each must get the whole file). Prints MiB/s and server CPU per MiB (all its threads), with
ratios to raw-sendfile paired per round.

sendfile options:
  --size MiB          the file's size (default 256)
  --clients N[,N...]  connections per window, each count run separately (default 1,8)
  --repeat R          rounds per client count (default 15)
  --timeout SECS      the longest one window may take (default 60)
  --discard read|splice  how clients discard: read(2) into a buffer (default), or
                      splice(2) to /dev/null (no copy on the client side)
  --impls A[,B...]    default ringloop-uring,ringloop-epoll,ringloop-copy,raw-sendfile,
                      raw-splice
  --json              print a JSON array instead of the table

ringloop-bench rss [--connections N] [--backends uring,epoll]: server RSS per idle
connection of examples/tcp_echo_server (see `ringloop-bench rss --help`).
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("echo") => cli::parse_run(Workload::Echo, &args[1..]).and_then(|o| compare(&o)),
        Some("http") => cli::parse_run(Workload::Http, &args[1..]).and_then(|o| compare(&o)),
        Some("tls") => cli::parse_run(Workload::Tls, &args[1..]).and_then(|o| tls::compare(&o)),
        Some("serve") => cli::parse_serve(&args[1..])
            .and_then(|s| server::serve(s.workload, s.which, s.port, s.cpu, s.file.as_deref())),
        Some("sendfile") => cli::parse_sendfile(&args[1..]).and_then(|o| compare_sendfile(&o)),
        Some("rss") => cli::parse_rss(&args[1..]).and_then(|options| rss::run(&options)),
        Some("rss-client") => rss::client(&args[1..]),
        Some("-h" | "--help") => {
            print!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("expected a command\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringloop-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The `echo` and `http` commands: run, then print the table or JSON.
fn compare(options: &Options) -> Result<(), String> {
    runner::run(options)?.print(options.json);
    Ok(())
}

/// The `sendfile` command: run, then print the table or JSON.
fn compare_sendfile(options: &sendfile::Options) -> Result<(), String> {
    sendfile::run(options)?.print(options.json);
    Ok(())
}
