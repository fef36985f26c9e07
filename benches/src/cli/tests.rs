//! Option parsing and the report's formatting.

use super::*;
use crate::report::{Printed, Report, Run};
use crate::server::Techniques;

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Asserts that `parse` refuses each of `bad` (`what` names the command in the message).
fn all_refused<T>(what: &str, parse: impl Fn(&[String]) -> Result<T, String>, bad: &[&[&str]]) {
    for bad in bad {
        assert!(parse(&args(bad)).is_err(), "{what}{bad:?} accepted");
    }
}

#[test]
fn defaults_are_the_documented_ones() {
    for workload in [Workload::Echo, Workload::Http, Workload::Tls] {
        let o = parse_run(workload, &[]).unwrap();
        assert_eq!(o.impls, workload.impls());
        assert_eq!((o.connections, o.pipeline, o.repeat, o.json), (64, 1, 15, false));
        assert_eq!(o.settle, 0, "ping-pong rounds need no settling");
        assert_eq!((o.warmup, o.duration), (Duration::from_millis(50), Duration::from_millis(200)));
        // A default run stays within 70 s: sizes x repetitions x servers windows.
        let windows = (o.sizes.len() * o.repeat * o.impls.len()) as u32;
        assert!((o.warmup + o.duration) * windows <= Duration::from_secs(70), "{workload:?}");
    }
    assert_eq!(parse_run(Workload::Echo, &[]).unwrap().sizes, [64, 1024, 16384]);
    let echo = parse_run(Workload::Echo, &[]).unwrap().impls;
    assert!(echo.contains(&Impl::RawUringMax(Techniques::MAX)) && echo.contains(&Impl::RawEpoll));
    assert_eq!(parse_run(Workload::Http, &[]).unwrap().sizes, [http::RESPONSE.len()]);
    let tls = parse_run(Workload::Tls, &[]).unwrap();
    assert_eq!((tls.sizes.as_slice(), tls.handshakes, tls.idle), (&[1024][..], 200, 1000));
    assert_eq!(tls.impls, [Impl::RingloopUring, Impl::RingloopEpoll, Impl::Tokio]);
}

#[test]
fn tls_options_parse_and_belong_to_tls_only() {
    let o = parse_run(Workload::Tls, &args(&["--handshakes", "5", "--idle", "7", "--sizes", "64"]))
        .unwrap();
    assert_eq!((o.handshakes, o.idle, o.sizes.as_slice()), (5, 7, &[64][..]));
    assert!(parse_run(Workload::Echo, &args(&["--handshakes", "5"])).is_err());
    assert!(parse_run(Workload::Http, &args(&["--idle", "5"])).is_err());
    assert_eq!(Workload::parse("tls"), Ok(Workload::Tls));
}

#[test]
fn options_are_parsed() {
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
        "tokio,raw-uring,raw-uring-max-no-link",
        "--json",
    ];
    let o = parse_run(Workload::Echo, &args(&list)).unwrap();
    assert_eq!((o.connections, o.pipeline, o.repeat, o.json), (8, 4, 5, true));
    assert_eq!(o.sizes, [1, 2]);
    assert_eq!((o.warmup, o.duration), (Duration::ZERO, Duration::from_millis(500)));
    let no_link = Techniques { link: false, ..Techniques::MAX };
    assert_eq!(o.impls, [Impl::Tokio, Impl::RawUring, Impl::RawUringMax(no_link)]);
    let o = parse_run(
        Workload::Http,
        &args(&["--impls", "ringloop-streams-epoll", "--pipeline", "16"]),
    )
    .unwrap();
    assert_eq!((o.impls.as_slice(), o.pipeline), (&[Impl::StreamsEpoll][..], 16));
    assert_eq!(o.settle, 20, "pipelined runs settle first (the documented default)");
    let o = parse_run(Workload::Echo, &args(&["--pipeline", "16", "--settle", "3"])).unwrap();
    assert_eq!(o.settle, 3);
    let o = parse_run(Workload::Echo, &args(&["--settle", "2"])).unwrap();
    assert_eq!((o.pipeline, o.settle), (1, 2));
    assert_eq!(parse_run(Workload::Echo, &[]).unwrap().client, ClientLoop::Uring);
    assert_eq!(parse_run(Workload::Tls, &[]).unwrap().client, ClientLoop::Epoll);
    let o = parse_run(Workload::Http, &args(&["--client", "epoll"])).unwrap();
    assert_eq!(o.client, ClientLoop::Epoll);
}

