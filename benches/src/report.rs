//! The results: one [`Run`] per measured window, summarised per (implementation, size) as the
//! median over repetitions (ratios: the median of ratios paired per repetition), printed as a
//! table or as JSON.

use std::fmt::Write as _;

use crate::client::Outcome;
use crate::runner::Options;
use crate::server::Impl;

/// One measured window.
#[derive(Debug, Clone)]
pub struct Run {
    /// The server.
    pub which: Impl,
    /// Message size in bytes.
    pub size: usize,
    /// Messages echoed per second.
    pub requests_per_sec: f64,
    /// Median latency, µs.
    pub p50_micros: f64,
    /// 99th-percentile latency, µs.
    pub p99_micros: f64,
    /// Server CPU time per message, µs.
    pub cpu_micros_per_request: f64,
    /// Server context switches per message (mostly the times it went to sleep).
    pub switches_per_request: f64,
    /// Which repetition (from 1): runs of the same repetition ran side by side.
    pub rep: usize,
}

impl Run {
    /// Summarises one window of repetition `rep`.
    pub fn new(which: Impl, size: usize, rep: usize, outcome: &Outcome) -> Run {
        let requests = outcome.requests.max(1) as f64;
        Run {
            which,
            size,
            rep,
            requests_per_sec: outcome.requests as f64 / outcome.elapsed.as_secs_f64(),
            p50_micros: outcome.latency.quantile(0.50) as f64 / 1e3,
            p99_micros: outcome.latency.quantile(0.99) as f64 / 1e3,
            cpu_micros_per_request: outcome.server.cpu_nanos as f64 / 1e3 / requests,
            switches_per_request: outcome.server.switches as f64 / requests,
        }
    }
}

/// Everything one `echo` command measured, and the context to read it in.
#[derive(Debug)]
pub struct Report {
    /// The options it ran with.
    pub options: Options,
    /// CPUs available when the runner started.
    pub cpus: usize,
    /// Whether server and client were pinned to CPUs 0 and 1.
    pub pinned: bool,
    /// Every window, in the order run.
    pub runs: Vec<Run>,
}

/// The medians of one (implementation, size) across repetitions.
struct Row {
    which: Impl,
    size: usize,
    reps: Vec<f64>,
    requests_per_sec: f64,
    p50_micros: f64,
    p99_micros: f64,
    cpu_micros_per_request: f64,
    switches_per_request: f64,
    /// Against tokio's row of the same size: the median of the per-repetition ratios (each
    /// run against tokio's run of the same repetition), with their lowest and highest.
    vs_tokio: Option<Versus>,
    /// The same against raw-uring, the limit.
    vs_raw: Option<Versus>,
}

/// A row's ratios to a baseline's row.
#[derive(Debug, Clone, Copy)]
struct Versus {
    requests_per_sec: f64,
    cpu_per_request: f64,
    cpu_lowest: f64,
    cpu_highest: f64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

impl Report {
    /// An empty report.
    pub fn new(options: &Options, cpus: usize, pinned: bool) -> Report {
        Report { options: options.clone(), cpus, pinned, runs: Vec::new() }
    }

    fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for &size in &self.options.sizes {
            for &which in &self.options.impls {
                let runs: Vec<&Run> =
                    self.runs.iter().filter(|r| r.which == which && r.size == size).collect();
                if runs.is_empty() {
                    continue;
                }
                let of = |f: fn(&Run) -> f64| median(runs.iter().map(|r| f(r)).collect());
                let (vs_tokio, vs_raw) =
                    (self.versus(&runs, Impl::Tokio), self.versus(&runs, Impl::RawUring));
                rows.push(Row {
                    which,
                    size,
                    reps: runs.iter().map(|r| r.requests_per_sec).collect(),
                    requests_per_sec: of(|r| r.requests_per_sec),
                    p50_micros: of(|r| r.p50_micros),
                    p99_micros: of(|r| r.p99_micros),
                    cpu_micros_per_request: of(|r| r.cpu_micros_per_request),
                    switches_per_request: of(|r| r.switches_per_request),
                    vs_tokio,
                    vs_raw,
                });
            }
        }
        rows
    }

    /// Pairs each of `runs` with `baseline`'s run of the same size and repetition (which ran
    /// next to it, so a slow patch of the machine hits both) and takes the medians of the
    /// ratios.
    fn versus(&self, runs: &[&Run], baseline: Impl) -> Option<Versus> {
        let mut rates = Vec::new();
        let mut cpus = Vec::new();
        for run in runs {
            let base = self
                .runs
                .iter()
                .find(|b| b.which == baseline && b.size == run.size && b.rep == run.rep)?;
            rates.push(run.requests_per_sec / base.requests_per_sec);
            cpus.push(run.cpu_micros_per_request / base.cpu_micros_per_request);
        }
        Some(Versus {
            cpu_lowest: cpus.iter().copied().fold(f64::INFINITY, f64::min),
            cpu_highest: cpus.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            requests_per_sec: median(rates),
            cpu_per_request: median(cpus),
        })
    }

