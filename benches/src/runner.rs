//! The `echo` and `http` commands: start one server process per implementation, then for each
//! message size (echo) or once (http), for each repetition, for each server (interleaved, so
//! drift hits all alike; each round starts one server later) run the load and read the
//! server's CPU time and context switches around the measured window. [`ServerProcess`] is
//! also how the `sendfile` command starts its servers.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::client::{self, Client, Generator, Load, Messages, UringClient};
use crate::report::{Report, Run};
use crate::server::{Impl, Workload};

/// The `echo` and `http` commands' options.
#[derive(Debug, Clone)]
pub struct Options {
    /// What is served and asked for.
    pub workload: Workload,
    /// The servers to compare.
    pub impls: Vec<Impl>,
    /// Echo message sizes, each a run of its own (http: the response's size, one run).
    pub sizes: Vec<usize>,
    /// Connections.
    pub connections: usize,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// The load generator's loop.
    pub client: ClientLoop,
    /// Warm-up before each measured window.
    pub warmup: Duration,
    /// Unmeasured rounds before the first measured one, per size.
    pub settle: usize,
    /// Each measured window.
    pub duration: Duration,
    /// Repetitions of the whole interleaved round.
    pub repeat: usize,
    /// Print JSON instead of the table.
    pub json: bool,
    /// `tls`: handshakes per server per round for the handshake rate.
    pub handshakes: usize,
    /// `tls`: idle connections opened per server for the memory per connection.
    pub idle: usize,
    /// Another build of this runner, which serves the `NAME@alt` servers.
    pub alt_exe: Option<std::path::PathBuf>,
}

/// Which loop the load generator runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientLoop {
    /// One epoll thread, a `write` per connection with something queued (`tls`'s).
    Epoll,
    /// One io_uring loop: a `RECV` always in flight per connection, a turn's `SEND`s
    /// submitted together ([`UringClient`]). Plain TCP only; the default for echo and http.
    Uring,
}

impl ClientLoop {
    /// Its name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            ClientLoop::Epoll => "epoll",
            ClientLoop::Uring => "uring",
        }
    }
}

/// A server the runner started, as the commands' extra phases see it.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    /// Which implementation.
    pub which: Impl,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its process.
    pub pid: u32,
}

/// A running server process, killed and reaped on drop (so also when the runner panics).
pub struct ServerProcess {
    /// What it serves with.
    pub which: Impl,
    child: Child,
    /// Held open: the server exits when it closes.
    _stdin: ChildStdin,
    /// Where it listens (127.0.0.1).
    pub port: u16,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    /// Starts `ringloop-bench serve` for `workload` with `which` on any port, pinned to `cpu`,
    /// with `extra` arguments, and waits (10 s at most) for the port it announces. An
    /// [`Impl::Alt`] server is the other build's (`alt_exe`).
    pub fn start(
        workload: Workload,
        which: Impl,
        alt_exe: Option<&std::path::Path>,
        cpu: Option<usize>,
        extra: &[&std::ffi::OsStr],
    ) -> Result<ServerProcess, String> {
        let (exe, name) = match which.alt_base() {
            Some(base) => {
                let exe = alt_exe.ok_or_else(|| format!("{which} needs --alt-exe"))?;
                (exe.to_path_buf(), base.to_string())
            }
            None => {
                let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
                (exe, which.to_string())
            }
        };
        let mut command = Command::new(exe);
        command.args(["serve", "--workload", workload.name(), "--impl", &name, "--port", "0"]);
        if let Some(cpu) = cpu {
            command.args(["--cpu", &cpu.to_string()]);
        }
        command.args(extra);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawning the {which} server: {e}"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut server = ServerProcess { which, child, _stdin: stdin, port: 0 };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = tx.send(BufReader::new(stdout).read_line(&mut line).map(|_| line));
        });
        let line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(format!("{which} server's stdout: {e}")),
            Err(_) => return Err(format!("{which} server did not start within 10 s")),
        };
        server.port =
            line.trim().strip_prefix("listening on ").and_then(|p| p.parse().ok()).ok_or_else(
                || format!("{which} server failed to start (said {:?})", line.trim()),
            )?;
        Ok(server)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Runs the whole comparison and returns what it measured.
pub fn run(options: &Options) -> Result<Report, String> {
    run_then(options, |_| Ok(())).map(|(report, ())| report)
}