#[test]
fn another_builds_servers_are_named_at_alt() {
    let list = ["--impls", "ringloop-epoll,ringloop-epoll@alt", "--alt-exe", "/tmp/old-bench"];
    let o = parse_run(Workload::Echo, &args(&list)).unwrap();
    let alt = o.impls[1];
    assert_eq!((o.impls[0], alt.alt_base()), (Impl::RingloopEpoll, Some(Impl::RingloopEpoll)));
    assert_eq!(o.alt_exe.as_deref(), Some(std::path::Path::new("/tmp/old-bench")));
    assert_eq!(alt.to_string(), "ringloop-epoll@alt");
    assert_eq!(Impl::parse("ringloop-epoll@alt", Workload::Echo), Ok(alt));
    let hyper = Impl::parse("ringloop-hyper-uring@alt", Workload::Http).unwrap();
    assert_eq!(hyper.alt_base(), Some(Impl::HyperUring));
    assert_eq!(Impl::Tokio.alt_base(), None);
    let echo = |list: &[String]| parse_run(Workload::Echo, list);
    all_refused(
        "@alt",
        echo,
        &[
            &["--impls", "ringloop-epoll@alt"], // no --alt-exe
            &["--alt-exe", "/tmp/old-bench"],   // no @alt server
            &["--impls", "tokio@alt", "--alt-exe", "/tmp/old-bench"], // not ringloop
            &["--impls", "ringloop-hyper-uring@alt", "--alt-exe", "/x"], // not an echo server
        ],
    );
}

#[test]
fn bad_options_are_errors() {
    let echo = |list: &[String]| parse_run(Workload::Echo, list);
    all_refused(
        "",
        echo,
        &[
            &["--connections", "0"],
            &["--pipeline", "0"],
            &["--repeat", "0"],
            &["--sizes", "0"],
            &["--sizes", "x"],
            &["--duration", "-1"],
            &["--settle", "-1"],
            &["--settle"],
            &["--impls", "nginx"],
            &["--impls", "ringloop-streams-uring"],
            &["--connections"],
            &["--what"],
            &["--client", "kqueue"],
        ],
    );
    // The io_uring client speaks plain TCP only.
    assert!(parse_run(Workload::Tls, &args(&["--client", "uring"])).is_err());
    let http = |list: &[String]| parse_run(Workload::Http, list);
    let bad: [&[&str]; 3] =
        [&["--sizes", "64"], &["--impls", "raw-uring-max"], &["--impls", "raw-uring"]];
    all_refused("http ", http, &bad);
}

#[test]
fn serve_options_are_parsed() {
    let serve =
        parse_serve(&args(&["--workload", "http", "--impl", "tokio", "--cpu", "0"])).unwrap();
    assert_eq!(
        serve,
        Serve { workload: Workload::Http, which: Impl::Tokio, port: 0, cpu: Some(0), file: None }
    );
    assert_eq!(parse_serve(&args(&["--impl", "raw-uring"])).unwrap().workload, Workload::Echo);
    assert!(parse_serve(&args(&["--workload", "http", "--impl", "raw-uring"])).is_err());
    let list = ["--workload", "sendfile", "--impl", "raw-splice", "--file", "/tmp/f"];
    let serve = parse_serve(&args(&list)).unwrap();
    assert_eq!((serve.which, serve.file), (Impl::RawSplice, Some(PathBuf::from("/tmp/f"))));
    assert!(parse_serve(&args(&["--workload", "sendfile", "--impl", "tokio"])).is_err());
}

#[test]
fn sendfile_options_are_parsed() {
    let o = parse_sendfile(&[]).unwrap();
    assert_eq!(o.impls, Workload::Sendfile.impls());
    assert_eq!((o.size_mib, o.clients.as_slice(), o.repeat, o.json), (256, &[1, 8][..], 15, false));
    let list = [
        "--size",
        "16",
        "--clients",
        "2,4",
        "--repeat",
        "3",
        "--timeout",
        "5",
        "--discard",
        "splice",
        "--impls",
        "ringloop-copy,raw-sendfile",
        "--json",
    ];
    let o = parse_sendfile(&args(&list)).unwrap();
    assert_eq!((o.size_mib, o.clients.as_slice(), o.repeat, o.json), (16, &[2, 4][..], 3, true));
    assert_eq!((o.timeout, o.discard), (Duration::from_secs(5), sendfile::Discard::Splice));
    assert_eq!(o.impls, [Impl::RingloopCopy, Impl::RawSendfile]);
    all_refused(
        "sendfile ",
        parse_sendfile,
        &[
            &["--size", "0"],
            &["--clients", "0"],
            &["--repeat", "0"],
            &["--timeout", "0"],
            &["--discard", "mmap"],
            &["--impls", "tokio"],
            &["--sizes", "64"],
        ],
    );
}

