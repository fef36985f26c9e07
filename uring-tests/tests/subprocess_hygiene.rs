//! What subprocesses leave behind, on every backend built in: no fd and no zombie after a
//! thousand children, after a loop closed with children running (or just exited: their
//! returncode is kept), after a start given up or
//! a child that could not start; and the process's signal state: `add_signal_handler` keeps
//! working with children running, and SIGCHLD is never taken from anyone (no handler, no
//! reaping of children ringloop did not spawn).
//!
//! Each test counts this process's fds and children, so each runs alone in a child process
//! of the test binary (`in_child`).

mod subprocess_support;

use std::cell::Cell;
use std::io::Write;
use std::rc::Rc;

use ringloop::subprocess::{ProcessOptions, Stdio};
use ringloop::{gather, Error, EventLoop, Signal};
use subprocess_support::*;
use uring_tests::{backend_tests, in_child, open_fds, run_ready, run_until, settle};

/// Runs `future` on `lp`, bounded.
fn run<T>(lp: &EventLoop, future: impl std::future::Future<Output = T>) -> T {
    let bounded = ringloop::wait_for(future, WAIT);
    lp.run_until_complete(bounded).unwrap().unwrap_or_else(|e| panic!("{:?}: {e}", lp.backend()))
}

/// The kinds of fd this process has open that a subprocess could leave: pidfds and pipes.
fn pidfds_and_pipes() -> (usize, usize) {
    let links = std::fs::read_dir("/proc/self/fd").unwrap().filter_map(|entry| {
        std::fs::read_link(entry.ok()?.path()).ok().map(|l| l.to_string_lossy().into_owned())
    });
    links.fold((0, 0), |(pidfds, pipes), link| {
        (
            pidfds + usize::from(link.contains("pidfd")),
            pipes + usize::from(link.starts_with("pipe:")),
        )
    })
}

/// The current disposition of SIGCHLD.
fn sigchld_handler() -> libc::sighandler_t {
    // SAFETY: all-zero is a valid sigaction; with a null new action, sigaction only reads.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `old` is a valid, writable sigaction.
    assert_eq!(unsafe { libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old) }, 0);
    old.sa_sigaction
}

