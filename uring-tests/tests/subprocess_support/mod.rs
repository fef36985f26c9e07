//! Shared by the subprocess tests: a recording [`SubprocessProtocol`] that checks the order
//! of its callbacks, ways to start a child and wait for its end, and process-state probes.
// Each test file uses part of this module.
#![allow(dead_code)]

use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::fd::RawFd;
use std::rc::Rc;

use ringloop::subprocess::ProcessOptions;
use ringloop::{BaseProtocol, Error, EventLoop, SubprocessProtocol, SubprocessTransport};
use uring_tests::{errno_of, run_until, TempDir};

/// Generous bound for "this must happen" waits (2 shared cores, debug build).
pub const WAIT: f64 = 30.0;

/// One callback of a subprocess protocol.
#[derive(Clone, Debug, PartialEq)]
pub enum Sp {
    /// `connection_made`.
    Made,
    /// `pipe_data_received` on this fd.
    Data(RawFd),
    /// `pipe_connection_lost(fd, errno)`.
    PipeLost(RawFd, Option<i32>),
    /// `process_exited`, with the returncode the transport reported then.
    Exited(Option<i32>),
    /// `connection_lost`, with [`errno_of`] its error.
    Lost(Option<i32>),
    /// `pause_writing`.
    Pause,
    /// `resume_writing`.
    Resume,
}

/// Records every callback (data per fd), and what broke the protocol's call order.
#[derive(Default)]
pub struct Rec {
    /// The callbacks, in order (consecutive `Data` of one fd kept once).
    pub events: Vec<Sp>,
    /// What arrived on fds 0 (never), 1 and 2.
    pub out: [Vec<u8>; 3],
    /// The transport, from `connection_made` until `connection_lost`.
    pub transport: Option<SubprocessTransport>,
    /// Calls out of order.
    pub violations: Vec<String>,
    /// Errors of `pipe_connection_lost`, by fd.
    pub pipe_errors: Vec<(RawFd, Error)>,
    /// Panics in `pipe_data_received` on this fd (`quiet_panic`).
    pub panic_on_data: Option<RawFd>,
}

impl Rec {
    fn push(&mut self, event: Sp) {
        let ok = match (&event, self.events.last()) {
            (Sp::Made, None) => true,
            (_, None) | (Sp::Made, _) | (_, Some(Sp::Lost(_))) => false,
            (Sp::Exited(_), _) => !self.exited(),
            (Sp::PipeLost(fd, _), _) => !self.pipe_lost(*fd),
            (Sp::Data(fd), _) => !self.pipe_lost(*fd),
            (Sp::Lost(_), _) => self.exited(),
            _ => true,
        };
        if !ok {
            self.violations.push(format!("{event:?} after {:?}", self.events));
        }
        if !(matches!(event, Sp::Data(_)) && self.events.last() == Some(&event)) {
            self.events.push(event);
        }
    }

    /// `connection_lost` came.
    pub fn lost(&self) -> bool {
        self.events.iter().any(|e| matches!(e, Sp::Lost(_)))
    }

    /// `process_exited` came.
    pub fn exited(&self) -> bool {
        self.events.iter().any(|e| matches!(e, Sp::Exited(_)))
    }

    /// `pipe_connection_lost(fd)` came.
    pub fn pipe_lost(&self, fd: RawFd) -> bool {
        self.events.iter().any(|e| matches!(e, Sp::PipeLost(f, _) if *f == fd))
    }

    /// The errno `pipe_connection_lost(fd)` came with.
    pub fn pipe_errno(&self, fd: RawFd) -> Option<Option<i32>> {
        self.events.iter().find_map(|e| match e {
            Sp::PipeLost(f, errno) if *f == fd => Some(*errno),
            _ => None,
        })
    }

    /// Checks the whole life: made first, each of `pipes` lost once, exited once,
    /// `connection_lost(None)` last and once, nothing out of order.
    pub fn check_complete(&self, pipes: &[RawFd]) {
        assert!(self.violations.is_empty(), "out of order: {:?}", self.violations);
        assert_eq!(self.events.first(), Some(&Sp::Made), "{:?}", self.events);
        assert_eq!(self.events.last(), Some(&Sp::Lost(None)), "{:?}", self.events);
        for fd in pipes {
            let lost = self.events.iter().filter(|e| matches!(e, Sp::PipeLost(f, _) if f == fd));
            assert_eq!(lost.count(), 1, "pipe {fd} lost once: {:?}", self.events);
        }
        let others =
            self.events.iter().filter(|e| matches!(e, Sp::PipeLost(f, _) if !pipes.contains(f)));
        assert_eq!(others.count(), 0, "only pipes {pipes:?}: {:?}", self.events);
        let exits = self.events.iter().filter(|e| matches!(e, Sp::Exited(_))).count();
        assert_eq!(exits, 1, "{:?}", self.events);
    }

    /// The returncode `process_exited` saw.
    pub fn exit_code(&self) -> Option<i32> {
        self.events.iter().find_map(|e| match e {
            Sp::Exited(code) => *code,
            _ => None,
        })
    }
}

