//! Command-line options of `echo`, `http`, `sendfile`, `serve` and `rss`.

use std::path::PathBuf;
use std::time::Duration;

use crate::runner::{ClientLoop, Options};
use crate::server::{Impl, Workload};
use crate::{http, rss, sendfile, USAGE};

/// `--name value` pairs and flags, in order.
struct Args<'a> {
    rest: std::slice::Iter<'a, String>,
}

impl<'a> Args<'a> {
    fn value(&mut self, name: &str) -> Result<&'a str, String> {
        self.rest.next().map(String::as_str).ok_or_else(|| format!("{name} needs a value"))
    }

    fn parsed<T: std::str::FromStr>(&mut self, name: &str) -> Result<T, String> {
        let value = self.value(name)?;
        value.parse().map_err(|_| format!("{name}: cannot parse {value:?}"))
    }

    fn seconds(&mut self, name: &str) -> Result<Duration, String> {
        let secs: f64 = self.parsed(name)?;
        Duration::try_from_secs_f64(secs).map_err(|_| format!("{name}: {secs} is not a duration"))
    }

    /// A comma-separated list, each item parsed by `parse`.
    fn list<T>(
        &mut self,
        name: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        self.value(name)?.split(',').map(|s| parse(s.trim())).collect()
    }
}

/// The default `--settle` with `--pipeline` above 1.
const PIPELINED_SETTLE: usize = 20;

/// The options of `echo` (`workload` Echo) or `http`.
pub fn parse_run(workload: Workload, args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        workload,
        impls: workload.impls(),
        sizes: match workload {
            Workload::Echo => vec![64, 1024, 16384],
            Workload::Http => vec![http::RESPONSE.len()],
            Workload::Tls => vec![1024],
            Workload::Sendfile => Vec::new(), // `sendfile` has options of its own
        },
        connections: 64,
        pipeline: 1,
        // The harness drives plain TCP from io_uring; TLS needs the epoll client.
        client: if workload == Workload::Tls { ClientLoop::Epoll } else { ClientLoop::Uring },
        warmup: Duration::from_millis(50),
        settle: 0,
        duration: Duration::from_millis(200),
        repeat: 15,
        json: false,
        handshakes: 200,
        idle: 1000,
        alt_exe: None,
    };
    let mut settle = None;
    let mut args = Args { rest: args.iter() };
    while let Some(arg) = args.rest.next() {
        match arg.as_str() {
            "--connections" => options.connections = args.parsed(arg)?,
            "--settle" => settle = Some(args.parsed(arg)?),
            "--pipeline" => options.pipeline = args.parsed(arg)?,
            "--client" => {
                options.client = match args.value(arg)? {
                    "epoll" => ClientLoop::Epoll,
                    "uring" if workload != Workload::Tls => ClientLoop::Uring,
                    other => return Err(format!("--client: {other:?} is not epoll or uring")),
                }
            }
            "--repeat" => options.repeat = args.parsed(arg)?,
            "--duration" => options.duration = args.seconds(arg)?,
            "--warmup" => options.warmup = args.seconds(arg)?,
            "--json" => options.json = true,
            "--handshakes" if workload == Workload::Tls => options.handshakes = args.parsed(arg)?,
            "--idle" if workload == Workload::Tls => options.idle = args.parsed(arg)?,
            "--sizes" if matches!(workload, Workload::Echo | Workload::Tls) => {
                let size = |s: &str| s.parse().map_err(|_| format!("--sizes: cannot parse {s:?}"));
                options.sizes = args.list(arg, size)?;
            }
            "--impls" => options.impls = args.list(arg, |s| Impl::parse(s, workload))?,
            "--alt-exe" => options.alt_exe = Some(args.value(arg)?.into()),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => {
                return Err(format!("{}: unknown option {other:?}\n\n{USAGE}", workload.name()))
            }
        }
    }
    // Pipelined rounds start cold under TCP BBR (docs/benchmarks.md, "Pipelined rounds start
    // cold"); ping-pong ones do not.
    options.settle = settle.unwrap_or(if options.pipeline > 1 { PIPELINED_SETTLE } else { 0 });
    let alt = options.impls.iter().any(|which| matches!(which, Impl::Alt(_)));
    if alt != options.alt_exe.is_some() {
        return Err("--alt-exe and the NAME@alt servers come together".into());
    }
    if options.connections == 0 || options.pipeline == 0 || options.repeat == 0 {
        return Err("--connections, --pipeline and --repeat must be at least 1".into());
    }
    if options.sizes.contains(&0) || options.impls.is_empty() {
        return Err("--sizes must be at least 1 byte, and --impls must name a server".into());
    }
    Ok(options)
}

