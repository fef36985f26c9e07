//! The results: one [`Run`] per measured window, summarised per (implementation, size) as the
//! median over repetitions (ratios to the workload's baselines: the median of ratios paired
//! per repetition), printed as a table or as JSON. Shared by `echo` and `http`.

use std::fmt::Write as _;

use crate::client::Outcome;
use crate::runner::Options;
use crate::server::{Impl, Workload};

/// A report as the commands print it (`echo`, `http`, `tls`, `sendfile`): context lines and a
/// Markdown table, or JSON.
pub trait Printed {
    /// The context lines printed above the table.
    fn header(&self) -> String;

    /// The Markdown table.
    fn table(&self) -> String;

    /// A JSON array, one object per row.
    fn json(&self) -> String;

    /// Prints the JSON with `json` (`--json`), else the header, a blank line and the table.
    fn print(&self, json: bool) {
        if json {
            print!("{}", self.json());
        } else {
            print!("{}\n{}", self.header(), self.table());
        }
    }
}

/// One measured window.
#[derive(Debug, Clone)]
pub struct Run {
    /// The server.
    pub which: Impl,
    /// Message size in bytes (http: the response's).
    pub size: usize,
    /// Messages answered per second.
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
    /// Summarises one window of repetition `rep`. A window in which nothing was answered (the
    /// machine stalled the server for all of it) has no latency or cost per request: NaN,
    /// which medians and ratios leave out.
    pub fn new(which: Impl, size: usize, rep: usize, outcome: &Outcome) -> Run {
        let requests = match outcome.requests {
            0 => f64::NAN,
            n => n as f64,
        };
        Run {
            which,
            size,
            rep,
            requests_per_sec: outcome.requests as f64 / outcome.elapsed.as_secs_f64(),
            p50_micros: quantile_micros(outcome, 0.50),
            p99_micros: quantile_micros(outcome, 0.99),
            cpu_micros_per_request: outcome.server.cpu_nanos as f64 / 1e3 / requests,
            switches_per_request: outcome.server.switches as f64 / requests,
        }
    }
}

/// The window's latency quantile `q` in µs; NaN when nothing was answered.
fn quantile_micros(outcome: &Outcome, q: f64) -> f64 {
    match outcome.requests {
        0 => f64::NAN,
        _ => outcome.latency.quantile(q) as f64 / 1e3,
    }
}

/// Everything one `echo` or `http` command measured, and the context to read it in.
#[derive(Debug)]
pub struct Report {
    /// The options it ran with.
    pub options: Options,
    /// Where it ran.
    pub machine: Machine,
    /// Every window, in the order run.
    pub runs: Vec<Run>,
}

/// Where a report's command ran.
#[derive(Debug, Clone, Copy)]
pub struct Machine {
    /// CPUs available when the runner started.
    pub cpus: usize,
    /// Whether servers and client were pinned to CPUs 0 and 1.
    pub pinned: bool,
}

impl Machine {
    /// The header's first line: `command`, the kernel, the CPUs and whether they were pinned.
    pub(crate) fn line(&self, command: &str) -> String {
        format!(
            "{command}: kernel {}, {} CPUs available, {}\n",
            crate::sys::kernel_release(),
            self.cpus,
            if self.pinned { "servers pinned to CPU 0, client to CPU 1" } else { "not pinned" }
        )
    }
}

/// The medians of one (implementation, size) across repetitions.
struct Row {
    which: Impl,
    size: usize,
    /// Each repetition's req/s and CPU µs per request, in order.
    reps: Vec<(f64, f64)>,
    requests_per_sec: f64,
    p50_micros: f64,
    p99_micros: f64,
    cpu_micros_per_request: f64,
    switches_per_request: f64,
    /// Against each of the report's baselines' row of the same size (tokio first): the
    /// median of the per-repetition ratios (each run against the baseline's run of the same
    /// repetition), with their lowest and highest.
    versus: Vec<Option<Versus>>,
}

/// A row's ratios to a baseline's row (the `echo`, `http` and `sendfile` reports): the medians
/// of the ratios paired per repetition, with the CPU ratio's lowest and highest.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Versus {
    /// Rate (req/s, MiB/s) against the baseline's.
    pub(crate) rate: f64,
    /// CPU per unit of work (request, MiB) against the baseline's.
    pub(crate) cpu: f64,
    /// The lowest of the CPU ratios.
    pub(crate) cpu_lowest: f64,
    /// The highest of the CPU ratios.
    pub(crate) cpu_highest: f64,
}

impl Versus {
    /// No baseline row to divide by (JSON `null`s).
    pub(crate) const NAN: Versus =
        Versus { rate: f64::NAN, cpu: f64::NAN, cpu_lowest: f64::NAN, cpu_highest: f64::NAN };

