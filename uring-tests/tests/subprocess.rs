//! `subprocess_exec`/`subprocess_shell` with a `SubprocessProtocol` and the
//! `SubprocessTransport`, on every backend built in: callback order, output and input through
//! the pipes at the sizes around pipe and buffer limits, returncodes (minus the signal for a
//! signalled child), `close()`, signalling an exited child, the stdio choices and options,
//! and the errors of a child that cannot start.
//!
//! Every wait is bounded; nothing depends on timing beyond "eventually".

mod subprocess_support;

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use ringloop::subprocess::{ProcessOptions, Stdio};
use ringloop::{Error, PipeTransport, Signal};
use subprocess_support::*;
use uring_tests::{
    backend_tests, capture_error_texts, install_logger, my_warnings, pattern, pipe, run_until,
    TempDir,
};

/// A child that exits with `code` once it reads a line, and that line written: it exits
/// while the loop does not run, so it stays unreaped (a zombie) until the loop runs again.
/// (Started and left alone, a quick child may be reaped by the loop turn that ends
/// `run_until_complete`.)
fn exit_on_input(
    lp: &ringloop::EventLoop,
    code: i32,
) -> (ringloop::SubprocessTransport, std::rc::Rc<std::cell::RefCell<Rec>>) {
    let options = stdout_only().stdin(Stdio::Pipe);
    let script = format!("read line; exit {code}");
    let (transport, rec) = exec(lp, "sh", &["-c", &script], options);
    let stdin = transport.get_pipe_transport(0).unwrap();
    stdin.as_write().unwrap().write(b"go\n");
    (transport, rec)
}

/// Only stdout piped (stdin and stderr `/dev/null`).
fn stdout_only() -> ProcessOptions {
    ProcessOptions::new().stdin(Stdio::DevNull).stderr(Stdio::DevNull)
}

