//! `ringloop-bench`: the echo benchmark runner, ringloop (io_uring and epoll) against tokio
//! (the reference) and a raw io_uring loop (the limit). See `docs/benchmarks.md`.
//!
//! `ringloop-bench echo [OPTIONS]` runs the comparison; `ringloop-bench serve --impl NAME`
//! runs one server, and is what `echo` starts, once per implementation, in child processes.
#![deny(unsafe_op_in_unsafe_fn)]

mod client;
mod histogram;
mod report;
mod rss;
mod runner;
mod server;
mod sys;

use std::process::ExitCode;
use std::time::Duration;

use runner::Options;
use server::Impl;

const USAGE: &str = "\
usage: ringloop-bench echo [OPTIONS]

Echo servers (ringloop on io_uring, ringloop on epoll, tokio current_thread, raw io_uring),
each in its own process on CPU 0, driven in short alternating windows by one client on
CPU 1 that holds connections to all of them. Prints req/s, MiB/s,
p50/p99 latency, server CPU time and context switches per request, with ratios to tokio.

options:
  --connections N     connections (default 64)
  --sizes S[,S...]    message sizes in bytes, each run separately (default 64,1024,16384)
  --pipeline K        messages in flight per connection (default 1: ping-pong)
  --duration SECS     measured part of each server's window (default 0.2)
  --warmup SECS       unmeasured start of each window (default 0.05)
  --repeat R          rounds, each a window per server in turn; the report shows
                      medians, ratios paired per round (default 15)
  --impls A[,B...]    servers to run (default ringloop-uring,ringloop-epoll,tokio,raw-uring)
  --json              print a JSON array instead of the table

ringloop-bench rss [--connections N] [--backends uring,epoll]: server RSS per idle
connection of examples/tcp_echo_server (see `ringloop-bench rss --help`).
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("echo") => parse_echo(&args[1..]).and_then(|options| echo(&options)),
        Some("serve") => {
            parse_serve(&args[1..]).and_then(|(which, port, cpu)| server::serve(which, port, cpu))
        }
        Some("rss") => parse_rss(&args[1..]).and_then(|options| rss::run(&options)),
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

fn echo(options: &Options) -> Result<(), String> {
    let report = runner::run(options)?;
    if options.json {
        print!("{}", report.json());
    } else {
        print!("{}\n{}", report.header(), report.table());
    }
    Ok(())
}

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
}

fn parse_echo(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        impls: Impl::ALL.to_vec(),
        sizes: vec![64, 1024, 16384],
        connections: 64,
        pipeline: 1,
        warmup: Duration::from_millis(50),
        duration: Duration::from_millis(200),
        repeat: 15,
        json: false,
    };
    let mut args = Args { rest: args.iter() };
    while let Some(arg) = args.rest.next() {
        match arg.as_str() {
            "--connections" => options.connections = args.parsed(arg)?,
            "--pipeline" => options.pipeline = args.parsed(arg)?,
            "--repeat" => options.repeat = args.parsed(arg)?,
            "--duration" => options.duration = args.seconds(arg)?,
            "--warmup" => options.warmup = args.seconds(arg)?,
            "--json" => options.json = true,
            "--sizes" => {
                options.sizes = args
                    .value(arg)?
                    .split(',')
                    .map(|s| s.trim().parse().map_err(|_| format!("--sizes: cannot parse {s:?}")))
                    .collect::<Result<_, _>>()?;
            }
            "--impls" => {
                options.impls = args
                    .value(arg)?
                    .split(',')
                    .map(|s| Impl::parse(s.trim()))
                    .collect::<Result<_, _>>()?;
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other:?}\n\n{USAGE}")),
        }
    }
    if options.connections == 0 || options.pipeline == 0 || options.repeat == 0 {
        return Err("--connections, --pipeline and --repeat must be at least 1".into());
    }
    if options.sizes.contains(&0) || options.impls.is_empty() {
        return Err("--sizes must be at least 1 byte, and --impls must name a server".into());
    }
    Ok(options)
}

