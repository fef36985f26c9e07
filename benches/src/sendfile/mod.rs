//! The `sendfile` command: a page-cached file sent whole over loopback TCP by each server to
//! one client, and to several clients at once, with throughput and server CPU per MiB.
//!
//! The file is written once into a temporary directory (`--size` MiB, default 256), flushed
//! to disk and read back once, so every transfer reads the page cache. One server process per
//! implementation (`ringloop-bench serve --workload sendfile --impl NAME --file PATH`, pinned
//! to CPU 0 as the echo runner pins them); the runner, on CPU 1, is the client. A round gives
//! every server one window, each round starting one server later; a window connects
//! `clients` connections at once, each receives the whole file (discarded as it comes, and
//! counted: a connection that gets any other number of bytes stops the run), and the window
//! ends when the last connection reaches EOF. Around each window the runner reads the
//! server's CPU clock (all its threads, exited ones too) and its main thread's CPU time.

mod client;
mod report;

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use client::Discard;
pub use report::{Report, Run};

use crate::runner::ServerProcess;
use crate::server::{Impl, Workload};

/// The `sendfile` command's options.
#[derive(Debug, Clone)]
pub struct Options {
    /// The servers to compare.
    pub impls: Vec<Impl>,
    /// The file's size in MiB.
    pub size_mib: u64,
    /// Connections per window, each count a run of its own.
    pub clients: Vec<usize>,
    /// Rounds per client count.
    pub repeat: usize,
    /// The longest a window may take.
    pub timeout: Duration,
    /// How the clients discard what they receive.
    pub discard: Discard,
    /// Print JSON instead of the table.
    pub json: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            impls: Workload::Sendfile.impls(),
            size_mib: 256,
            clients: vec![1, 8],
            repeat: 15,
            timeout: Duration::from_secs(60),
            discard: Discard::Read,
            json: false,
        }
    }
}

/// The file the servers send, in a directory of its own that is removed on drop.
#[derive(Debug)]
pub struct ServedFile {
    dir: PathBuf,
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
}

impl ServedFile {
    /// Writes `size` bytes of a pattern (1 MiB blocks of `i % 251`) into a new directory under
    /// the temporary directory, flushes it to disk (no writeback runs during the windows)
    /// and reads it back once, so that it sits in the page cache.
    pub fn create(size: u64) -> io::Result<ServedFile> {
        static CREATED: AtomicUsize = AtomicUsize::new(0);
        let n = CREATED.fetch_add(1, Ordering::Relaxed);
        let name = format!("ringloop-bench-sendfile-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).map_err(|e| with_path(e, "mkdir", &dir))?;
        let path = dir.join("served");
        let served = ServedFile { dir, path, size }; // removes the directory on an error
        served.write().map_err(|e| with_path(e, "writing", &served.path))?;
        let read = served.read_through().map_err(|e| with_path(e, "reading", &served.path))?;
        if read != size {
            return Err(io::Error::other(format!("read back {read} of {size} bytes")));
        }
        Ok(served)
    }

    /// Writes the pattern and flushes it to disk.
    fn write(&self) -> io::Result<()> {
        let block: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let mut file = File::create(&self.path)?;
        let mut left = self.size;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            file.write_all(&block[..n])?;
            left -= n as u64;
        }
        file.sync_all()
    }

    /// Reads the file once; the bytes read.
    fn read_through(&self) -> io::Result<u64> {
        let (mut file, mut buf, mut read) = (File::open(&self.path)?, vec![0u8; 1 << 20], 0);
        loop {
            match file.read(&mut buf)? {
                0 => return Ok(read),
                n => read += n as u64,
            }
        }
    }
}

impl Drop for ServedFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `e` with what was being done and the path it was done to.
fn with_path(e: io::Error, call: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{call} {}: {e}", path.display()))
}