backend_tests! {
    fn callbacks_come_in_order_with_output_and_returncode(lp) {
        let script = "echo out; echo err >&2; read line; echo \"got $line\"; exit 3";
        let (transport, rec) = exec(lp, "sh", &["-c", script], ProcessOptions::new());
        assert!(transport.get_pid() > 0);
        assert_eq!(transport.get_returncode(), None);
        let stdin = transport.get_pipe_transport(0).expect("stdin is a pipe");
        assert!(transport.get_pipe_transport(1).unwrap().as_read().is_some());
        assert!(transport.get_pipe_transport(2).unwrap().as_read().is_some());
        assert!(transport.get_pipe_transport(3).is_none() && transport.get_pipe_transport(-1).is_none());
        stdin.as_write().expect("a write pipe").write(b"line\n");
        until_lost(lp, &rec);
        let rec = rec.borrow();
        rec.check_complete(&[0, 1, 2]);
        assert_eq!(rec.out[1], b"out\ngot line\n");
        assert_eq!(rec.out[2], b"err\n");
        assert_eq!(rec.exit_code(), Some(3), "process_exited sees the returncode");
        assert_eq!(transport.get_returncode(), Some(3));
        assert!(transport.is_closing(), "closing once connection_lost was sent");
        assert!(rec.transport.is_none());
    }

    fn a_signalled_child_reports_minus_the_signal(lp) {
        let (transport, rec) = exec(lp, "sleep", &["30"], stdout_only());
        transport.terminate().unwrap();
        until_lost(lp, &rec);
        assert_eq!(transport.get_returncode(), Some(-libc::SIGTERM));

        let (transport, rec) = exec(lp, "sleep", &["30"], stdout_only());
        transport.kill().unwrap();
        until_lost(lp, &rec);
        assert_eq!(transport.get_returncode(), Some(-libc::SIGKILL));

        // Killed by a signal it sent itself, and by one sent with send_signal.
        let (transport, rec) = exec(lp, "sh", &["-c", "kill -USR1 $$"], stdout_only());
        until_lost(lp, &rec);
        assert_eq!(transport.get_returncode(), Some(-libc::SIGUSR1));
        let (transport, rec) = exec(lp, "sleep", &["30"], stdout_only());
        transport.send_signal(Signal::SIGUSR2).unwrap(); // not SIGHUP: ignored under nohup
        until_lost(lp, &rec);
        assert_eq!(transport.get_returncode(), Some(-libc::SIGUSR2));
        rec.borrow().check_complete(&[1]);
    }

    fn signalling_an_exited_child_is_harmless(lp) {
        // Reaped first: nothing is sent, the code stays.
        let (transport, rec) = exec(lp, "true", &[], stdout_only());
        until_lost(lp, &rec);
        transport.kill().unwrap();
        transport.terminate().unwrap();
        transport.send_signal(Signal::SIGUSR1).unwrap();
        assert_eq!(transport.get_returncode(), Some(0), "not 255, not -9");

        // Exited but not reaped yet (a zombie): still harmless, still its own code.
        let (transport, rec) = exit_on_input(lp, 5);
        until_zombie(transport.get_pid());
        transport.kill().unwrap();
        until_lost(lp, &rec);
        assert_eq!(transport.get_returncode(), Some(5));
    }

    fn close_kills_a_running_child_and_pipes_close(lp) {
        // In debug mode a kill at close is logged (asyncio's "Close running child process").
        install_logger();
        lp.set_debug(true);
        let (transport, rec) = exec(lp, "sleep", &["30"], ProcessOptions::new());
        let pid = transport.get_pid();
        transport.close();
        assert_eq!(my_warnings("Close running child process: kill"), 1);
        assert!(transport.is_closing());
        transport.close();
        until_lost(lp, &rec);
        rec.borrow().check_complete(&[0, 1, 2]);
        assert_eq!(transport.get_returncode(), Some(-libc::SIGKILL));
        assert_eq!(proc_state(pid), None, "pid {pid} is gone (reaped)");
        for fd in 0..3 {
            assert!(transport.get_pipe_transport(fd).unwrap().is_closing());
        }
    }

    /// A loop closed with a child running: the child is killed and reaped, and the protocol,
    /// which keeps its transport, is let go of (no callback on the closed loop).
    fn closing_the_loop_with_a_child_running_kills_it_and_frees_the_protocol(lp) {
        let own = ringloop::EventLoop::with_backend(lp.backend()).unwrap();
        let (transport, rec) = exec(&own, "sleep", &["30"], ProcessOptions::new());
        let pid = transport.get_pid();
        drop(transport);
        own.close().unwrap();
        assert_eq!(proc_state(pid), None, "pid {pid} is gone (killed and reaped)");
        assert_eq!(std::rc::Rc::strong_count(&rec), 1, "the protocol was let go of");
        assert!(rec.borrow().transport.is_some(), "no connection_lost on a closed loop");
    }

    fn close_leaves_an_exited_child_alone(lp) {
        install_logger();
        lp.set_debug(true);
        let (transport, rec) = exit_on_input(lp, 7);
        until_zombie(transport.get_pid());
        transport.close();
        assert_eq!(my_warnings("Close running child process"), 0, "no kill");
        until_lost(lp, &rec);
        assert_eq!(transport.get_returncode(), Some(7), "not killed: its own code");
        rec.borrow().check_complete(&[0, 1]);
    }

    fn stdout_arrives_intact_at_pipe_and_buffer_boundaries(lp) {
        let dir = TempDir::for_test(lp, "stdout_boundaries");
        for size in [0, 1, 65_536, 65_537, 1_000_000] {
            let data = pattern(size);
            let file = data_file(&dir, &size.to_string(), &data);
            let (transport, rec) = exec(lp, "cat", &[&file], stdout_only());
            until_lost(lp, &rec);
            let rec = rec.borrow();
            assert!(rec.out[1] == data, "{size} bytes: got {} bytes", rec.out[1].len());
            assert_eq!(transport.get_returncode(), Some(0));
            rec.check_complete(&[1]);
        }
    }

    fn stdin_arrives_intact_at_pipe_and_buffer_boundaries(lp) {
        let dir = TempDir::for_test(lp, "stdin_boundaries");
        for size in [8_192, 8_193, 219_263, 219_264] {
            let data = pattern(size);
            let file = data_file(&dir, &size.to_string(), &data);
            // `cmp` exits 0 only if stdin is byte for byte the file.
            let options = stdout_only().stdin(Stdio::Pipe);
            let (transport, rec) = exec(lp, "cmp", &["-", &file], options);
            let stdin = transport.get_pipe_transport(0).unwrap();
            let stdin = stdin.as_write().unwrap();
            stdin.write(&data);
            stdin.write_eof();
            until_lost(lp, &rec);
            assert_eq!(transport.get_returncode(), Some(0), "{size} bytes: {:?}", rec.borrow().out);
            assert_eq!(rec.borrow().pipe_errno(0), Some(None), "stdin closed cleanly");
        }
    }

    fn a_full_stdin_pipe_pauses_and_resumes_the_protocol(lp) {
        let options = stdout_only().stdin(Stdio::Pipe).stdout(Stdio::DevNull);
        let (transport, rec) = exec(lp, "cat", &[], options);
        let stdin = transport.get_pipe_transport(0).unwrap();
        let stdin = stdin.as_write().unwrap().clone();
        // The pipe takes 64 KiB at most: the rest is buffered, far over the high-water mark.
        stdin.write(&vec![b'x'; 1 << 20]);
        assert_eq!(rec.borrow().events, [Sp::Made, Sp::Pause], "paused at once");
        let resumed = run_until(lp, WAIT, || rec.borrow().events.contains(&Sp::Resume));
        assert!(resumed, "{:?}", rec.borrow().events);
        stdin.close();
        until_lost(lp, &rec);
        rec.borrow().check_complete(&[0]);
        assert_eq!(transport.get_returncode(), Some(0));
    }

    fn stderr_can_merge_into_stdout(lp) {
        let options = ProcessOptions::new().stdin(Stdio::DevNull).stderr(Stdio::Stdout);
        let script = "echo a; echo b >&2; echo c; echo d >&2";
        let (transport, rec) = exec(lp, "sh", &["-c", script], options);
        assert!(transport.get_pipe_transport(2).is_none(), "stderr is not a pipe of its own");
        until_lost(lp, &rec);
        let rec = rec.borrow();
        assert_eq!(rec.out[1], b"a\nb\nc\nd\n");
        rec.check_complete(&[1]);
        assert!(!rec.events.contains(&Sp::Data(2)));
    }

    fn devnull_inherit_and_a_given_fd(lp) {
        // The child's fds, seen from here while it sleeps.
        let fd_of = |pid: u32, fd: i32| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
        let options = ProcessOptions::new().stdin(Stdio::DevNull).stdout(Stdio::DevNull);
        let (transport, rec) = exec(lp, "sleep", &["30"], options);
        let pid = transport.get_pid();
        assert!(transport.get_pipe_transport(0).is_none() && transport.get_pipe_transport(1).is_none());
        assert_eq!(fd_of(pid, 0).to_str(), Some("/dev/null"));
        assert_eq!(fd_of(pid, 1).to_str(), Some("/dev/null"));
        assert!(fd_of(pid, 2).to_str().unwrap().starts_with("pipe:"));
        transport.kill().unwrap();
        until_lost(lp, &rec);
        rec.borrow().check_complete(&[2]);
        // DevNull stdin reads EOF at once.
        let (transport, rec) = exec(lp, "cat", &[], stdout_only().stdout(Stdio::Pipe));
        until_lost(lp, &rec);
        assert_eq!((transport.get_returncode(), rec.borrow().out[1].len()), (Some(0), 0));

        // Inherit: the child's stdout and stderr are this process's.
        let options = ProcessOptions::new().stdout(Stdio::Inherit).stderr(Stdio::Inherit);
        let (transport, rec) = exec(lp, "sleep", &["30"], options);
        let pid = transport.get_pid();
        for fd in [1, 2] {
            let ours = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
            assert_eq!(fd_of(pid, fd), ours, "fd {fd}");
        }
        transport.close();
        until_lost(lp, &rec);
        rec.borrow().check_complete(&[0]);

        // A given fd: a pipe of our own, read after the child exited.
        let (reader, writer) = pipe(0);
        let mut reader = std::fs::File::from(reader);
        let options = stdout_only().stdout(Stdio::Fd(writer));
        let (transport, rec) = exec(lp, "echo", &["to our pipe"], options);
        assert!(transport.get_pipe_transport(1).is_none());
        until_lost(lp, &rec);
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        assert_eq!(text, "to our pipe\n", "the child wrote; ours was closed, so EOF came");
        rec.borrow().check_complete(&[]);
    }

    fn only_the_streams_and_pass_fds_are_inherited(lp) {
        // A stray fd that is *not* close-on-exec, and one to pass on under its number.
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two fds pipe writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both are new fds owned here.
        let stray = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // And one above the passed fd, not close-on-exec either.
        // SAFETY: F_DUPFD reads no memory; the copy is owned below.
        let above = unsafe { libc::fcntl(fds[0], libc::F_DUPFD, 950) };
        assert!(above >= 950);
        // SAFETY: a new fd owned here.
        let above = unsafe { OwnedFd::from_raw_fd(above) };
        let passed = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: F_DUPFD_CLOEXEC reads no memory; the copy is owned below.
        let high = unsafe { libc::fcntl(passed.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 900) };
        assert!(high >= 900);
        // SAFETY: a new fd owned here.
        let high = unsafe { OwnedFd::from_raw_fd(high) };
        let options = stdout_only().pass_fds([high.as_raw_fd()]);
        let (_, rec) = exec(lp, "ls", &["-1", "/proc/self/fd"], options);
        until_lost(lp, &rec);
        let listed = parse_fds(&rec.borrow().out[1]);
        // 0-2, ls's own directory fd (the lowest free: 3), and the passed fd.
        assert_eq!(listed, [0, 1, 2, 3, high.as_raw_fd()], "stray {stray:?} {above:?}");
        // The passed fd is open in the child without close-on-exec, as the same file.
        let options = stdout_only().pass_fds([high.as_raw_fd()]);
        let link = format!("/proc/self/fd/{}", high.as_raw_fd());
        let (_, rec) = exec(lp, "readlink", &[&link], options);
        until_lost(lp, &rec);
        assert_eq!(rec.borrow().out[1], b"/dev/null\n");
    }

    fn cwd_env_and_shell(lp) {
        let options = stdout_only().cwd("/");
        let (_, rec) = exec(lp, "pwd", &[], options);
        until_lost(lp, &rec);
        assert_eq!(rec.borrow().out[1], b"/\n");

        // A cleared environment: the program is still found (default PATH), and sees only
        // what was set.
        let options = stdout_only().env_clear().env("A", "1").env("B", "2").env_remove("B");
        let (_, rec) = exec(lp, "env", &[], options);
        until_lost(lp, &rec);
        assert_eq!(rec.borrow().out[1], b"A=1\n");

        let options = stdout_only().env("RINGLOOP_SUBPROCESS_TEST", "x y");
        let cmd = "echo \"$((6 * 7)) $RINGLOOP_SUBPROCESS_TEST\"; exit 4";
        let rec = Rec::default();
        let (transport, rec) =
            lp.run_until_complete(lp.subprocess_shell(move || rec, cmd, options)).unwrap().unwrap();
        until_lost(lp, &rec);
        assert_eq!(rec.borrow().out[1], b"42 x y\n");
        assert_eq!(transport.get_returncode(), Some(4));
    }

    fn process_group_and_new_session(lp) {
        let (_, our_session) = group_and_session(std::process::id());
        let (transport, rec) = exec(lp, "sleep", &["30"], stdout_only().process_group(0));
        let pid = transport.get_pid();
        assert_eq!(group_and_session(pid), (pid, our_session), "a group of its own");
        transport.kill().unwrap();
        until_lost(lp, &rec);

        let (transport, rec) = exec(lp, "sleep", &["30"], stdout_only().start_new_session());
        let pid = transport.get_pid();
        assert_eq!(group_and_session(pid), (pid, pid), "a session of its own");
        transport.close();
        until_lost(lp, &rec);

        let both = stdout_only().process_group(0).start_new_session();
        let err = exec_with(lp, "true", &[], both, |_| {}).err().expect("refused");
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    }

    fn a_child_that_cannot_start_is_a_typed_error_naming_it(lp) {
        let err = exec_with(lp, "ringloop-no-such-program", &[], stdout_only(), |_| {}).err().unwrap();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
        let text = err.to_string();
        assert!(text.contains("\"ringloop-no-such-program\"") && text.contains("not found"), "{text}");

        let err = exec_with(lp, "/nonexistent/dir/prog", &[], stdout_only(), |_| {}).err().unwrap();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
        assert!(err.to_string().contains("/nonexistent/dir/prog"), "{err}");

        let dir = TempDir::for_test(lp, "not_executable");
        let file = data_file(&dir, "script", b"#!/bin/sh\n");
        let err = exec_with(lp, &file, &[], stdout_only(), |_| {}).err().unwrap();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
        assert!(err.to_string().contains("not executable"), "{err}");

        let options = stdout_only().cwd("/nonexistent-ringloop-dir");
        let err = exec_with(lp, "true", &[], options, |_| {}).err().unwrap();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
        let text = err.to_string();
        assert!(text.contains("working directory") && text.contains("/nonexistent-ringloop-dir"), "{text}");

        let options = ProcessOptions::new().stdin(Stdio::Stdout);
        let err = exec_with(lp, "true", &[], options, |_| {}).err().unwrap();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        let err = exec_with(lp, "true", &["a\0b"], stdout_only(), |_| {}).err().unwrap();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        let options = stdout_only().pass_fds([1]);
        let err = exec_with(lp, "true", &[], options, |_| {}).err().unwrap();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    }

    fn a_panic_in_pipe_data_received_closes_that_pipe(lp) {
        let seen = capture_error_texts(lp);
        let script = "echo to-stdout; sleep 0.2; echo to-stderr >&2";
        let (transport, rec) =
            exec_with(lp, "sh", &["-c", script], stdout_only().stderr(Stdio::Pipe), |rec| {
                rec.panic_on_data = Some(1);
            })
            .unwrap();
        until_lost(lp, &rec);
        let rec = rec.borrow();
        let (fd, error) = &rec.pipe_errors[0];
        assert_eq!(*fd, 1);
        assert!(matches!(error, Error::Panic(_)), "{error}");
        assert_eq!(rec.out[2], b"to-stderr\n", "the other pipe goes on");
        assert!(seen.borrow().iter().any(|t| t.contains("pipe_data_received")), "{:?}", seen.borrow());
        assert_eq!(transport.get_returncode(), Some(0));
        assert_eq!(rec.events.last(), Some(&Sp::Lost(None)));
    }

    fn get_and_set_protocol(lp) {
        let (transport, rec) = exec(lp, "sh", &["-c", "read x; echo $x"], ProcessOptions::new());
        let got = transport.get_protocol::<Rec>().expect("a Rec");
        assert!(std::rc::Rc::ptr_eq(&got, &rec));
        assert!(transport.get_protocol::<String>().is_none());
        let other = std::rc::Rc::new(std::cell::RefCell::new(Rec::default()));
        transport.set_protocol(other.clone());
        match transport.get_pipe_transport(0).unwrap() {
            PipeTransport::Write(stdin) => {
                stdin.write(b"switched\n");
                stdin.close();
            }
            PipeTransport::Read(_) => panic!("stdin is a write pipe"),
        }
        run_until(lp, WAIT, || other.borrow().lost());
        assert_eq!(other.borrow().out[1], b"switched\n");
        assert!(rec.borrow().out[1].is_empty());
    }
}
