//! An epoll selector: level-triggered readiness of many fds, waited on with ns-resolution timeouts.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::errno::Errno;

/// An epoll instance: register fds with an interest mask and a token, then
/// [`wait`](Poller::wait) for the ones that are ready.
///
/// Interests and readiness are `libc::EPOLL*` bits (`EPOLLIN`, `EPOLLOUT`, `EPOLLRDHUP`,
/// `EPOLLPRI`; `EPOLLERR` and `EPOLLHUP` are always reported). They have the numeric values of the
/// `poll(2)` bits. Registrations are level-triggered: the poller adds no flag of its own, so an fd
/// is reported by every wait for as long as it stays ready.
///
/// # Implementation
///
/// Waits use `epoll_pwait2` (Linux 5.11), whose timeout is a `timespec`. [`Poller::new`] probes it
/// with a zero-timeout wait; if it — or any later wait — fails with `ENOSYS` (an older kernel, or a
/// seccomp filter), the poller remembers that and uses `epoll_wait`, rounding timeouts *up* to
/// whole milliseconds so that a short positive timeout never becomes a busy poll.
#[derive(Debug)]
pub struct Poller {
    /// The epoll descriptor (close-on-exec; closed on drop).
    epfd: OwnedFd,
    /// Whether `epoll_pwait2` is usable; cleared for good the first time it fails with `ENOSYS`.
    pwait2: AtomicBool,
}

impl Poller {
    /// Creates a close-on-exec epoll instance and probes for `epoll_pwait2`.
    pub fn new() -> io::Result<Poller> {
        // SAFETY: epoll_create1 takes no pointers.
        let fd = Errno::result(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        let poller = Poller {
            // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
            pwait2: AtomicBool::new(true),
        };
        // Nothing is registered yet, so this returns at once (or clears `pwait2` on ENOSYS).
        poller.wait(&mut Events::with_capacity(1), Some(Duration::ZERO))?;
        Ok(poller)
    }

    /// Whether waits use `epoll_pwait2` (ns timeouts) rather than `epoll_wait` (ms timeouts).
    pub fn uses_epoll_pwait2(&self) -> bool {
        self.pwait2.load(Ordering::Relaxed)
    }

    /// Starts watching `fd` for `interest`; its events will carry `token`.
    ///
    /// Fails with the `epoll_ctl(2)` errno: `EEXIST` if `fd` is already registered, `EPERM` if it
    /// does not support polling (a regular file or a directory), `EBADF` if it is not open.
    pub fn add(&self, fd: RawFd, interest: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, interest, token)
    }

    /// Replaces the interest and token of a registered `fd` (`ENOENT` if it is not registered).
    pub fn modify(&self, fd: RawFd, interest: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, interest, token)
    }

    /// Stops watching `fd` (`ENOENT` if it is not registered, `EBADF` if it is closed).
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, interest: u32, token: u64) -> io::Result<()> {
        // Kernels before 2.6.9 require a non-null event even for EPOLL_CTL_DEL.
        let mut event = libc::epoll_event { events: interest, u64: token };
        // SAFETY: `event` is a live epoll_event the kernel only reads during the call.
        Errno::result(unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut event) })?;
        Ok(())
    }

    /// Waits until a registered fd is ready or `timeout` passes (`None`: forever; `Some(ZERO)`:
    /// just look). Fills `events` (replacing what it held) and returns how many it holds. An
    /// interrupted wait (`EINTR`) goes on for the time left: a signal ends it only through an
    /// fd it makes ready (a wakeup fd its handler writes).
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        let deadline = timeout.and_then(|t| std::time::Instant::now().checked_add(t));
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
            match self.wait_once(events, left.or(timeout)) {
                // Interrupted (a signal, or task work the kernel queued for this thread): wait
                // again for the time left, as Python's selectors do (PEP 475). A signal a loop
                // handles also wakes its eventfd, so the next wait returns at once.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }

    /// One `epoll_pwait2` (or `epoll_wait`) call.
    fn wait_once(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        events.len = 0;
        let mut result = Err(io::Error::from_raw_os_error(libc::ENOSYS));
        if self.uses_epoll_pwait2() {
            result = self.epoll_pwait2(events, timeout);
            if matches!(&result, Err(e) if e.raw_os_error() == Some(libc::ENOSYS)) {
                self.pwait2.store(false, Ordering::Relaxed);
            }
        }
        if !self.uses_epoll_pwait2() {
            result = self.epoll_wait(events, timeout);
        }
        let n = result?;
        events.len = n;
        Ok(n)
    }

    fn epoll_pwait2(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        let timespec = timeout.map(KernelTimespec::from);
        let timespec_ptr = timespec.as_ref().map_or(ptr::null(), |ts| ts as *const KernelTimespec);
        // SAFETY: the buffer pointer and `max_events` describe `events.list`, which the kernel may
        // fill during the call; `timespec_ptr` is null (wait forever) or points to a live
        // `KernelTimespec` (the layout of `struct __kernel_timespec`); the sigmask is null, so its
        // size is ignored. Every argument is passed as a `long`, as `syscall(2)` reads them.
        let n = Errno::result(unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                self.epfd.as_raw_fd() as libc::c_long,
                events.list.as_mut_ptr(),
                events.max_events() as libc::c_long,
                timespec_ptr,
                ptr::null::<libc::sigset_t>(),
                0 as libc::c_long,
            )
        })?;
        Ok(n as usize)
    }

    fn epoll_wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        let millis = match timeout {
            None => -1,
            // Round up: 1ns must wait 1ms, not 0 (which would be a busy poll).
            Some(d) => {
                d.as_nanos().div_ceil(1_000_000).min(libc::c_int::MAX as u128) as libc::c_int
            }
        };
        // SAFETY: the buffer pointer and `max_events` describe `events.list`, which the kernel may
        // fill during the call.
        let n = Errno::result(unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                events.list.as_mut_ptr(),
                events.max_events(),
                millis,
            )
        })?;
        Ok(n as usize)
    }
}