fn run(which: Impl, size: usize, rep: usize, rate: f64, cpu: f64) -> Run {
    Run {
        which,
        size,
        rep,
        requests_per_sec: rate,
        p50_micros: 10.0 * rep as f64,
        p99_micros: 100.0 * rep as f64,
        cpu_micros_per_request: cpu,
        switches_per_request: 0.5,
    }
}

#[test]
fn echo_report_shows_mib_per_second_percentiles_and_ratios() {
    let list = ["--sizes", "1024", "--impls", "ringloop-uring,tokio,raw-uring-max"];
    let mut report = Report::new(&parse_run(Workload::Echo, &args(&list)).unwrap(), 2, true);
    let max = Impl::RawUringMax(Techniques::MAX);
    for rep in 1..=3 {
        report.runs.push(run(Impl::Tokio, 1024, rep, 2048.0, 10.0));
        report.runs.push(run(max, 1024, rep, 2048.0, 4.0));
        report.runs.push(run(Impl::RingloopUring, 1024, rep, 1024.0 * rep as f64, 5.0));
    }
    let table = report.table();
    let head =
        "| impl | size | req/s | MiB/s | p50 µs | p99 µs | server CPU µs/req | switches/req \
                | req/s vs tokio | CPU/req vs tokio (lowest–highest) | CPU/req vs raw-uring-max |";
    assert!(table.starts_with(&format!("{head}\n|---|{}\n", "---:|".repeat(10))), "{table}");
    // Medians over the repetitions: 2048 req/s of 1 KiB = 2.0 MiB/s, p50 20, p99 200.
    let uring = "| ringloop-uring | 1024 B | 2048 | 2.0 | 20 | 200 | 5.00 | 0.500 | 1.00× \
                 | 0.50× (0.50–0.50) | 1.25× |";
    assert!(table.contains(uring), "{table}");
    let json = report.json();
    assert!(json.starts_with("[\n") && json.ends_with("}\n]\n"), "{json}");
    assert!(
        json.contains("\"workload\": \"echo\", \"impl\": \"ringloop-uring\", \"size\": 1024"),
        "{json}"
    );
    assert!(
        json.contains("\"mib_per_s\": 2.000, \"p50_us\": 20.000, \"p99_us\": 200.000"),
        "{json}"
    );
    assert!(json.contains("\"cpu_per_req_vs_tokio\": 0.500"), "{json}");
    assert!(json.contains("\"cpu_per_req_vs_raw_uring_max\": 1.250"), "{json}");
}

#[test]
fn http_report_has_no_size_columns_and_ratios_to_tokio() {
    let list = ["--impls", "ringloop-streams-uring,tokio"];
    let mut report = Report::new(&parse_run(Workload::Http, &args(&list)).unwrap(), 2, true);
    let size = http::RESPONSE.len();
    for rep in 1..=3 {
        report.runs.push(run(Impl::Tokio, size, rep, 1000.0, 10.0));
        report.runs.push(run(Impl::StreamsUring, size, rep, 1100.0, 12.0));
    }
    let table = report.table();
    let head = "| impl | req/s | p50 µs | p99 µs | server CPU µs/req | switches/req \
                | req/s vs tokio | CPU/req vs tokio (lowest–highest) |";
    assert!(table.starts_with(&format!("{head}\n|---|{}\n", "---:|".repeat(7))), "{table}");
    let streams =
        "| ringloop-streams-uring | 1100 | 20 | 200 | 12.00 | 0.500 | 1.10× | 1.20× (1.20–1.20) |";
    assert!(table.contains(streams), "{table}");
    let json = report.json();
    assert!(
        json.contains("\"workload\": \"http\", \"impl\": \"ringloop-streams-uring\""),
        "{json}"
    );
    assert!(!json.contains("raw_uring"), "{json}");
}

#[test]
fn windows_with_no_answers_are_left_out() {
    let list = ["--sizes", "64", "--impls", "ringloop-uring,tokio"];
    let mut report = Report::new(&parse_run(Workload::Echo, &args(&list)).unwrap(), 2, true);
    for rep in 1..=3 {
        report.runs.push(run(Impl::Tokio, 64, rep, 1000.0, 10.0));
        report.runs.push(run(Impl::RingloopUring, 64, rep, 1000.0, 8.0));
    }
    report.runs[1].cpu_micros_per_request = f64::NAN; // a stalled window
    report.runs[1].p50_micros = f64::NAN;
    let table = report.table();
    // No raw-uring-max in the run: no column for it.
    let uring = "| ringloop-uring | 64 B | 1000 | 0.1 | 25 | 200 | 8.00 | 0.500 | 1.00× | 0.80× (0.80–0.80) |\n";
    assert!(table.contains(uring), "{table}");
}
