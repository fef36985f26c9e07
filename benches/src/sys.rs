//! The few Linux calls the runner and the raw servers need: CPU pinning, a process's CPU time
//! and context switches, the kernel version, pipes, `splice(2)` and `sendfile(2)`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Turns a libc call's `-1` into `io::Error::last_os_error()`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: each caller passes arguments that satisfy the named libc function's
        // contract (checked at the call site's own SAFETY comment).
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}
pub(crate) use syscall;

/// How many CPUs this process may run on.
pub fn cpus_available() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pins the calling thread (and the threads it spawns later) to CPU `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: `cpu_set_t` is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid `cpu_set_t` and CPU_SET bounds-checks `cpu` itself.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY (in syscall!): pid 0 is the calling thread; `set` lives across the call.
    syscall!(sched_setaffinity(0, size, &set))
        .map(drop)
        .map_err(|e| io::Error::new(e.kind(), format!("sched_setaffinity(cpu {cpu}): {e}")))
}

/// What the runner reads of a server process around a measured window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessSample {
    /// CPU time so far, all threads, in nanoseconds (the scheduler's own runtime accounting).
    pub cpu_nanos: u64,
    /// Context switches so far, all threads (voluntary ones are the times it went to sleep).
    pub switches: u64,
}

impl ProcessSample {
    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: ProcessSample) -> ProcessSample {
        ProcessSample {
            cpu_nanos: self.cpu_nanos.saturating_sub(earlier.cpu_nanos),
            switches: self.switches.saturating_sub(earlier.switches),
        }
    }
}

/// Reads `pid`'s CPU time and context switches, summed over its threads: the first field of
/// each `/proc/<pid>/task/<tid>/schedstat` (nanoseconds on the CPU, exact, unlike the tick
/// counts of `/proc/<pid>/stat`) and the `*ctxt_switches` lines of each thread's `status`.
pub fn sample_process(pid: u32) -> io::Result<ProcessSample> {
    let dir = format!("/proc/{pid}/task");
    let tasks =
        std::fs::read_dir(&dir).map_err(|e| io::Error::new(e.kind(), format!("{dir}: {e}")))?;
    let mut sample = ProcessSample::default();
    for task in tasks.flatten() {
        let path = task.path();
        // A thread that exits between read_dir and these reads simply stops counting.
        let Ok(schedstat) = std::fs::read_to_string(path.join("schedstat")) else { continue };
        let Ok(status) = std::fs::read_to_string(path.join("status")) else { continue };
        sample.cpu_nanos += parse_schedstat_nanos(&schedstat).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("parsing {path:?}/schedstat"))
        })?;
        sample.switches += parse_status_switches(&status);
    }
    Ok(sample)
}

/// The first field of a `schedstat` line: time spent on the CPU, in nanoseconds.
fn parse_schedstat_nanos(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// The CPU time of process `pid` so far, in nanoseconds, summed over all its threads,
/// **including those that have exited** (io_uring's io-wq workers come and go): its process
/// CPU clock (`clock_getcpuclockid` + `clock_gettime`), the time `getrusage(RUSAGE_SELF)`
/// reports inside it as `ru_utime + ru_stime`, to the nanosecond and readable from outside.
pub fn process_cpu_nanos(pid: u32) -> io::Result<u64> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: clock_getcpuclockid writes a clock id into the live `clock`; it returns the
    // error number itself rather than setting errno.
    let rc = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) };
    if rc != 0 {
        let e = io::Error::from_raw_os_error(rc);
        return Err(io::Error::new(e.kind(), format!("clock_getcpuclockid({pid}): {e}")));
    }
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY (in syscall!): clock_gettime writes into the live `now`.
    syscall!(clock_gettime(clock, &mut now))
        .map_err(|e| io::Error::new(e.kind(), format!("clock_gettime(CPU clock of {pid}): {e}")))?;
    Ok(now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64)
}

/// The CPU time of thread `tid` of process `pid` so far (the main thread: `tid == pid`), in
/// nanoseconds: the first field of `/proc/<pid>/task/<tid>/schedstat`.
pub fn thread_cpu_nanos(pid: u32, tid: u32) -> io::Result<u64> {
    let path = format!("/proc/{pid}/task/{tid}/schedstat");
    let schedstat = std::fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    parse_schedstat_nanos(&schedstat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("parsing {path}")))
}

/// `voluntary_ctxt_switches` + `nonvoluntary_ctxt_switches` of a `status` file.
fn parse_status_switches(status: &str) -> u64 {
    status
        .lines()
        .filter(|line| line.contains("ctxt_switches:"))
        .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// The running kernel's release, as `uname -r` prints it.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_string())
}

/// Sets `TCP_NODELAY` on a raw socket fd.
pub fn set_nodelay(fd: std::os::fd::RawFd) -> io::Result<()> {
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, &(1 as libc::c_int))
}

/// Makes `close` on a raw socket fd send a reset (`SO_LINGER` with a zero timeout), for tests
/// of servers whose clients vanish.
#[cfg(test)]
pub fn reset_on_close(fd: std::os::fd::RawFd) -> io::Result<()> {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_LINGER, &linger)
}

/// `setsockopt(fd, level, name, value)`, the option's size that of `T`.
fn setsockopt<T>(fd: std::os::fd::RawFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    let len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY (in syscall!): `value` outlives the call and `len` is its size.
    syscall!(setsockopt(fd, level, name, (value as *const T).cast(), len)).map(drop)
}

/// Raises `RLIMIT_NOFILE` to at least `want` (up to the hard limit; an error above it).
pub fn raise_nofile(want: u64) -> Result<(), String> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY (in syscall!): getrlimit writes into the live `lim`.
    syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut lim)).map_err(|e| format!("getrlimit: {e}"))?;
    if lim.rlim_cur >= want {
        return Ok(());
    }
    if lim.rlim_max < want {
        return Err(format!("RLIMIT_NOFILE hard limit {} < {want}", lim.rlim_max));
    }
    lim.rlim_cur = want;
    // SAFETY (in syscall!): setrlimit reads the live `lim`.
    syscall!(setrlimit(libc::RLIMIT_NOFILE, &lim)).map(drop).map_err(|e| format!("setrlimit: {e}"))
}

/// A new close-on-exec epoll instance.
pub fn epoll() -> io::Result<OwnedFd> {
    // SAFETY (in syscall!): epoll_create1 takes no pointers.
    let raw = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
    // SAFETY: a successful epoll_create1 returns a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `epoll_ctl(op)` of `fd` with `events` and `key`.
pub fn epoll_ctl(
    epoll: &OwnedFd,
    op: i32,
    fd: &impl AsRawFd,
    events: u32,
    key: u64,
) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    let mut event = libc::epoll_event { events, u64: key };
    // SAFETY (in syscall!): `event` lives across the call; both fds are open.
    syscall!(epoll_ctl(epoll.as_raw_fd(), op, fd, &mut event))
        .map(drop)
        .map_err(|e| io::Error::new(e.kind(), format!("epoll_ctl(fd {fd}): {e}")))
}

/// A close-on-exec pipe `(read end, write end)`, grown to 1 MiB where the system allows (as
/// ringloop's io_uring driver grows its splice pipes).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY (in syscall!): `fds` is a writable array of two ints, as pipe2 requires.
    syscall!(pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC))
        .map_err(|e| io::Error::new(e.kind(), format!("pipe2: {e}")))?;
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Unprivileged processes may meet a per-user limit (EPERM): the default size stays.
    // SAFETY (in syscall!): F_SETPIPE_SZ takes an int; the fd is open.
    let _ = syscall!(fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20));
    Ok((read, write))
}

/// The capacity of the pipe `fd` in bytes (`F_GETPIPE_SZ`).
pub fn pipe_capacity(fd: &impl AsRawFd) -> io::Result<usize> {
    // SAFETY (in syscall!): F_GETPIPE_SZ takes no argument; the fd is open.
    syscall!(fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ)).map(|n| n as usize)
}

/// Sets `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY (in syscall!): F_GETFL takes no argument; the fd is open.
    let flags = syscall!(fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
    // SAFETY (in syscall!): F_SETFL takes an int; the fd is open.
    syscall!(fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK)).map(drop)
}