impl AsRawFd for Poller {
    fn as_raw_fd(&self) -> RawFd {
        self.epfd.as_raw_fd()
    }
}

/// `struct __kernel_timespec`: 64-bit seconds and nanoseconds on every architecture, unlike
/// `libc::timespec` on 32-bit targets.
#[repr(C)]
struct KernelTimespec {
    /// Whole seconds.
    tv_sec: i64,
    /// Nanoseconds, below one second.
    tv_nsec: i64,
}

impl From<Duration> for KernelTimespec {
    fn from(d: Duration) -> KernelTimespec {
        // The kernel saturates a deadline beyond its range, so clamping only the seconds is enough.
        KernelTimespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(d.subsec_nanos()),
        }
    }
}

/// The buffer one [`Poller::wait`] fills: up to [`capacity`](Events::capacity) ready fds, each as
/// `(token, readiness bits)`.
pub struct Events {
    /// Kernel-filled records; only the first `len` are meaningful.
    list: Box<[libc::epoll_event]>,
    /// How many records the last wait filled.
    len: usize,
}

impl Events {
    /// Creates a buffer for up to `capacity` events per wait (at least one).
    pub fn with_capacity(capacity: usize) -> Events {
        let capacity = capacity.clamp(1, libc::c_int::MAX as usize);
        Events { list: vec![libc::epoll_event { events: 0, u64: 0 }; capacity].into(), len: 0 }
    }

    /// The most events one wait can return.
    pub fn capacity(&self) -> usize {
        self.list.len()
    }

    /// How many events the last wait returned.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the last wait returned no event.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets the events held.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The events of the last wait, as `(token, readiness bits)`.
    pub fn iter(&self) -> Iter<'_> {
        Iter { inner: self.list[..self.len].iter() }
    }

    fn max_events(&self) -> libc::c_int {
        // Cannot truncate: `with_capacity` clamps the capacity to `c_int::MAX`.
        self.list.len() as libc::c_int
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("capacity", &self.capacity())
            .field("events", &self.iter().collect::<Vec<_>>())
            .finish()
    }
}

impl<'a> IntoIterator for &'a Events {
    type Item = (u64, u32);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Iterator over the `(token, readiness bits)` pairs of an [`Events`].
pub struct Iter<'a> {
    /// The filled part of the buffer not yet yielded.
    inner: std::slice::Iter<'a, libc::epoll_event>,
}

