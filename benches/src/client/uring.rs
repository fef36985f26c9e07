//! The io_uring load generator (`--client uring`): the same windows, phases and counting as
//! the epoll client, driven the way the independent harness drove its servers. Every
//! connection (to every server) always has one `RECV` in flight into a buffer of its own; the
//! replies a batch of completions finishes queue their next requests as `SEND`s, and one
//! `io_uring_enter` per turn submits them all and waits for the next completion. So where the
//! epoll client makes a `write` per connection while it walks its events, this one hands the
//! server a turn's requests in one system call. Plain TCP only.
//!
//! Ownership: the kernel may write a connection's receive buffer, or read the shared payload,
//! until the op's completion arrives. Both are heap blocks that never move or change while the
//! client lives, and dropping the client shuts every socket down and waits for every op to
//! end before they are freed (or leaks them, if the kernel does not end them in time).

use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};

use super::{bytes_read, connect, payload, Generator, Load, Messages, Pending, Phase, Tally};

/// Bytes one `RECV` may take.
const RECV_BUF: usize = 64 * 1024;
/// Submission queue entries; a full queue is submitted early, so this bounds no load.
const ENTRIES: u32 = 1024;
/// The longest one wait blocks, so a window's deadline is seen in time.
const MAX_WAIT: Duration = Duration::from_millis(10);

/// One connection's state.
struct Conn<R> {
    stream: TcpStream,
    /// What its `RECV` writes; the kernel's until that op's completion.
    buf: Box<[u8]>,
    /// Its messages and replies.
    pending: Pending<R>,
    /// Whether a `SEND` is in flight (at most one: each takes all that is queued).
    sending: bool,
}

/// Connections to every server, on one ring.
pub struct UringClient<M: Messages> {
    ring: IoUring,
    /// `servers[s][i]`: connection `i` to server `s`.
    servers: Vec<Vec<Conn<M::Replies>>>,
    load: Load,
    messages: M,
    /// Requests back to back, what `SEND`s take their bytes from; never changed.
    payload: Vec<u8>,
    /// Ops submitted or queued whose completion has not arrived.
    in_kernel: usize,
    /// A turn's completions, copied out of the CQ (kept to reuse its memory).
    done: Vec<(u64, i32)>,
}

/// The client's ring (single issuer, deferred task running: Linux 6.1).
pub fn ring() -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(ENTRIES)
        .map_err(|e| io::Error::new(e.kind(), format!("io_uring_setup: {e}")))
}

/// What an op is: the low bit of its `user_data`.
const SEND: u64 = 1;

/// `user_data` of connection `i` to server `s`, for a recv (`op` 0) or a send.
fn tag(s: usize, i: usize, op: u64) -> u64 {
    (s as u64) << 40 | (i as u64) << 1 | op
}

impl<M: Messages> UringClient<M> {
    /// Opens `load.connections` connections to each of `ports` (127.0.0.1) on `ring` (from
    /// [`ring`]), each with its receive in flight.
    pub fn connect(
        ring: IoUring,
        ports: &[u16],
        load: &Load,
        messages: M,
    ) -> io::Result<UringClient<M>> {
        let payload = payload(&messages);
        let mut client = UringClient {
            ring,
            servers: Vec::new(),
            load: *load,
            messages,
            payload,
            in_kernel: 0,
            done: Vec::new(),
        };
        for &port in ports {
            let mut conns = Vec::with_capacity(load.connections);
            for _ in 0..load.connections {
                let stream = connect(port)?;
                stream.set_nodelay(true)?;
                conns.push(Conn {
                    stream,
                    buf: vec![0u8; RECV_BUF].into_boxed_slice(),
                    pending: Pending::default(),
                    sending: false,
                });
            }
            client.servers.push(conns);
        }
        for s in 0..client.servers.len() {
            for i in 0..client.servers[s].len() {
                client.recv(s, i)?;
            }
        }
        Ok(client)
    }

    /// Queues connection `i` of server `s`'s next `RECV`.
    fn recv(&mut self, s: usize, i: usize) -> io::Result<()> {
        let conn = &mut self.servers[s][i];
        let (fd, buf) = (types::Fd(conn.stream.as_raw_fd()), &mut conn.buf);
        let entry = opcode::Recv::new(fd, buf.as_mut_ptr(), buf.len() as u32).build();
        // SAFETY: `buf` is a heap block of this connection that stays put and alive until
        // the op's completion (see the module's ownership note).
        unsafe { self.push(entry.user_data(tag(s, i, 0))) }
    }