impl BaseProtocol<SubprocessTransport> for Rec {
    fn connection_made(&mut self, transport: SubprocessTransport) {
        self.push(Sp::Made);
        self.transport = Some(transport);
    }

    fn connection_lost(&mut self, error: Option<Error>) {
        self.push(Sp::Lost(errno_of(&error)));
        self.transport = None;
    }

    fn pause_writing(&mut self) {
        self.push(Sp::Pause);
    }

    fn resume_writing(&mut self) {
        self.push(Sp::Resume);
    }
}

impl SubprocessProtocol for Rec {
    fn pipe_data_received(&mut self, fd: RawFd, data: &[u8]) {
        assert!(!data.is_empty(), "empty pipe_data_received");
        self.push(Sp::Data(fd));
        self.out[fd as usize].extend_from_slice(data);
        if self.panic_on_data == Some(fd) {
            uring_tests::quiet_panic("pipe_data_received failed on purpose");
        }
    }

    fn pipe_connection_lost(&mut self, fd: RawFd, error: Option<Error>) {
        self.push(Sp::PipeLost(fd, errno_of(&error)));
        if let Some(error) = error {
            self.pipe_errors.push((fd, error));
        }
    }

    fn process_exited(&mut self) {
        let code = self.transport.as_ref().and_then(SubprocessTransport::get_returncode);
        self.push(Sp::Exited(code));
    }
}

/// Starts `program args` with a [`Rec`] (`Rec::default()` changed by `setup`).
pub fn exec_with(
    lp: &EventLoop,
    program: &str,
    args: &[&str],
    options: ProcessOptions,
    setup: impl FnOnce(&mut Rec),
) -> ringloop::Result<(SubprocessTransport, Rc<RefCell<Rec>>)> {
    let mut rec = Rec::default();
    setup(&mut rec);
    lp.run_until_complete(lp.subprocess_exec(move || rec, program, args, options)).unwrap()
}

/// Starts `program args` with a [`Rec`]; panics if that fails.
pub fn exec(
    lp: &EventLoop,
    program: &str,
    args: &[&str],
    options: ProcessOptions,
) -> (SubprocessTransport, Rc<RefCell<Rec>>) {
    exec_with(lp, program, args, options, |_| {})
        .unwrap_or_else(|e| panic!("{:?}: starting {program}: {e}", lp.backend()))
}

/// Runs the loop until `rec` got `connection_lost` (bounded).
pub fn until_lost(lp: &EventLoop, rec: &Rc<RefCell<Rec>>) {
    let done = run_until(lp, WAIT, || rec.borrow().lost());
    assert!(done, "{:?}: no connection_lost; events {:?}", lp.backend(), rec.borrow().events);
}

/// Writes `data` to the file `name` in `dir` and returns its path.
pub fn data_file(dir: &TempDir, name: &str, data: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, data).expect("writing the data file");
    path.to_str().expect("a UTF-8 temp path").to_owned()
}

/// The state letter of `pid` in `/proc/PID/stat` (`Z` for a zombie), if it exists.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the ")" that ends the command name: " S ...".
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Fields 5 and 6 of `/proc/PID/stat`: the process group and the session.
pub fn group_and_session(pid: u32) -> (u32, u32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the child's stat");
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // fields[0] is the state (field 3): ppid, pgrp, session follow.
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

/// Waits (sleeping, not running the loop) until `pid` is a zombie: exited, not reaped.
pub fn until_zombie(pid: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(WAIT as u64);
    while proc_state(pid) != Some('Z') {
        let state = proc_state(pid);
        assert!(std::time::Instant::now() < deadline, "pid {pid} never became a zombie: {state:?}");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// What `waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT)` says about this process's children:
/// `Err(ECHILD)` when it has none, `Ok(0)` when none exited, `Ok(pid)` for a zombie.
pub fn any_child() -> Result<i32, i32> {
    // SAFETY: all-zero is a valid siginfo_t.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: `info` is a valid, writable siginfo_t.
    let rc = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, flags) };
    if rc == -1 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: filled in by waitid (or zeroed: no child exited).
    Ok(unsafe { info.si_pid() })
}

/// Waits (sleeping) until this process has no child at all, as `waitid` sees it.
pub fn until_no_children() {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(WAIT as u64);
    loop {
        match any_child() {
            Err(libc::ECHILD) => return,
            other => {
                assert!(std::time::Instant::now() < deadline, "children left: {other:?}");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
}

/// `ls -1 /proc/self/fd` output as numbers: the fds a child has open (ls's own dir fd too).
pub fn parse_fds(listing: &[u8]) -> Vec<RawFd> {
    let text = std::str::from_utf8(listing).expect("ls output");
    let mut fds: Vec<RawFd> =
        text.lines().map(|l| l.trim().parse().expect("an fd number")).collect();
    fds.sort_unstable();
    fds
}

/// `s` as an `OsStr` (for `args` arrays of mixed sources).
pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}