    /// The context lines printed above the table.
    pub fn header(&self) -> String {
        let o = &self.options;
        let features = |backend| match ringloop::EventLoop::with_backend(backend) {
            Ok(event_loop) => format!("{:?}", event_loop.features()),
            Err(e) => format!("unavailable ({e})"),
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "kernel {}, {} CPUs available, {}",
            crate::sys::kernel_release(),
            self.cpus,
            if self.pinned { "servers pinned to CPU 0, client to CPU 1" } else { "not pinned" }
        );
        let _ = writeln!(
            out,
            "ringloop features: uring {}, epoll {}",
            features(ringloop::Backend::Uring),
            features(ringloop::Backend::Epoll)
        );
        let _ = writeln!(
            out,
            "{} connections, pipeline {}, {:.2} s warm-up + {:.2} s measured, medians of {} interleaved repetitions (ratios: paired per repetition)",
            o.connections, o.pipeline, o.warmup.as_secs_f64(), o.duration.as_secs_f64(), o.repeat
        );
        out
    }

    /// The Markdown table.
    pub fn table(&self) -> String {
        let rows = self.rows();
        let mut out = String::from(
            "| impl | size | req/s | MiB/s | p50 µs | p99 µs | server CPU µs/req | switches/req \
             | req/s vs tokio | CPU/req vs tokio (lowest–highest) | CPU/req vs raw-uring |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for row in &rows {
            let mib = row.requests_per_sec * row.size as f64 / (1024.0 * 1024.0);
            let (rate, cpu) = match row.vs_tokio {
                Some(v) => (
                    format!("{:.2}×", v.requests_per_sec),
                    format!("{:.2}× ({:.2}–{:.2})", v.cpu_per_request, v.cpu_lowest, v.cpu_highest),
                ),
                None => ("-".into(), "-".into()),
            };
            let raw = row.vs_raw.map_or("-".into(), |v| format!("{:.2}×", v.cpu_per_request));
            let _ = writeln!(
                out,
                "| {} | {} B | {:.0} | {:.1} | {:.0} | {:.0} | {:.2} | {:.3} | {rate} | {cpu} | {raw} |",
                row.which.name(),
                row.size,
                row.requests_per_sec,
                mib,
                row.p50_micros,
                row.p99_micros,
                row.cpu_micros_per_request,
                row.switches_per_request,
            );
        }
        out
    }

    /// A JSON array, one object per (implementation, size).
    pub fn json(&self) -> String {
        let rows = self.rows();
        let o = &self.options;
        let num = |v: f64| if v.is_finite() { format!("{v:.3}") } else { "null".into() };
        let mut out = String::from("[\n");
        for (i, row) in rows.iter().enumerate() {
            let nan = Versus {
                requests_per_sec: f64::NAN,
                cpu_per_request: f64::NAN,
                cpu_lowest: f64::NAN,
                cpu_highest: f64::NAN,
            };
            let (vs, raw) = (row.vs_tokio.unwrap_or(nan), row.vs_raw.unwrap_or(nan));
            let reps: Vec<String> = row.reps.iter().map(|&v| num(v)).collect();
            let _ = writeln!(
                out,
                "  {{\"impl\": \"{}\", \"size\": {}, \"connections\": {}, \"pipeline\": {}, \
                 \"duration_s\": {}, \"repeat\": {}, \"kernel\": \"{}\", \"pinned\": {}, \
                 \"req_per_s\": {}, \"mib_per_s\": {}, \"p50_us\": {}, \"p99_us\": {}, \
                 \"server_cpu_us_per_req\": {}, \"server_switches_per_req\": {}, \
                 \"req_per_s_vs_tokio\": {}, \"cpu_per_req_vs_tokio\": {}, \
                 \"cpu_per_req_vs_tokio_lowest\": {}, \"cpu_per_req_vs_tokio_highest\": {}, \
                 \"cpu_per_req_vs_raw_uring\": {}, \
                 \"req_per_s_reps\": [{}]}}{}",
                row.which.name(),
                row.size,
                o.connections,
                o.pipeline,
                num(o.duration.as_secs_f64()),
                o.repeat,
                crate::sys::kernel_release(),
                self.pinned,
                num(row.requests_per_sec),
                num(row.requests_per_sec * row.size as f64 / (1024.0 * 1024.0)),
                num(row.p50_micros),
                num(row.p99_micros),
                num(row.cpu_micros_per_request),
                num(row.switches_per_request),
                num(vs.requests_per_sec),
                num(vs.cpu_per_request),
                num(vs.cpu_lowest),
                num(vs.cpu_highest),
                num(raw.cpu_per_request),
                reps.join(", "),
                if i + 1 < rows.len() { "," } else { "" },
            );
        }
        out.push_str("]\n");
        out
    }
}
