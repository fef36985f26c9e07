//! `ringloop-bench rss`: the memory an idle connection costs the example echo server.
//!
//! Starts `examples/tcp_echo_server --quiet --port 0 --backend B`, reads its `VmRSS` from
//! `/proc/PID/status`, has a client in a separate process (`ringloop-bench rss-client`) open N
//! connections (each sends one message and reads the echo, so the read path has run, then
//! idles), waits until the server holds them all, reads `VmRSS` again and prints the growth
//! per connection. `RLIMIT_NOFILE` is raised to the hard limit for both processes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const USAGE: &str = "\
usage: ringloop-bench rss [--connections N] [--backends uring,epoll] [--server PATH]

Server RSS per idle connection of examples/tcp_echo_server (build it first:
cargo build --release --features fallback --example tcp_echo_server).
";

/// What to measure.
pub(crate) struct RssOptions {
    pub(crate) connections: usize,
    pub(crate) backends: Vec<String>,
    pub(crate) server: Option<PathBuf>,
}

/// Runs the measurement for each backend and prints one line each.
pub(crate) fn run(options: &RssOptions) -> Result<(), String> {
    crate::sys::raise_nofile(options.connections as u64 + 64)?;
    let server = match &options.server {
        Some(path) => path.clone(),
        None => default_server()?,
    };
    println!(
        "{:<8} {:>12} {:>14} {:>14} {:>10}",
        "backend", "connections", "rss before KiB", "rss after KiB", "KiB/conn"
    );
    for backend in &options.backends {
        let (before, after) = measure(&server, backend, options.connections)?;
        let per = (after as f64 - before as f64) / options.connections as f64;
        println!("{backend:<8} {:>12} {before:>14} {after:>14} {per:>10.2}", options.connections);
    }
    Ok(())
}

/// `(VmRSS before, VmRSS after)` in KiB for one backend.
fn measure(server: &PathBuf, backend: &str, n: usize) -> Result<(u64, u64), String> {
    let mut child = Command::new(server)
        .args(["--quiet", "--port", "0", "--backend", backend])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", server.display()))?;
    let result = measure_child(&mut child, n);
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn measure_child(child: &mut Child, n: usize) -> Result<(u64, u64), String> {
    let pid = child.id();
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or("no server stdout")?;
    BufReader::new(stdout).read_line(&mut line).map_err(|e| format!("server stdout: {e}"))?;
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("serving on ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("unexpected server output {line:?}"))?;
    // Warm the server up with one connection so the baseline includes the first-use costs
    // (scratch buffers, the buffer ring's first pages), then let it settle.
    drop(ping(addr)?);
    std::thread::sleep(Duration::from_millis(300));
    let fds_before = open_fds(pid)?;
    let before = vm_rss_kib(pid)?;
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut client = Command::new(me)
        .args(["rss-client", &addr.to_string(), &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the client: {e}"))?;
    let mut ready = String::new();
    let client_out = client.stdout.take().ok_or("no client stdout")?;
    BufReader::new(client_out).read_line(&mut ready).map_err(|e| format!("client: {e}"))?;
    if ready.trim() != "ready" {
        let _ = client.kill();
        return Err(format!("client failed: {ready:?}"));
    }
    let start = Instant::now();
    while open_fds(pid)? < fds_before + n && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = vm_rss_kib(pid)?;
    let held = open_fds(pid)?.saturating_sub(fds_before);
    drop(client.stdin.take()); // the client exits when its stdin closes
    let _ = client.wait();
    if held < n {
        return Err(format!("the server holds {held} of {n} connections"));
    }
    Ok((before, after))
}

/// `ringloop-bench rss-client ADDR N`: opens N connections, pings each once, prints `ready`,
/// and keeps them open until stdin closes.
pub(crate) fn client(args: &[String]) -> Result<(), String> {
    let [addr, n] = args else { return Err("rss-client ADDR N".into()) };
    let addr: SocketAddr = addr.parse().map_err(|_| format!("bad address {addr:?}"))?;
    let n: usize = n.parse().map_err(|_| format!("bad count {n:?}"))?;
    crate::sys::raise_nofile(n as u64 + 64)?;
    let conns = (0..n).map(|_| ping(addr)).collect::<Result<Vec<_>, _>>()?;
    println!("ready");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(conns);
    Ok(())
}

/// A connection that sent one message and read its echo.
fn ping(addr: SocketAddr) -> Result<TcpStream, String> {
    let mut conn = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    conn.write_all(b"ping").map_err(|e| format!("write: {e}"))?;
    let mut echo = [0u8; 4];
    conn.read_exact(&mut echo).map_err(|e| format!("reading the echo: {e}"))?;
    Ok(conn)
}

/// The example next to this binary: `target/<profile>/examples/tcp_echo_server`.
fn default_server() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let path = me.parent().ok_or("no exe dir")?.join("examples").join("tcp_echo_server");
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{} not found\n\n{USAGE}", path.display()))
    }
}

pub(crate) fn vm_rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS for {pid}"))
}

fn open_fds(pid: u32) -> Result<usize, String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .map_err(|e| format!("/proc/{pid}/fd: {e}"))
}