/// [`run`], then `then` with the servers still running (the `tls` command's handshake and
/// memory phases).
pub fn run_then<T>(
    options: &Options,
    then: impl FnOnce(&[Started]) -> Result<T, String>,
) -> Result<(Report, T), String> {
    let mut options = options.clone();
    if options.client == ClientLoop::Uring {
        if let Err(e) = client::uring_ring() {
            eprintln!("{e}: the load generator runs on epoll instead");
            options.client = ClientLoop::Epoll;
        }
    }
    let options = &options;
    let cpus = crate::sys::cpus_available();
    let pinned = cpus >= 2;
    if pinned {
        crate::sys::pin_to_cpu(1).map_err(|e| e.to_string())?;
    }
    let mut servers = Vec::new();
    for &which in &options.impls {
        let exe = options.alt_exe.as_deref();
        match ServerProcess::start(options.workload, which, exe, pinned.then_some(0), &[]) {
            Ok(server) => servers.push(server),
            Err(e) => eprintln!("skipping {which}: {e}"),
        }
    }
    if servers.is_empty() {
        return Err("no server started".into());
    }
    let mut report = Report::new(options, cpus, pinned);
    for &size in &options.sizes {
        match options.workload {
            Workload::Echo => rounds(&servers, options, size, client::Echo::new(size), &mut report),
            Workload::Http => rounds(&servers, options, size, client::Http, &mut report),
            Workload::Tls => rounds(&servers, options, size, client::Echo::new(size), &mut report),
            Workload::Sendfile => Err("the sendfile command has a runner of its own".into()),
        }
        .map_err(|e| format!("{}: {e}", label(options.workload, size)))?;
    }
    let started: Vec<Started> = servers
        .iter()
        .map(|s| Started { which: s.which, port: s.port, pid: s.child.id() })
        .collect();
    let extra = then(&started)?;
    Ok((report, extra))
}

/// One round of a size's run: a window per server.
#[derive(Debug, PartialEq, Eq)]
struct Round {
    /// Unmeasured (`--settle`): left out of the report.
    settling: bool,
    /// Its number among the settling or the measured rounds, from 1.
    number: usize,
    /// The servers' indexes in window order.
    order: Vec<usize>,
}

/// The rounds of a size's run: `settle` settling ones, then `repeat` measured ones, over
/// `servers` servers. Each round starts with the server after the last round's first, so
/// that none always follows the same one.
fn plan(settle: usize, repeat: usize, servers: usize) -> impl Iterator<Item = Round> {
    (0..settle + repeat).map(move |round| Round {
        settling: round < settle,
        number: if round < settle { round + 1 } else { round - settle + 1 },
        order: (0..servers).map(|k| (round + k) % servers).collect(),
    })
}

/// How progress lines and errors name a run: the echo size, or `http`.
fn label(workload: Workload, size: usize) -> String {
    match workload {
        Workload::Echo => format!("{size:>6} B"),
        Workload::Http | Workload::Sendfile => workload.name().into(),
        Workload::Tls => format!("tls {size} B"),
    }
}

/// `options.repeat` rounds of one window per server, with `messages` of `size` bytes; each
/// round's progress line goes to stderr.
fn rounds<M: Messages + 'static>(
    servers: &[ServerProcess],
    options: &Options,
    size: usize,
    messages: M,
    report: &mut Report,
) -> Result<(), String> {
    let load = Load {
        connections: options.connections,
        pipeline: options.pipeline,
        warmup: options.warmup,
        duration: options.duration,
    };
    let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    let tls = match options.workload {
        Workload::Tls => Some(crate::tls::material::client_config()?),
        _ => None,
    };
    let connected = match options.client {
        ClientLoop::Epoll => Client::connect(&ports, &load, messages, tls.as_ref())
            .map(|c| Box::new(c) as Box<dyn Generator>),
        ClientLoop::Uring if tls.is_some() => return Err("--client uring: plain TCP only".into()),
        ClientLoop::Uring => client::uring_ring()
            .and_then(|ring| UringClient::connect(ring, &ports, &load, messages))
            .map(|c| Box::new(c) as Box<dyn Generator>),
    };
    let mut client = connected.map_err(|e| e.to_string())?;
    let name = label(options.workload, size);
    for round in plan(options.settle, options.repeat, servers.len()) {
        let (kind, of) =
            if round.settling { ("settling", options.settle) } else { ("round", options.repeat) };
        let number = round.number;
        let mut line = format!("{name}  {kind} {number:>2}/{of}  CPU µs/req:");
        for index in round.order {
            let server = &servers[index];
            let pid = server.pid();
            let outcome = client
                .window(index, &move || crate::sys::sample_process(pid))
                .map_err(|e| format!("{}: {e}", server.which))?;
            let run = Run::new(server.which, size, number, &outcome);
            line += &format!("  {} {:.2}", server.which, run.cpu_micros_per_request);
            if !round.settling {
                report.runs.push(run);
            }
        }
        eprintln!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settling_rounds_come_first_and_every_round_starts_one_server_later() {
        let rounds: Vec<Round> = plan(2, 3, 2).collect();
        let kinds: Vec<(bool, usize)> = rounds.iter().map(|r| (r.settling, r.number)).collect();
        assert_eq!(kinds, [(true, 1), (true, 2), (false, 1), (false, 2), (false, 3)]);
        let orders: Vec<&[usize]> = rounds.iter().map(|r| r.order.as_slice()).collect();
        assert_eq!(orders, [[0, 1], [1, 0], [0, 1], [1, 0], [0, 1]]);
        let plain: Vec<Round> = plan(0, 2, 3).collect();
        assert!(plain.iter().all(|r| !r.settling));
        assert_eq!(plain[1], Round { settling: false, number: 2, order: vec![1, 2, 0] });
    }
}