fn parse_rss(args: &[String]) -> Result<rss::RssOptions, String> {
    let mut options = rss::RssOptions {
        connections: 10_000,
        backends: vec!["uring".into(), "epoll".into()],
        server: None,
    };
    let mut args = Args { rest: args.iter() };
    while let Some(arg) = args.rest.next() {
        match arg.as_str() {
            "--connections" => options.connections = args.parsed(arg)?,
            "--backends" => {
                options.backends = args.value(arg)?.split(',').map(|s| s.trim().into()).collect()
            }
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

fn parse_serve(args: &[String]) -> Result<(Impl, u16, Option<usize>), String> {
    let (mut which, mut port, mut cpu) = (None, 0, None);
    let mut args = Args { rest: args.iter() };
    while let Some(arg) = args.rest.next() {
        match arg.as_str() {
            "--impl" => which = Some(Impl::parse(args.value(arg)?)?),
            "--port" => port = args.parsed(arg)?,
            "--cpu" => cpu = Some(args.parsed(arg)?),
            other => return Err(format!("serve: unknown option {other:?}")),
        }
    }
    Ok((which.ok_or("serve needs --impl")?, port, cpu))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn echo_defaults_are_the_documented_ones() {
        let o = parse_echo(&[]).unwrap();
        assert_eq!(o.impls, Impl::ALL);
        assert_eq!(o.sizes, [64, 1024, 16384]);
        assert_eq!((o.connections, o.pipeline, o.repeat, o.json), (64, 1, 15, false));
        assert_eq!((o.warmup, o.duration), (Duration::from_millis(50), Duration::from_millis(200)));
        // The default run stays under a minute: sizes x repetitions x servers windows.
        let windows = (o.sizes.len() * o.repeat * o.impls.len()) as u32;
        assert!((o.warmup + o.duration) * windows < Duration::from_secs(60));
    }

    #[test]
    fn echo_options_are_parsed() {
        let list = [
            "--connections",
            "8",
            "--sizes",
            "1, 2",
            "--pipeline",
            "4",
            "--duration",
            "0.5",
            "--warmup",
            "0",
            "--repeat",
            "5",
            "--impls",
            "tokio,raw-uring",
            "--json",
        ];
        let o = parse_echo(&args(&list)).unwrap();
        assert_eq!((o.connections, o.pipeline, o.repeat, o.json), (8, 4, 5, true));
        assert_eq!(o.sizes, [1, 2]);
        assert_eq!((o.warmup, o.duration), (Duration::ZERO, Duration::from_millis(500)));
        assert_eq!(o.impls, [Impl::Tokio, Impl::RawUring]);
    }

    #[test]
    fn bad_echo_options_are_errors() {
        for bad in [
            &["--connections", "0"][..],
            &["--pipeline", "0"],
            &["--repeat", "0"],
            &["--sizes", "0"],
            &["--sizes", "x"],
            &["--duration", "-1"],
            &["--impls", "nginx"],
            &["--connections"],
            &["--what"],
        ] {
            assert!(parse_echo(&args(bad)).is_err(), "{bad:?} accepted");
        }
    }

    fn run(which: Impl, rep: usize, rate: f64, cpu: f64) -> report::Run {
        report::Run {
            which,
            size: 1024,
            rep,
            requests_per_sec: rate,
            p50_micros: 10.0 * rep as f64,
            p99_micros: 100.0 * rep as f64,
            cpu_micros_per_request: cpu,
            switches_per_request: 0.5,
        }
    }

    #[test]
    fn report_shows_mib_per_second_percentiles_and_ratios_to_tokio() {
        let mut options =
            parse_echo(&args(&["--sizes", "1024", "--impls", "ringloop-uring,tokio"])).unwrap();
        options.json = true;
        let mut report = report::Report::new(&options, 2, true);
        for rep in 1..=3 {
            report.runs.push(run(Impl::Tokio, rep, 2048.0, 10.0));
            report.runs.push(run(Impl::RingloopUring, rep, 1024.0 * rep as f64, 5.0));
        }
        let table = report.table();
        assert!(table.contains("| MiB/s | p50 µs | p99 µs | server CPU µs/req |"), "{table}");
        // Medians over the repetitions: 2048 req/s of 1 KiB = 2.0 MiB/s, p50 20, p99 200.
        let uring =
            "| ringloop-uring | 1024 B | 2048 | 2.0 | 20 | 200 | 5.00 | 0.500 | 1.00× | 0.50× (0.50–0.50) | - |";
        assert!(table.contains(uring), "{table}");
        let json = report.json();
        assert!(json.starts_with("[\n") && json.ends_with("]\n"), "{json}");
        assert!(json.contains("\"impl\": \"ringloop-uring\", \"size\": 1024"), "{json}");
        assert!(
            json.contains("\"mib_per_s\": 2.000, \"p50_us\": 20.000, \"p99_us\": 200.000"),
            "{json}"
        );
        assert!(json.contains("\"cpu_per_req_vs_tokio\": 0.500"), "{json}");
    }
}