impl Iterator for Iter<'_> {
    type Item = (u64, u32);

    fn next(&mut self) -> Option<(u64, u32)> {
        // Copies the fields out: `epoll_event` is packed on x86-64, so no references to them.
        self.inner.next().map(|event| (event.u64, event.events))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl fmt::Debug for Iter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter").field("remaining", &self.inner.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;
    use std::time::Instant;

    const IN: u32 = libc::EPOLLIN as u32;
    const OUT: u32 = libc::EPOLLOUT as u32;
    const HUP: u32 = libc::EPOLLHUP as u32;

    /// A non-blocking pipe: (read end, write end).
    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the live 2-element array.
        Errno::result(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })
            .unwrap();
        // SAFETY: both descriptors are fresh and owned by nobody else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn write_byte(fd: &OwnedFd) {
        // SAFETY: writes 1 byte from a static buffer to an open descriptor.
        Errno::result(unsafe { libc::write(fd.as_raw_fd(), b"x".as_ptr().cast(), 1) }).unwrap();
    }

    fn read_byte(fd: &OwnedFd) {
        let mut byte = 0u8;
        // SAFETY: reads at most 1 byte into a live local from an open descriptor.
        Errno::result(unsafe { libc::read(fd.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) })
            .unwrap();
    }

    fn poll_now(poller: &Poller, events: &mut Events) -> Vec<(u64, u32)> {
        poller.wait(events, Some(Duration::ZERO)).unwrap();
        events.iter().collect()
    }

    #[test]
    fn pipe_becomes_readable_and_stays_so_until_read() {
        let poller = Poller::new().unwrap();
        let mut events = Events::with_capacity(8);
        let (rx, tx) = pipe();
        poller.add(rx.as_raw_fd(), IN, 1).unwrap();
        assert_eq!(poll_now(&poller, &mut events), []);

        write_byte(&tx);
        assert_eq!(poller.wait(&mut events, Some(Duration::from_secs(5))).unwrap(), 1);
        assert_eq!(events.iter().collect::<Vec<_>>(), [(1, IN)]);
        // Level-triggered: still reported while unread.
        assert_eq!(poll_now(&poller, &mut events), [(1, IN)]);
        read_byte(&rx);
        assert_eq!(poll_now(&poller, &mut events), []);
        assert!(events.is_empty());
    }

    #[test]
    fn modify_changes_interest_and_token_and_delete_stops_events() {
        let poller = Poller::new().unwrap();
        let mut events = Events::with_capacity(8);
        let (_rx, tx) = pipe();
        let fd = tx.as_raw_fd();
        poller.add(fd, OUT, 2).unwrap();
        assert_eq!(poll_now(&poller, &mut events), [(2, OUT)]);
        assert_eq!(poller.add(fd, OUT, 2).unwrap_err().raw_os_error(), Some(libc::EEXIST));

        poller.modify(fd, IN, 3).unwrap(); // a write end never becomes readable
        assert_eq!(poll_now(&poller, &mut events), []);
        poller.modify(fd, OUT, 4).unwrap();
        assert_eq!(poll_now(&poller, &mut events), [(4, OUT)]);

        poller.delete(fd).unwrap();
        assert_eq!(poll_now(&poller, &mut events), []);
        assert_eq!(poller.delete(fd).unwrap_err().raw_os_error(), Some(libc::ENOENT));
        assert_eq!(poller.modify(fd, OUT, 5).unwrap_err().raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn hangup_is_reported_without_interest() {
        let poller = Poller::new().unwrap();
        let mut events = Events::with_capacity(8);
        let (rx, tx) = pipe();
        poller.add(rx.as_raw_fd(), 0, 9).unwrap();
        assert_eq!(poll_now(&poller, &mut events), []);
        drop(tx);
        assert_eq!(poll_now(&poller, &mut events), [(9, HUP)]);
    }

    #[test]
    fn ctl_errors_carry_the_errno() {
        let poller = Poller::new().unwrap();
        assert_eq!(poller.add(-1, IN, 0).unwrap_err().raw_os_error(), Some(libc::EBADF));
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let err = poller.add(file.as_raw_fd(), IN, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    }

    #[test]
    fn wait_returns_at_most_capacity_events() {
        let poller = Poller::new().unwrap();
        let pipes: Vec<_> = (0..3).map(|_| pipe()).collect();
        for (token, (rx, tx)) in pipes.iter().enumerate() {
            poller.add(rx.as_raw_fd(), IN, token as u64).unwrap();
            write_byte(tx);
        }
        let mut events = Events::with_capacity(2);
        assert_eq!(events.capacity(), 2);
        assert_eq!(poller.wait(&mut events, Some(Duration::ZERO)).unwrap(), 2);
        assert_eq!(events.iter().len(), 2);
        assert_eq!(Events::with_capacity(0).capacity(), 1);
    }

    /// Asserts that a wait with nothing ready lasts at least `timeout` (and at least `floor`).
    fn assert_waits_at_least(poller: &Poller, timeout: Duration, floor: Duration) {
        let mut events = Events::with_capacity(1);
        let start = Instant::now();
        assert_eq!(poller.wait(&mut events, Some(timeout)).unwrap(), 0);
        let waited = start.elapsed();
        assert!(waited >= timeout.max(floor), "waited {waited:?} for a {timeout:?} timeout");
    }

    #[test]
    fn timeout_is_never_shorter_than_requested() {
        let poller = Poller::new().unwrap();
        assert_waits_at_least(&poller, Duration::from_millis(10), Duration::ZERO);
        assert_waits_at_least(&poller, Duration::from_micros(300), Duration::ZERO);
        assert_waits_at_least(&poller, Duration::from_nanos(1), Duration::ZERO);
    }

    #[test]
    fn a_write_from_another_thread_interrupts_an_infinite_wait() {
        let poller = Poller::new().unwrap();
        let (reader, writer) = pipe();
        poller.add(reader.as_raw_fd(), IN, u64::MAX).unwrap();
        let start = Instant::now();
        let mut events = Events::with_capacity(4);
        thread::scope(|scope| {
            scope.spawn(|| {
                thread::sleep(Duration::from_millis(50));
                write_byte(&writer);
            });
            assert_eq!(poller.wait(&mut events, None).unwrap(), 1);
        });
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert_eq!(events.iter().collect::<Vec<_>>(), [(u64::MAX, IN)]);
        read_byte(&reader);
        assert_eq!(poll_now(&poller, &mut events), []);
    }

    extern "C" fn ignore_signal(_: libc::c_int) {}

    #[test]
    fn a_signal_does_not_cut_the_wait_short() {
        // SAFETY: installs a handler that does nothing (async-signal-safe) for SIGUSR1, which
        // nothing else in this test binary uses; `action` is a live, zero-initialised sigaction.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as usize;
            assert_eq!(libc::sigaction(libc::SIGUSR1, &action, ptr::null_mut()), 0);
        }
        const TIMEOUT: Duration = Duration::from_millis(300);
        let done = Arc::new(AtomicBool::new(false));
        let waiter_done = Arc::clone(&done);
        let waiter = thread::spawn(move || {
            let poller = Poller::new().unwrap();
            let start = Instant::now();
            let result = poller.wait(&mut Events::with_capacity(1), Some(TIMEOUT));
            waiter_done.store(true, Ordering::SeqCst);
            (result.unwrap(), start.elapsed())
        });
        let mut sent = 0;
        while !done.load(Ordering::SeqCst) {
            use std::os::unix::thread::JoinHandleExt;
            // SAFETY: the thread is alive until `done` is set and joined below.
            unsafe { libc::pthread_kill(waiter.as_pthread_t(), libc::SIGUSR1) };
            sent += 1;
            thread::sleep(Duration::from_millis(10));
        }
        // Interrupted waits went on for the time left (PEP 475): the whole timeout, no event.
        let (ready, waited) = waiter.join().unwrap();
        assert_eq!(ready, 0);
        assert!(sent > 3, "only {sent} signals sent");
        assert!(waited >= TIMEOUT && waited < TIMEOUT * 10, "waited {waited:?}");
    }

    /// Runs `f` on a thread where `epoll_pwait2` fails with ENOSYS, as on a pre-5.11 kernel.
    /// Returns `None` (after saying so) if seccomp filters cannot be installed here.
    fn without_epoll_pwait2<R: Send + 'static>(f: fn() -> R) -> Option<R> {
        const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
        const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
        const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
        let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
        thread::spawn(move || {
            let mut filter = [
                op(BPF_LD_W_ABS, 0, 0, 0), // seccomp_data.nr
                op(BPF_JEQ_K, 0, 1, libc::SYS_epoll_pwait2 as u32),
                op(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
                op(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
            ];
            let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_mut_ptr() };
            // SAFETY: `prog` points to a live filter array; both prctls affect only this thread,
            // which ends when `f` returns.
            let installed = unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
                    && libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) == 0
            };
            if !installed {
                println!(
                    "skipped: cannot install a seccomp filter ({})",
                    io::Error::last_os_error()
                );
                return None;
            }
            Some(f())
        })
        .join()
        .unwrap()
    }

    #[test]
    fn without_epoll_pwait2_epoll_wait_rounds_timeouts_up_to_a_millisecond() {
        let used_pwait2 = without_epoll_pwait2(|| {
            let poller = Poller::new().unwrap();
            assert_waits_at_least(&poller, Duration::from_micros(300), Duration::from_millis(1));
            // Under a millisecond left: rounded up to one, never a busy poll.
            assert_waits_at_least(&poller, Duration::from_micros(100), Duration::from_millis(1));
            assert_waits_at_least(&poller, Duration::from_millis(10), Duration::ZERO);
            let (rx, tx) = pipe();
            poller.add(rx.as_raw_fd(), IN, 5).unwrap();
            write_byte(&tx);
            let mut events = Events::with_capacity(2);
            assert_eq!(poll_now(&poller, &mut events), [(5, IN)]);
            poller.uses_epoll_pwait2()
        });
        assert_ne!(used_pwait2, Some(true));
    }
}
