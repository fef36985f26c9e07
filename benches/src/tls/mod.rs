//! `ringloop-bench tls`: TLS echo servers compared. First the `echo` runner's ping-pong over
//! TLS 1.3 (1 KiB on 64 connections by default: server CPU per request, paired per round
//! against tokio + tokio-rustls), then, with the same server processes still running:
//!
//! - the handshake rate: each round, for each server in turn, `--handshakes` new connections
//!   one after another (full handshake, a 4-byte ping echoed, `close_notify`), with the
//!   server's CPU time read around them: handshakes per server CPU-second, and the ratio to
//!   tokio paired per round;
//! - the memory per idle TLS connection: `--idle` connections opened (handshake and one ping
//!   each, then idle) to each server, its `VmRSS` read before and after.
//!
//! Every server serves the same rustls `ServerConfig` ([`material`]), so only the runtime
//! differs.

pub mod material;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::report::{median, Printed};
use crate::runner::{self, Options, Started};
use crate::server::Impl;

/// One server's handshake window.
struct Handshakes {
    which: Impl,
    rep: usize,
    /// Server CPU per handshake, in microseconds.
    cpu_micros: f64,
    /// Handshakes per second of the window's wall time (the client's pace).
    per_sec: f64,
}

/// Runs the comparison and prints its three tables.
pub fn compare(options: &Options) -> Result<(), String> {
    crate::sys::raise_nofile(options.idle as u64 * 2 + 1024)?;
    let config = material::client_config()?;
    let (report, (windows, memory)) = runner::run_then(options, |servers| {
        let windows = handshake_rounds(servers, options, &config)?;
        let memory = servers
            .iter()
            .map(|s| Ok((s.which, idle_memory(s, options.idle, &config)?)))
            .collect::<Result<Vec<_>, String>>()?;
        Ok((windows, memory))
    })?;
    report.print(options.json);
    if options.json {
        return Ok(());
    }
    println!();
    print!("{}", handshake_table(options, &windows, &memory));
    Ok(())
}

/// `options.repeat` rounds of one handshake window per server (each round starting one
/// server later).
fn handshake_rounds(
    servers: &[Started],
    options: &Options,
    config: &Arc<ClientConfig>,
) -> Result<Vec<Handshakes>, String> {
    let mut windows = Vec::new();
    for rep in 1..=options.repeat {
        let mut line =
            format!("handshakes round {rep:>2}/{}  server CPU µs/handshake:", options.repeat);
        for k in 0..servers.len() {
            let server = &servers[(rep - 1 + k) % servers.len()];
            let window = handshake_window(server, rep, options.handshakes, config)?;
            line += &format!("  {} {:.0}", server.which, window.cpu_micros);
            windows.push(window);
        }
        eprintln!("{line}");
    }
    Ok(windows)
}

/// `count` handshakes with `server`, one after another.
fn handshake_window(
    server: &Started,
    rep: usize,
    count: usize,
    config: &Arc<ClientConfig>,
) -> Result<Handshakes, String> {
    let sample = || crate::sys::sample_process(server.pid).map_err(|e| e.to_string());
    let (before, started) = (sample()?, Instant::now());
    for _ in 0..count {
        drop(ping(server.port, config)?);
    }
    let (elapsed, spent) = (started.elapsed(), sample()?.since(before));
    Ok(Handshakes {
        which: server.which,
        rep,
        cpu_micros: spent.cpu_nanos as f64 / 1e3 / count as f64,
        per_sec: count as f64 / elapsed.as_secs_f64(),
    })
}

/// A new TLS connection to `port` that did its handshake and had a 4-byte ping echoed;
/// dropping it sends `close_notify` first.
fn ping(port: u16, config: &Arc<ClientConfig>) -> Result<Closing, String> {
    let tcp = crate::client::connect(port).map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let conn = ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
    let mut stream = StreamOwned::new(conn, tcp);
    stream.write_all(b"ping").map_err(|e| format!("TLS write: {e}"))?;
    let mut echo = [0u8; 4];
    stream.read_exact(&mut echo).map_err(|e| format!("TLS echo: {e}"))?;
    Ok(Closing(stream))
}

/// A TLS connection that sends `close_notify` when dropped.
struct Closing(StreamOwned<ClientConnection, TcpStream>);

impl Drop for Closing {
    fn drop(&mut self) {
        self.0.conn.send_close_notify();
        let _ = self.0.flush();
    }
}

/// The server's `VmRSS` growth per idle TLS connection, in KiB, over `count` connections.
fn idle_memory(server: &Started, count: usize, config: &Arc<ClientConfig>) -> Result<f64, String> {
    drop(ping(server.port, config)?); // first-use costs belong to the baseline
    std::thread::sleep(Duration::from_millis(300));
    let before = crate::rss::vm_rss_kib(server.pid)?;
    let held = (0..count).map(|_| ping(server.port, config)).collect::<Result<Vec<_>, _>>()?;
    std::thread::sleep(Duration::from_millis(500));
    let after = crate::rss::vm_rss_kib(server.pid)?;
    drop(held);
    Ok((after as f64 - before as f64) / count as f64)
}

/// The handshake and memory table, in markdown.
fn handshake_table(options: &Options, windows: &[Handshakes], memory: &[(Impl, f64)]) -> String {
    let mut out = format!(
        "{} handshakes per server per round, medians of {} rounds (ratios paired per round); \
         memory: {} idle TLS connections per server\n\n",
        options.handshakes, options.repeat, options.idle
    );
    out += "| impl | handshakes/s (client pace) | server CPU µs/handshake | handshakes per server CPU-s | CPU/handshake vs tokio (lowest–highest) | idle KiB/conn |\n";
    out += "|---|---:|---:|---:|---:|---:|\n";
    for &which in &options.impls {
        let mine: Vec<&Handshakes> = windows.iter().filter(|w| w.which == which).collect();
        if mine.is_empty() {
            continue;
        }
        let cpu = median(mine.iter().map(|w| w.cpu_micros).collect());
        let rate = median(mine.iter().map(|w| w.per_sec).collect());
        let ratios: Vec<f64> = mine
            .iter()
            .filter_map(|w| {
                let base = windows.iter().find(|b| b.which == Impl::Tokio && b.rep == w.rep)?;
                Some(w.cpu_micros / base.cpu_micros)
            })
            .collect();
        let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let high = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let kib = memory.iter().find(|(w, _)| *w == which).map_or(f64::NAN, |(_, k)| *k);
        out += &format!(
            "| {which} | {rate:.0} | {cpu:.1} | {:.0} | {:.2}× ({low:.2}–{high:.2}) | {kib:.1} |\n",
            1e6 / cpu,
            median(ratios.clone()),
        );
    }
    out
}