    /// Summarises the paired ratios; a CPU ratio that is not finite is left out.
    pub(crate) fn from_ratios(rates: Vec<f64>, mut cpus: Vec<f64>) -> Versus {
        cpus.retain(|c| c.is_finite());
        Versus {
            cpu_lowest: cpus.iter().copied().fold(f64::INFINITY, f64::min),
            cpu_highest: cpus.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            rate: median(rates),
            cpu: median(cpus),
        }
    }
}

/// The median of `f` over `runs` (NaNs left out).
pub(crate) fn median_of<R>(runs: &[&R], f: fn(&R) -> f64) -> f64 {
    median(runs.iter().map(|r| f(r)).collect())
}

/// The runs of each (implementation, key) that has any, keys outer (message sizes, client
/// counts), implementations inner, each in the order the options give; `which_and_key` says
/// which group a run is in.
pub(crate) fn runs_by<'a, R, K: Copy + PartialEq>(
    runs: &'a [R],
    keys: &[K],
    impls: &[Impl],
    which_and_key: impl Fn(&R) -> (Impl, K),
) -> Vec<(Impl, K, Vec<&'a R>)> {
    let mut groups = Vec::new();
    for &key in keys {
        for &which in impls {
            let group: Vec<&R> = runs.iter().filter(|r| which_and_key(r) == (which, key)).collect();
            if !group.is_empty() {
                groups.push((which, key, group));
            }
        }
    }
    groups
}

/// A JSON number with three decimals; `null` for NaN or infinity.
pub(crate) fn json_number(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "null".into()
    }
}

/// The median of the values that are not NaN (NaN if none is).
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| !v.is_nan());
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
        Report { options: options.clone(), machine: Machine { cpus, pinned }, runs: Vec::new() }
    }

    fn rows(&self) -> Vec<Row> {
        let (sizes, impls) = (&self.options.sizes, &self.options.impls);
        let groups = runs_by(&self.runs, sizes, impls, |r| (r.which, r.size));
        groups.into_iter().map(|(which, size, runs)| self.row(which, size, &runs)).collect()
    }

    /// The baselines this report divides by: the workload's first (tokio) always, the others
    /// when the run has them.
    fn baselines(&self) -> Vec<Impl> {
        let all = self.options.workload.baselines();
        let ran = |b: &&Impl| self.options.impls.contains(b);
        all.iter().take(1).chain(all.iter().skip(1).filter(ran)).copied().collect()
    }

    /// The medians of `runs`, the runs of `which` at `size`.
    fn row(&self, which: Impl, size: usize, runs: &[&Run]) -> Row {
        let of = |f: fn(&Run) -> f64| median_of(runs, f);
        let baselines = self.baselines();
        Row {
            which,
            size,
            reps: runs.iter().map(|r| (r.requests_per_sec, r.cpu_micros_per_request)).collect(),
            requests_per_sec: of(|r| r.requests_per_sec),
            p50_micros: of(|r| r.p50_micros),
            p99_micros: of(|r| r.p99_micros),
            cpu_micros_per_request: of(|r| r.cpu_micros_per_request),
            switches_per_request: of(|r| r.switches_per_request),
            versus: baselines.iter().map(|&b| self.versus(runs, b)).collect(),
        }
    }

    /// Pairs each of `runs` with `baseline`'s run of the same size and repetition (which ran
    /// next to it, so a slow patch of the machine hits both) and takes the medians of the
    /// ratios; a pair with a window in which nothing was answered is left out.
    fn versus(&self, runs: &[&Run], baseline: Impl) -> Option<Versus> {
        let mut rates = Vec::new();
        let mut cpus = Vec::new();
        for run in runs {
            let base = self
                .runs
                .iter()
                .find(|b| b.which == baseline && b.size == run.size && b.rep == run.rep)?;
            let cpu = run.cpu_micros_per_request / base.cpu_micros_per_request;
            if cpu.is_finite() {
                rates.push(run.requests_per_sec / base.requests_per_sec);
                cpus.push(cpu);
            }
        }
        Some(Versus::from_ratios(rates, cpus))
    }

    fn table_row(&self, row: &Row, echo: bool) -> String {
        let mut line = format!("| {} |", row.which);
        if echo {
            line += &format!(" {} B |", row.size);
        }
        line += &format!(" {:.0} |", row.requests_per_sec);
        if echo {
            line +=
                &format!(" {:.1} |", row.requests_per_sec * row.size as f64 / (1024.0 * 1024.0));
        }
        line += &format!(
            " {:.0} | {:.0} | {:.2} | {:.3} |",
            row.p50_micros, row.p99_micros, row.cpu_micros_per_request, row.switches_per_request
        );
        for (i, versus) in row.versus.iter().enumerate() {
            line += &match (i, versus) {
                (0, Some(v)) => format!(
                    " {:.2}× | {:.2}× ({:.2}–{:.2}) |",
                    v.rate, v.cpu, v.cpu_lowest, v.cpu_highest
                ),
                (0, None) => " - | - |".into(),
                (_, Some(v)) => format!(" {:.2}× |", v.cpu),
                (_, None) => " - |".into(),
            };
        }
        line + "\n"
    }

    fn json_row(&self, row: &Row) -> String {
        let o = &self.options;
        let num = json_number;
        let rates: Vec<String> = row.reps.iter().map(|&(rate, _)| num(rate)).collect();
        let cpus: Vec<String> = row.reps.iter().map(|&(_, cpu)| num(cpu)).collect();
        let mut out = format!(
            "  {{\"workload\": \"{}\", \"impl\": \"{}\", \"size\": {}, \"connections\": {}, \
             \"pipeline\": {}, \"client\": \"{}\", \"duration_s\": {}, \"repeat\": {}, \"kernel\": \"{}\", \
             \"pinned\": {}, \"req_per_s\": {}, \"mib_per_s\": {}, \"p50_us\": {}, \
             \"p99_us\": {}, \"server_cpu_us_per_req\": {}, \"server_switches_per_req\": {}",
            o.workload.name(),
            row.which,
            row.size,
            o.connections,
            o.pipeline,
            o.client.name(),
            num(o.duration.as_secs_f64()),
            o.repeat,
            crate::sys::kernel_release(),
            self.machine.pinned,
            num(row.requests_per_sec),
            num(row.requests_per_sec * row.size as f64 / (1024.0 * 1024.0)),
            num(row.p50_micros),
            num(row.p99_micros),
            num(row.cpu_micros_per_request),
            num(row.switches_per_request),
        );
        for (base, versus) in self.baselines().iter().zip(&row.versus) {
            let key = base.to_string().replace('-', "_");
            let v = versus.unwrap_or(Versus::NAN);
            let _ = write!(
                out,
                ", \"req_per_s_vs_{key}\": {}, \"cpu_per_req_vs_{key}\": {}, \
                 \"cpu_per_req_vs_{key}_lowest\": {}, \"cpu_per_req_vs_{key}_highest\": {}",
                num(v.rate),
                num(v.cpu),
                num(v.cpu_lowest),
                num(v.cpu_highest)
            );
        }
        let _ = write!(
            out,
            ", \"req_per_s_reps\": [{}], \"server_cpu_us_per_req_reps\": [{}]}}",
            rates.join(", "),
            cpus.join(", ")
        );
        out
    }
}