/// Runs the whole comparison and returns what it measured.
pub fn run(options: &Options) -> Result<Report, String> {
    let cpus = crate::sys::cpus_available();
    let pinned = cpus >= 2;
    if pinned {
        crate::sys::pin_to_cpu(1).map_err(|e| e.to_string())?;
    }
    eprintln!("sendfile: writing a {} MiB file, flushing it and reading it back", options.size_mib);
    let file = ServedFile::create(options.size_mib << 20).map_err(|e| e.to_string())?;
    let extra = [OsStr::new("--file"), file.path.as_os_str()];
    let mut servers = Vec::new();
    for &which in &options.impls {
        match ServerProcess::start(Workload::Sendfile, which, None, pinned.then_some(0), &extra) {
            Ok(server) => servers.push(server),
            Err(e) => eprintln!("skipping {which}: {e}"),
        }
    }
    if servers.is_empty() {
        return Err("no server started".into());
    }
    // One unmeasured transfer each: pipes, buffers and io-wq workers come up outside the
    // windows.
    for server in &servers {
        window(server, 1, &file, options, 0)
            .map_err(|e| format!("{}: warm-up: {e}", server.which))?;
    }
    let mut report = Report::new(options, cpus, pinned, file.path.clone());
    for &clients in &options.clients {
        rounds(&servers, clients, &file, options, &mut report)
            .map_err(|e| format!("{}: {e}", connections(clients).trim_end()))?;
    }
    Ok(report)
}

/// `options.repeat` rounds of one window per server with `clients` connections; each round's
/// progress line goes to stderr.
fn rounds(
    servers: &[ServerProcess],
    clients: usize,
    file: &ServedFile,
    options: &Options,
    report: &mut Report,
) -> Result<(), String> {
    for rep in 1..=options.repeat {
        let mut line = format!(
            "{}  round {rep:>2}/{}  MiB/s (CPU µs/MiB):",
            connections(clients),
            options.repeat
        );
        for k in 0..servers.len() {
            // Each round starts with the next server, so none always follows the same one.
            let server = &servers[(rep - 1 + k) % servers.len()];
            let run = window(server, clients, file, options, rep)
                .map_err(|e| format!("{}: {e}", server.which))?;
            line += &format!(
                "  {} {:.0} ({:.0})",
                server.which, run.mib_per_sec, run.cpu_micros_per_mib
            );
            report.runs.push(run);
        }
        eprintln!("{line}");
    }
    Ok(())
}

/// How progress lines and errors name a client count: `1 client`, `8 clients`.
fn connections(clients: usize) -> String {
    match clients {
        1 => "1 client ".into(),
        n => format!("{n} clients"),
    }
}

/// One window: `clients` connections to `server` at once, each receiving the whole file.
fn window(
    server: &ServerProcess,
    clients: usize,
    file: &ServedFile,
    options: &Options,
    rep: usize,
) -> Result<Run, String> {
    let pid = server.pid();
    let sample = || -> Result<(u64, u64), String> {
        let process = crate::sys::process_cpu_nanos(pid).map_err(|e| e.to_string())?;
        let main = crate::sys::thread_cpu_nanos(pid, pid).map_err(|e| e.to_string())?;
        Ok((process, main))
    };
    let (process_before, main_before) = sample()?;
    let started = Instant::now();
    let received = client::receive(server.port, clients, options.discard, options.timeout)
        .map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    let (process_after, main_after) = sample()?;
    if let Some((i, &got)) = received.iter().enumerate().find(|(_, &got)| got != file.size) {
        return Err(format!("connection {i} of {clients} received {got} bytes, not {}", file.size));
    }
    let mib = (file.size * clients as u64) as f64 / (1u64 << 20) as f64;
    let cpu = process_after.saturating_sub(process_before) as f64 / 1e3;
    let main = main_after.saturating_sub(main_before) as f64 / 1e3;
    Ok(Run {
        which: server.which,
        clients,
        rep,
        mib_per_sec: mib / elapsed.as_secs_f64(),
        cpu_micros_per_mib: cpu / mib,
        off_main_micros_per_mib: (cpu - main).max(0.0) / mib,
    })
}
