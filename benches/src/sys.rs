//! The few Linux calls the runner needs: CPU pinning, a process's CPU time, the kernel version.

use std::io;

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

/// A process's CPU time so far (user + system, all threads), in microseconds, from
/// `/proc/<pid>/stat`. Resolution is one clock tick (usually 10 ms).
pub fn process_cpu_micros(pid: u32) -> io::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {path}: {e}")))?;
    let ticks = parse_stat_cpu_ticks(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("parsing {path}")))?;
    // SAFETY (in syscall!): sysconf takes no pointers.
    let hz = syscall!(sysconf(libc::_SC_CLK_TCK))?.max(1) as u64;
    Ok(ticks * 1_000_000 / hz)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted from its closing `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace().skip(11); // field 3 is the first here
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The running kernel's release, as `uname -r` prints it.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_string())
}

/// Sets `TCP_NODELAY` on a raw socket fd.
pub fn set_nodelay(fd: std::os::fd::RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY (in syscall!): `one` outlives the call and `len` is its size.
    syscall!(setsockopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        (&one as *const libc::c_int).cast(),
        len
    ))
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_tricky_command_name() {
        let line = "1234 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 111 222 0 0 20 0 1";
        assert_eq!(parse_stat_cpu_ticks(line), Some(333));
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(process_cpu_micros(std::process::id()).is_ok());
    }
}