impl Printed for Report {
    /// The context lines printed above the table.
    fn header(&self) -> String {
        let o = &self.options;
        let features = |backend| match ringloop::EventLoop::with_backend(backend) {
            Ok(event_loop) => format!("{:?}", event_loop.features()),
            Err(e) => format!("unavailable ({e})"),
        };
        let mut out = self.machine.line(o.workload.name());
        let _ = writeln!(
            out,
            "ringloop features: uring {}, epoll {}",
            features(ringloop::Backend::Uring),
            features(ringloop::Backend::Epoll)
        );
        let _ = writeln!(
            out,
            "{} connections, pipeline {}, {} client, {:.2} s warm-up + {:.2} s measured, medians of {} interleaved repetitions after {} unmeasured (ratios: paired per repetition)",
            o.connections, o.pipeline, o.client.name(), o.warmup.as_secs_f64(), o.duration.as_secs_f64(), o.repeat, o.settle
        );
        out
    }

    /// The Markdown table: echo rows show the message size and MiB/s, HTTP rows do not; the
    /// first baseline (tokio) gets req/s and CPU ratios with their range, the others CPU.
    fn table(&self) -> String {
        let echo = self.options.workload == Workload::Echo;
        let mut columns: Vec<String> = vec!["impl".into()];
        let echo_only = |name: &str| echo.then(|| name.to_string());
        columns.extend(echo_only("size"));
        columns.push("req/s".into());
        columns.extend(echo_only("MiB/s"));
        columns.extend(["p50 µs", "p99 µs", "server CPU µs/req", "switches/req"].map(String::from));
        for (i, base) in self.baselines().iter().enumerate() {
            if i == 0 {
                columns.push(format!("req/s vs {base}"));
                columns.push(format!("CPU/req vs {base} (lowest–highest)"));
            } else {
                columns.push(format!("CPU/req vs {base}"));
            }
        }
        let head = format!("| {} |", columns.join(" | "));
        let rule = format!("|---|{}", "---:|".repeat(columns.len() - 1));
        let mut out = format!("{head}\n{rule}\n");
        for row in &self.rows() {
            out += &self.table_row(row, echo);
        }
        out
    }

    /// A JSON array, one object per (implementation, size).
    fn json(&self) -> String {
        let rows = self.rows();
        let mut out = String::from("[\n");
        for (i, row) in rows.iter().enumerate() {
            out += &self.json_row(row);
            out += if i + 1 < rows.len() { ",\n" } else { "\n" };
        }
        out.push_str("]\n");
        out
    }
}
