//! The high-level subprocess API (`create_subprocess_exec`/`create_subprocess_shell` and
//! `Process`) on every backend built in: `communicate` with large data both ways, input and
//! output sizes around the pipe and buffer limits, reading after the exit, concurrent
//! `wait`s, a hundred children at once, signals, and merged stderr.

mod subprocess_support;

use std::rc::Rc;

use ringloop::subprocess::{ProcessOptions, Stdio};
use ringloop::{gather, Error, EventLoop, Process};
use subprocess_support::*;
use uring_tests::{backend_tests, pattern, TempDir};

/// Runs `future` on `lp` with a bound: a hang fails the test instead of stalling the suite.
fn run<T>(lp: &EventLoop, future: impl std::future::Future<Output = T>) -> T {
    let bounded = ringloop::wait_for(future, WAIT);
    lp.run_until_complete(bounded).unwrap().unwrap_or_else(|e| panic!("{:?}: {e}", lp.backend()))
}

/// Starts `program args`; panics if that fails.
fn start(lp: &EventLoop, program: &str, args: &[&str], options: ProcessOptions) -> Process {
    run(lp, lp.create_subprocess_exec(program, args, options)).unwrap()
}

backend_tests! {
    fn communicate_moves_10_mib_each_way_at_once(lp) {
        let input = pattern(10 << 20);
        let process = start(lp, "cat", &[], ProcessOptions::new());
        let (stdout, stderr) = run(lp, process.communicate(Some(&input))).unwrap();
        let stdout = stdout.expect("stdout is a pipe");
        assert!(stdout == input, "{} bytes back of {}", stdout.len(), input.len());
        assert_eq!(stderr.as_deref(), Some(&b""[..]));
        assert_eq!(process.returncode(), Some(0));
    }

    fn stdin_arrives_intact_through_communicate(lp) {
        let dir = TempDir::for_test(lp, "communicate_boundaries");
        for size in [0, 8_192, 8_193, 219_263, 219_264] {
            let data = pattern(size);
            let file = data_file(&dir, &size.to_string(), &data);
            let process = start(lp, "cmp", &["-", &file], ProcessOptions::new());
            let (stdout, stderr) = run(lp, process.communicate(Some(&data))).unwrap();
            let report = (stdout.unwrap(), stderr.unwrap());
            assert_eq!(process.returncode(), Some(0), "{size} bytes: {report:?}");
        }
    }

    fn stdout_arrives_intact_through_the_reader(lp) {
        let dir = TempDir::for_test(lp, "reader_boundaries");
        for size in [65_536, 65_537, 1_000_000] {
            let data = pattern(size);
            let file = data_file(&dir, &size.to_string(), &data);
            let options = ProcessOptions::new().stdin(Stdio::DevNull).stderr(Stdio::DevNull);
            let process = start(lp, "cat", &[&file], options);
            let stdout = process.stdout.as_ref().unwrap();
            let got = run(lp, stdout.read_to_end()).unwrap();
            assert!(got == data, "{size} bytes: got {}", got.len());
            assert_eq!(run(lp, process.wait()), 0);
            assert!(stdout.at_eof());
        }
    }

    fn reading_stdout_after_the_exit_gives_the_rest_then_eof(lp) {
        // Less than the pipe and the reader's buffer hold, so the child can finish unread.
        let data = pattern(100_000);
        let dir = TempDir::for_test(lp, "after_exit");
        let file = data_file(&dir, "data", &data);
        let process = start(lp, "cat", &[&file], ProcessOptions::new().stdin(Stdio::DevNull));
        assert_eq!(run(lp, process.wait()), 0);
        let stdout = process.stdout.as_ref().unwrap();
        let first = run(lp, stdout.readexactly(10)).unwrap();
        assert_eq!(first, data[..10]);
        let rest = run(lp, stdout.read_to_end()).unwrap();
        assert!(rest == data[10..], "the rest: {} bytes", rest.len());
        assert!(run(lp, stdout.read(100)).unwrap().is_empty(), "then EOF");
        assert_eq!(run(lp, process.stderr.as_ref().unwrap().read_to_end()).unwrap(), b"");
    }

    fn concurrent_waits_all_get_the_code(lp) {
        let options = ProcessOptions::new().stdin(Stdio::Pipe);
        let process = Rc::new(start(lp, "sh", &["-c", "read x; exit 42"], options));
        let waits: Vec<_> = (0..5)
            .map(|_| {
                let process = process.clone();
                lp.create_task(async move { process.wait().await }).unwrap()
            })
            .collect();
        let stdin = process.stdin.as_ref().unwrap();
        stdin.write(b"go\n").unwrap();
        let codes = run(lp, gather(waits)).unwrap();
        assert_eq!(codes, [42; 5]);
        assert_eq!(run(lp, process.wait()), 42, "and a wait after the exit");
    }

    fn a_hundred_children_at_once_are_all_reaped_with_their_codes(lp) {
        let options = || ProcessOptions::new().stdin(Stdio::DevNull).stderr(Stdio::DevNull);
        let children = (0..100).map(|i| {
            let lp = lp.clone();
            async move {
                let cmd = format!("echo {i}; exit {}", i % 7);
                let process = lp.create_subprocess_shell(cmd, options()).await?;
                let (stdout, _) = process.communicate(None).await?;
                Ok::<_, Error>((process.pid(), process.returncode(), stdout.unwrap()))
            }
        });
        let results = run(lp, gather(children)).unwrap();
        for (i, (pid, code, stdout)) in results.into_iter().enumerate() {
            assert_eq!(code, Some((i % 7) as i32), "child {i}");
            assert_eq!(stdout, format!("{i}\n").as_bytes(), "child {i}");
            assert_eq!(proc_state(pid), None, "child {i} (pid {pid}) reaped");
        }
    }

    fn signals_reach_the_child_and_its_code_says_so(lp) {
        let process = start(lp, "sleep", &["30"], ProcessOptions::new());
        process.terminate().unwrap();
        assert_eq!(run(lp, process.wait()), -libc::SIGTERM);
        let process = start(lp, "sleep", &["30"], ProcessOptions::new());
        // Not SIGINT: a job started in the background by a shell inherits it ignored.
        process.send_signal(ringloop::Signal::SIGUSR2).unwrap();
        assert_eq!(run(lp, process.wait()), -libc::SIGUSR2);
        // Killing a child that exited is harmless: its code stays, never 255.
        process.kill().unwrap();
        assert_eq!(process.returncode(), Some(-libc::SIGUSR2));
        let process = start(lp, "true", &[], ProcessOptions::new());
        assert_eq!(run(lp, process.wait()), 0);
        process.kill().unwrap();
        process.terminate().unwrap();
        assert_eq!(process.returncode(), Some(0));
    }

    fn merged_stderr_and_shell(lp) {
        let options = ProcessOptions::new().stderr(Stdio::Stdout);
        let cmd = "echo one; echo two >&2; echo three";
        let process = run(lp, lp.create_subprocess_shell(cmd, options)).unwrap();
        assert!(process.stderr.is_none());
        let (stdout, stderr) = run(lp, process.communicate(None)).unwrap();
        assert_eq!(stdout.as_deref(), Some(&b"one\ntwo\nthree\n"[..]));
        assert_eq!(stderr, None);
    }

    fn input_without_a_stdin_pipe_is_refused(lp) {
        let process = start(lp, "true", &[], ProcessOptions::new().stdin(Stdio::DevNull));
        assert!(process.stdin.is_none());
        let err = run(lp, process.communicate(Some(b"x"))).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        assert_eq!(run(lp, process.communicate(None)).unwrap().0.as_deref(), Some(&b""[..]));
        let err = run(lp, lp.create_subprocess_exec("true", [""; 0], ProcessOptions::new().limit(0)))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    }

    fn a_child_that_stops_reading_does_not_fail_communicate(lp) {
        // `head` reads one line and exits: the rest of the input meets a closed pipe.
        let process = start(lp, "head", &["-n", "1"], ProcessOptions::new());
        let mut input = b"first line\n".to_vec();
        input.extend(pattern(4 << 20));
        let (stdout, _) = run(lp, process.communicate(Some(&input))).unwrap();
        assert_eq!(stdout.as_deref(), Some(&b"first line\n"[..]));
        assert_eq!(process.returncode(), Some(0));
    }

    fn the_stdin_writer_drains_and_closes(lp) {
        let process = start(lp, "wc", &["-c"], ProcessOptions::new());
        let stdin = process.stdin.clone().unwrap();
        let chunk = pattern(300_000);
        for _ in 0..4 {
            stdin.write(&chunk).unwrap();
            run(lp, stdin.drain()).unwrap();
        }
        stdin.close();
        run(lp, stdin.wait_closed()).unwrap();
        let count = run(lp, process.stdout.as_ref().unwrap().read_to_end()).unwrap();
        assert_eq!(String::from_utf8_lossy(&count).trim(), "1200000");
        assert_eq!(run(lp, process.wait()), 0);
    }
}