/// The options of `sendfile`.
pub fn parse_sendfile(args: &[String]) -> Result<sendfile::Options, String> {
    let mut options = sendfile::Options::default();
    let mut args = Args { rest: args.iter() };
    while let Some(arg) = args.rest.next() {
        match arg.as_str() {
            "--size" => options.size_mib = args.parsed(arg)?,
            "--clients" => {
                let count =
                    |s: &str| s.parse().map_err(|_| format!("--clients: cannot parse {s:?}"));
                options.clients = args.list(arg, count)?;
            }
            "--repeat" => options.repeat = args.parsed(arg)?,
            "--timeout" => options.timeout = args.seconds(arg)?,
            "--discard" => options.discard = sendfile::Discard::parse(args.value(arg)?)?,
            "--impls" => options.impls = args.list(arg, |s| Impl::parse(s, Workload::Sendfile))?,
            "--json" => options.json = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("sendfile: unknown option {other:?}\n\n{USAGE}")),
        }
    }
    if options.size_mib == 0 || options.repeat == 0 || options.clients.contains(&0) {
        return Err("--size, --repeat and --clients must be at least 1".into());
    }
    if options.clients.is_empty() || options.impls.is_empty() || options.timeout.is_zero() {
        return Err("--clients and --impls must name something, --timeout must be > 0".into());
    }
    Ok(options)
}

/// The options of `rss`.
pub fn parse_rss(args: &[String]) -> Result<rss::RssOptions, String> {
    let mut options = rss::RssOptions {
        connections: 10_000,
        backends: vec!["uring".into(), "epoll".into()],
        server: None,
    };
    let mut args = Args { rest: args.iter() };
    while let Some(arg) = args.rest.next() {
        match arg.as_str() {
            "--connections" => options.connections = args.parsed(arg)?,
            "--backends" => options.backends = args.list(arg, |s| Ok(s.into()))?,
            "--server" => options.server = Some(args.value(arg)?.into()),
            "-h" | "--help" => {
                print!("{}", rss::USAGE);
                std::process::exit(0);
            }
            other => return Err(format!("rss: unknown option {other:?}\n\n{}", rss::USAGE)),
        }
    }
    if options.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    Ok(options)
}

/// What `serve` runs.
#[derive(Debug, PartialEq, Eq)]
pub struct Serve {
    /// What it serves (`--workload`, default echo).
    pub workload: Workload,
    /// The implementation (`--impl`).
    pub which: Impl,
    /// The port to bind (`--port`, default 0: any).
    pub port: u16,
    /// The CPU to pin to (`--cpu`).
    pub cpu: Option<usize>,
    /// The file a sendfile server sends (`--file`).
    pub file: Option<PathBuf>,
}

/// The options of `serve`; `--workload` must come before `--impl`.
pub fn parse_serve(args: &[String]) -> Result<Serve, String> {
    let (mut workload, mut which, mut port, mut cpu, mut file) =
        (Workload::Echo, None, 0, None, None);
    let mut args = Args { rest: args.iter() };
    while let Some(arg) = args.rest.next() {
        match arg.as_str() {
            "--workload" => workload = Workload::parse(args.value(arg)?)?,
            "--impl" => which = Some(Impl::parse(args.value(arg)?, workload)?),
            "--port" => port = args.parsed(arg)?,
            "--cpu" => cpu = Some(args.parsed(arg)?),
            "--file" => file = Some(PathBuf::from(args.value(arg)?)),
            other => return Err(format!("serve: unknown option {other:?}")),
        }
    }
    Ok(Serve { workload, which: which.ok_or("serve needs --impl")?, port, cpu, file })
}

#[cfg(test)]
mod tests;