backend_tests! {
    fn no_fd_or_zombie_is_left_after_a_thousand_children(lp) {
        if !in_child(lp, "no_fd_or_zombie_is_left_after_a_thousand_children") {
            return;
        }
        // Warm up whatever the loop makes on first use.
        let warm = run(lp, lp.create_subprocess_exec("true", [""; 0], ProcessOptions::new())).unwrap();
        run(lp, warm.communicate(None)).unwrap();
        drop(warm);
        settle(lp);
        let before = open_fds();
        for batch in 0..50 {
            let children = (0..20).map(|i| {
                let lp = lp.clone();
                async move {
                    let n = batch * 20 + i;
                    let options = ProcessOptions::new();
                    let process = lp.create_subprocess_exec("sh", ["-c", "exit $1", "sh", format!("{}", n % 5).as_str()], options).await?;
                    // Every other one is closed early, with its pipes still open.
                    if n % 2 == 0 {
                        process.transport().close();
                    }
                    let code = process.wait().await;
                    Ok::<_, Error>((n, code))
                }
            });
            for (n, code) in run(lp, gather(children)).unwrap() {
                assert!(code == n % 5 || (n % 2 == 0 && code == -libc::SIGKILL), "child {n}: {code}");
            }
        }
        settle(lp);
        assert!(run_until(lp, WAIT, || open_fds() == before), "fds: {} then {}", before, open_fds());
        assert_eq!(any_child(), Err(libc::ECHILD), "waitid finds no child, zombie or not");
        assert_eq!(pidfds_and_pipes().0, 0, "no pidfd");
    }

    fn closing_the_loop_kills_and_reaps_running_children(lp) {
        if !in_child(lp, "closing_the_loop_kills_and_reaps_running_children") {
            return;
        }
        let (pidfds, pipes) = pidfds_and_pipes();
        assert_eq!(pidfds, 0);
        let (transport, rec) = exec(lp, "sleep", &["30"], ProcessOptions::new());
        let process = run(lp, lp.create_subprocess_exec("sleep", ["30"], ProcessOptions::new())).unwrap();
        // One that is writing into a full stdin pipe, too.
        let (busy, _) = exec(lp, "sleep", &["30"], ProcessOptions::new());
        busy.get_pipe_transport(0).unwrap().as_write().unwrap().write(&vec![0; 1 << 20]);
        lp.close().unwrap();
        assert_eq!(transport.get_returncode(), Some(-libc::SIGKILL), "killed at close");
        assert_eq!(process.returncode(), Some(-libc::SIGKILL));
        assert_eq!(busy.get_returncode(), Some(-libc::SIGKILL));
        until_no_children();
        // Handles kept past the close hold no fd, and no callback ran on the closed loop.
        let (pidfds, pipes_after) = pidfds_and_pipes();
        assert_eq!(pidfds, 0, "pidfds left");
        assert!(pipes_after <= pipes, "pipes left: {pipes} before, {pipes_after} after");
        assert!(!rec.borrow().exited());
        drop((transport, process, busy));
    }

    fn closing_the_loop_right_after_a_child_exited_keeps_its_returncode(lp) {
        if !in_child(lp, "closing_the_loop_right_after_a_child_exited_keeps_its_returncode") {
            return;
        }
        // The child exits when told, while the loop does not run: its exit watch (a WAITID on
        // io_uring, woken by the exit) is cancelled by the close, too late to stop its reap.
        let (read, write) = uring_tests::pipe(libc::O_CLOEXEC);
        let options = ProcessOptions::new().stdin(read);
        let (transport, rec) = exec(lp, "sh", &["-c", "read line; exit 5"], options);
        std::fs::File::from(write).write_all(b"go\n").unwrap();
        until_zombie(transport.get_pid());
        lp.close().unwrap();
        assert_eq!(transport.get_returncode(), Some(5), "its exit status, not a kill at close");
        assert!(!rec.borrow().exited(), "a callback ran on the closed loop");
        until_no_children();
        assert_eq!(pidfds_and_pipes().0, 0, "pidfd left");
    }

    fn a_start_given_up_or_failed_leaves_nothing(lp) {
        if !in_child(lp, "a_start_given_up_or_failed_leaves_nothing") {
            return;
        }
        let before = open_fds();
        // Cancelled while connecting its pipes, after the spawn.
        let lp2 = lp.clone();
        let task = lp.create_task(async move {
            lp2.subprocess_exec(Rec::default, "sleep", ["30"], ProcessOptions::new()).await.map(|_| ())
        }).unwrap();
        run_ready(lp);
        task.cancel();
        let cancelled = run(lp, task);
        assert!(matches!(cancelled, Err(Error::Cancelled)), "{cancelled:?}");
        until_no_children();
        // Children that cannot start.
        for _ in 0..20 {
            let options = ProcessOptions::new().pass_fds([999_999]);
            let errors = [
                run(lp, lp.create_subprocess_exec("ringloop-no-such-program", [""; 0], ProcessOptions::new())).unwrap_err(),
                run(lp, lp.create_subprocess_exec("/etc/passwd", [""; 0], ProcessOptions::new())).unwrap_err(),
                run(lp, lp.create_subprocess_exec("true", [""; 0], ProcessOptions::new().cwd("/nonexistent"))).unwrap_err(),
                run(lp, lp.create_subprocess_exec("true", [""; 0], options)).unwrap_err(),
                run(lp, lp.create_subprocess_exec("true", [""; 0], ProcessOptions::new().stdout(Stdio::Stdout))).unwrap_err(),
            ];
            assert!(errors.iter().all(|e| matches!(e, Error::Io { .. } | Error::InvalidArgument { .. })), "{errors:?}");
        }
        settle(lp);
        assert!(run_until(lp, WAIT, || open_fds() == before), "fds: {} then {}", before, open_fds());
        assert_eq!(any_child(), Err(libc::ECHILD));
    }

    fn signal_handlers_keep_working_with_children_running(lp) {
        if !in_child(lp, "signal_handlers_keep_working_with_children_running") {
            return;
        }
        let (usr1, chld) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let (u, c) = (usr1.clone(), chld.clone());
        lp.add_signal_handler(Signal::SIGUSR1, move || u.set(u.get() + 1)).unwrap();
        lp.add_signal_handler(Signal::SIGCHLD, move || c.set(c.get() + 1)).unwrap();
        let running = run(lp, lp.create_subprocess_exec("sleep", ["30"], ProcessOptions::new())).unwrap();
        // From this process, then from a child.
        // SAFETY: kill takes no pointers.
        assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) }, 0);
        assert!(run_until(lp, WAIT, || usr1.get() >= 1));
        let sender = run(lp, lp.create_subprocess_shell("kill -USR1 $PPID", ProcessOptions::new())).unwrap();
        assert_eq!(run(lp, sender.wait()), 0);
        assert!(run_until(lp, WAIT, || usr1.get() >= 2), "{}", usr1.get());
        // The SIGCHLD handler runs for our children, and their codes are still ours.
        assert!(run_until(lp, WAIT, || chld.get() >= 1));
        running.kill().unwrap();
        assert_eq!(run(lp, running.wait()), -libc::SIGKILL);
        assert!(lp.remove_signal_handler(Signal::SIGCHLD).unwrap());
        assert!(lp.remove_signal_handler(Signal::SIGUSR1).unwrap());
        assert_eq!(sigchld_handler(), libc::SIG_DFL);
    }

    fn sigchld_is_not_taken_from_other_users(lp) {
        if !in_child(lp, "sigchld_is_not_taken_from_other_users") {
            return;
        }
        assert_eq!(sigchld_handler(), libc::SIG_DFL);
        // A child of this process that ringloop did not spawn, exiting while ringloop
        // spawns and reaps its own.
        let mut theirs = std::process::Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let ours = (0..10).map(|i| {
            let lp = lp.clone();
            async move {
                let process = lp.create_subprocess_shell(format!("exit {i}"), ProcessOptions::new()).await?;
                Ok::<_, Error>(process.wait().await)
            }
        });
        assert_eq!(run(lp, gather(ours)).unwrap(), (0..10).collect::<Vec<_>>());
        until_zombie(theirs.id());
        let (_, rec) = exec(lp, "true", &[], ProcessOptions::new());
        until_lost(lp, &rec);
        assert_eq!(sigchld_handler(), libc::SIG_DFL, "no SIGCHLD handler installed");
        assert_eq!(theirs.wait().unwrap().code(), Some(3), "their child is still theirs to reap");
    }
}
