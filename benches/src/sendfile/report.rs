//! The `sendfile` results: one [`Run`] per window, summarised per (implementation, clients)
//! as medians over rounds, with ratios to `raw-sendfile` paired per round (each window
//! divided by raw-sendfile's window of the same round), printed as a table or as JSON.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::Options;
use crate::report::{json_number, median_of, runs_by, Machine, Printed, Versus};
use crate::server::{Impl, Workload};

/// One window.
#[derive(Debug, Clone)]
pub struct Run {
    /// The server.
    pub which: Impl,
    /// Connections that received the file at once.
    pub clients: usize,
    /// Which round (from 1; 0 is the warm-up): runs of the same round ran side by side.
    pub rep: usize,
    /// File bytes received per second, all connections together, in MiB.
    pub mib_per_sec: f64,
    /// The server's CPU time (all threads) per MiB sent, µs.
    pub cpu_micros_per_mib: f64,
    /// The part of it spent off the server's main thread (io_uring's io-wq workers, the copy's
    /// feeder threads), µs per MiB.
    pub off_main_micros_per_mib: f64,
}

/// Everything one `sendfile` command measured, and the context to read it in.
#[derive(Debug)]
pub struct Report {
    /// The options it ran with.
    pub options: Options,
    /// Where it ran.
    pub machine: Machine,
    /// The file sent.
    pub file: PathBuf,
    /// Every measured window, in the order run.
    pub runs: Vec<Run>,
}

/// The medians of one (implementation, clients).
struct Row {
    which: Impl,
    clients: usize,
    /// Each round's MiB/s and CPU µs per MiB, in order.
    reps: Vec<(f64, f64)>,
    mib_per_sec: f64,
    cpu_micros_per_mib: f64,
    off_main_micros_per_mib: f64,
    /// Against the baseline's window of the same round.
    versus: Option<Versus>,
}

impl Report {
    /// An empty report.
    pub fn new(options: &Options, cpus: usize, pinned: bool, file: PathBuf) -> Report {
        let machine = Machine { cpus, pinned };
        Report { options: options.clone(), machine, file, runs: Vec::new() }
    }

    /// The baseline every row is divided by.
    fn baseline() -> Impl {
        Workload::Sendfile.baselines()[0]
    }

    fn rows(&self) -> Vec<Row> {
        let (clients, impls) = (&self.options.clients, &self.options.impls);
        let groups = runs_by(&self.runs, clients, impls, |r| (r.which, r.clients));
        groups.into_iter().map(|(which, clients, runs)| self.row(which, clients, &runs)).collect()
    }

    /// The medians of `runs`, the runs of `which` with `clients` connections.
    fn row(&self, which: Impl, clients: usize, runs: &[&Run]) -> Row {
        let of = |f: fn(&Run) -> f64| median_of(runs, f);
        Row {
            which,
            clients,
            reps: runs.iter().map(|r| (r.mib_per_sec, r.cpu_micros_per_mib)).collect(),
            mib_per_sec: of(|r| r.mib_per_sec),
            cpu_micros_per_mib: of(|r| r.cpu_micros_per_mib),
            off_main_micros_per_mib: of(|r| r.off_main_micros_per_mib),
            versus: self.versus(runs),
        }
    }

    /// Pairs each of `runs` with the baseline's run of the same clients and round.
    fn versus(&self, runs: &[&Run]) -> Option<Versus> {
        let (mut rates, mut cpus) = (Vec::new(), Vec::new());
        for run in runs {
            let base = self.runs.iter().find(|b| {
                b.which == Self::baseline() && b.clients == run.clients && b.rep == run.rep
            })?;
            rates.push(run.mib_per_sec / base.mib_per_sec);
            cpus.push(run.cpu_micros_per_mib / base.cpu_micros_per_mib);
        }
        Some(Versus::from_ratios(rates, cpus))
    }

    fn json_row(&self, row: &Row) -> String {
        let o = &self.options;
        let num = json_number;
        let list = |f: fn(&(f64, f64)) -> f64| {
            row.reps.iter().map(|r| num(f(r))).collect::<Vec<_>>().join(", ")
        };
        let key = Self::baseline().to_string().replace('-', "_");
        let v = row.versus.unwrap_or(Versus::NAN);
        format!(
            "  {{\"workload\": \"sendfile\", \"impl\": \"{}\", \"clients\": {}, \"file_mib\": {}, \
             \"repeat\": {}, \"discard\": \"{}\", \"kernel\": \"{}\", \"pinned\": {}, \
             \"mib_per_s\": {}, \"server_cpu_us_per_mib\": {}, \
             \"server_cpu_us_per_mib_off_main_thread\": {}, \"mib_per_s_vs_{key}\": {}, \
             \"cpu_per_mib_vs_{key}\": {}, \"cpu_per_mib_vs_{key}_lowest\": {}, \
             \"cpu_per_mib_vs_{key}_highest\": {}, \"mib_per_s_reps\": [{}], \
             \"server_cpu_us_per_mib_reps\": [{}]}}",
            row.which,
            row.clients,
            o.size_mib,
            o.repeat,
            o.discard.name(),
            crate::sys::kernel_release(),
            self.machine.pinned,
            num(row.mib_per_sec),
            num(row.cpu_micros_per_mib),
            num(row.off_main_micros_per_mib),
            num(v.rate),
            num(v.cpu),
            num(v.cpu_lowest),
            num(v.cpu_highest),
            list(|r| r.0),
            list(|r| r.1),
        )
    }
}

impl Printed for Report {
    /// The context lines printed above the table.
    fn header(&self) -> String {
        let o = &self.options;
        let mut out = self.machine.line("sendfile");
        let _ = writeln!(
            out,
            "a {} MiB page-cached file ({}), sent whole to every connection; clients discard by {}",
            o.size_mib,
            self.file.display(),
            match o.discard {
                super::Discard::Read => "read(2) into a 256 KiB buffer",
                super::Discard::Splice => "splice(2) to /dev/null",
            }
        );
        let _ = writeln!(
            out,
            "medians of {} interleaved rounds; ratios to {} paired per round",
            o.repeat,
            Self::baseline()
        );
        out
    }

    /// The Markdown table.
    fn table(&self) -> String {
        let base = Self::baseline();
        let mut out = format!(
            "| impl | clients | MiB/s | server CPU µs/MiB | of which off the main thread | \
             MiB/s vs {base} | CPU/MiB vs {base} (lowest–highest) |\n\
             |---|---:|---:|---:|---:|---:|---:|\n"
        );
        for row in self.rows() {
            let _ = write!(
                out,
                "| {} | {} | {:.0} | {:.1} | {:.1} |",
                row.which,
                row.clients,
                row.mib_per_sec,
                row.cpu_micros_per_mib,
                row.off_main_micros_per_mib
            );
            out += &match row.versus {
                Some(v) => format!(
                    " {:.2}× | {:.2}× ({:.2}–{:.2}) |\n",
                    v.rate, v.cpu, v.cpu_lowest, v.cpu_highest
                ),
                None => " - | - |\n".into(),
            };
        }
        out
    }

    /// A JSON array, one object per (implementation, clients).
    fn json(&self) -> String {
        let rows = self.rows();
        let items: Vec<String> = rows.iter().map(|row| self.json_row(row)).collect();
        format!("[\n{}\n]\n", items.join(",\n"))
    }
}