    /// Queues a `SEND` of all connection `i` of server `s` has queued, unless one is in
    /// flight or nothing is.
    fn flush(&mut self, s: usize, i: usize) -> io::Result<()> {
        let conn = &mut self.servers[s][i];
        if conn.sending || conn.pending.unsent == 0 {
            return Ok(());
        }
        conn.sending = true;
        let fd = types::Fd(conn.stream.as_raw_fd());
        let from = conn.pending.offset;
        let end = self.payload.len().min(from + conn.pending.unsent);
        let bytes = &self.payload[from..end];
        let entry = opcode::Send::new(fd, bytes.as_ptr(), bytes.len() as u32).build();
        // SAFETY: `payload` is never changed or moved while the client lives, and the
        // client's drop waits for every op (the module's ownership note).
        unsafe { self.push(entry.user_data(tag(s, i, SEND))) }
    }

    /// Puts `entry` in the submission queue, submitting what is there first if it is full.
    ///
    /// # Safety
    /// Whatever memory `entry` names must stay valid until its completion arrives.
    unsafe fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller keeps `entry`'s memory valid until its completion.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                self.in_kernel += 1;
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    /// Submits what is queued and waits up to `wait` for a completion (none when zero).
    fn enter(&mut self, wait: Duration) -> io::Result<()> {
        let ts = types::Timespec::from(wait);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {
                Ok(())
            }
            Err(e) => Err(io::Error::new(e.kind(), format!("io_uring_enter: {e}"))),
        }
    }

    /// Connection `i` of server `s`'s `SEND` ended with `result`.
    fn sent(&mut self, s: usize, i: usize, result: i32) -> io::Result<()> {
        let size = self.messages.request().len();
        let conn = &mut self.servers[s][i];
        conn.sending = false;
        let Ok(n) = usize::try_from(result) else {
            let e = io::Error::from_raw_os_error(-result);
            return Err(io::Error::new(e.kind(), format!("send: {e}")));
        };
        conn.pending.wrote(n, size);
        Ok(())
    }

    /// Connection `i` of server `s`'s `RECV` ended with `result`: counts the replies it
    /// completed and receives again.
    fn received(
        &mut self,
        s: usize,
        i: usize,
        result: i32,
        now: Instant,
        phase: Phase,
        tally: &mut Tally,
    ) -> io::Result<()> {
        let conn = &mut self.servers[s][i];
        let read = usize::try_from(result).map_err(|_| io::Error::from_raw_os_error(-result));
        let got = bytes_read(read, "recv")?;
        conn.pending.received(&self.messages, &conn.buf[..got], now, phase, tally)?;
        self.recv(s, i)
    }
}

impl<M: Messages> Generator for UringClient<M> {
    fn start(&mut self, server: usize, now: Instant) -> io::Result<()> {
        let (pipeline, size) = (self.load.pipeline, self.messages.request().len());
        for i in 0..self.servers[server].len() {
            self.servers[server][i].pending.queue(pipeline, size, now);
            self.flush(server, i)?;
        }
        Ok(())
    }

    fn idle(&self, server: usize) -> bool {
        self.servers[server].iter().all(|c| c.pending.in_flight.is_empty())
    }

    fn turn(&mut self, phase: Phase, wait: Duration, tally: &mut Tally) -> io::Result<()> {
        self.enter(wait.min(MAX_WAIT))?;
        let now = Instant::now();
        // Completions are copied out first: handling one queues new submissions.
        let mut done = std::mem::take(&mut self.done);
        done.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
        self.in_kernel -= done.len();
        for (data, result) in done.drain(..) {
            let (s, i) = ((data >> 40) as usize, ((data & 0xff_ffff_ffff) >> 1) as usize);
            if data & SEND == SEND {
                self.sent(s, i, result)?;
            } else {
                self.received(s, i, result, now, phase, tally)?;
            }
            self.flush(s, i)?;
        }
        self.done = done;
        Ok(())
    }

    fn load(&self) -> Load {
        self.load
    }
}

impl<M: Messages> Drop for UringClient<M> {
    /// Ends every op before the buffers go: a shut-down socket's receive completes at once
    /// (and a send fails). What the kernel has not ended within five seconds keeps its
    /// memory, leaked.
    fn drop(&mut self) {
        for conn in self.servers.iter().flatten() {
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.in_kernel > 0 && Instant::now() < deadline {
            if self.enter(MAX_WAIT).is_err() {
                break;
            }
            let ended = self.ring.completion().count();
            self.in_kernel -= ended;
        }
        if self.in_kernel > 0 {
            std::mem::forget(std::mem::take(&mut self.servers));
            std::mem::forget(std::mem::take(&mut self.payload));
        }
    }
}