/// `splice(2)` of up to `len` bytes from `from` to `to`: at `*offset` of `from`, advanced by
/// what moved, when given (a file), else from its position (a pipe or socket). The bytes
/// moved; 0 at the end of `from`.
pub fn splice(
    from: &impl AsRawFd,
    offset: Option<&mut i64>,
    to: &impl AsRawFd,
    len: usize,
    flags: libc::c_uint,
) -> io::Result<usize> {
    let offset = offset.map_or(std::ptr::null_mut(), |o| o as *mut i64);
    let (from, to) = (from.as_raw_fd(), to.as_raw_fd());
    let flags = flags | libc::SPLICE_F_MOVE;
    // SAFETY (in syscall!): `offset` is null or a live, exclusive i64 (loff_t); the output
    // offset is null (`to` is a pipe or socket); both fds are open.
    syscall!(splice(from, offset, to, std::ptr::null_mut(), len, flags)).map(|n| n as usize)
}

/// `sendfile(2)` of up to `len` bytes of `file` from `*offset` (advanced by what was sent) to
/// the socket `to`. The bytes sent; 0 at the end of the file.
pub fn sendfile(
    to: &impl AsRawFd,
    file: &impl AsRawFd,
    offset: &mut i64,
    len: usize,
) -> io::Result<usize> {
    let (to, file) = (to.as_raw_fd(), file.as_raw_fd());
    // SAFETY (in syscall!): `offset` is a live, exclusive off_t (64-bit here); both fds are
    // open.
    syscall!(sendfile(to, file, offset, len)).map(|n| n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_and_status_fields() {
        assert_eq!(parse_schedstat_nanos("123456789 2000 17\n"), Some(123_456_789));
        assert_eq!(parse_schedstat_nanos(""), None);
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t40\nnonvoluntary_ctxt_switches:\t2\n";
        assert_eq!(parse_status_switches(status), 42);
    }

    #[test]
    fn process_cpu_clock_keeps_the_time_of_exited_threads() {
        let me = std::process::id();
        let before = process_cpu_nanos(me).unwrap();
        let want = 20_000_000;
        // Another thread works until the process clock shows 20 ms more (5 s at most), and
        // exits: its time stays counted.
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            while process_cpu_nanos(me).unwrap() - before < want
                && start.elapsed() < std::time::Duration::from_secs(5)
            {
                std::hint::black_box(0u64);
            }
        })
        .join()
        .unwrap();
        let spent = process_cpu_nanos(me).unwrap() - before;
        assert!(spent >= want, "{spent} ns");
        assert!(thread_cpu_nanos(me, me).unwrap() > 0);
    }

    #[test]
    fn a_busy_process_cpu_time_grows() {
        // A child with one spinning thread: this test process's own threads come and go with
        // the other tests, and a thread that exits between two samples takes its time out of
        // the sum (this read as no growth about once in seven runs under load).
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("sh");
        let before = sample_process(child.id()).unwrap();
        // Some ticks: a running thread's runtime in schedstat is brought up to date only at a
        // tick or a switch, so a few milliseconds could read as none.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let after = sample_process(child.id()).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(after.since(before).cpu_nanos > 0, "{before:?} -> {after:?}");
    }
}
