//! The `sock_*` coroutines: asyncio's "working with socket objects directly" on a borrowed,
//! non-blocking socket.
//!
//! # Implementation: readiness, not completion
//!
//! Every call tries the non-blocking syscall first (`recv`, `recvfrom`, `send`, `sendto`,
//! `connect`, `accept4`); only on `EAGAIN` (or `EINPROGRESS`/`EALREADY` for a connect) does it
//! await a one-shot `Op::Poll` for the socket (`EventLoop::submit_op`), then try again. This
//! is what asyncio's selector loop and uvloop do, and it is chosen here on io_uring too:
//!
//! * **Cancellation loses nothing.** A future dropped while it waits only cancels a poll, which
//!   never moves data. A completion-style receive or accept cancelled after the kernel
//!   already took the bytes (or the connection) off the socket would lose them: the cancel can
//!   race the completion, and nobody is left to report it to. With readiness, bytes are only
//!   taken by a syscall whose result the future returns in the same poll.
//! * **No asynchronous writes into borrowed memory.** `sock_recv_into` and
//!   `sock_recvfrom_into` take `&mut [u8]` from the caller. The kernel writes into it only
//!   inside a synchronous `recv` made while the future holds the borrow, never after the
//!   future is gone.
//! * **Nothing sent twice, nothing sent after a cancel.** `sock_sendall` sends with
//!   synchronous `send` calls and only waits between them; dropping it while it waits for the
//!   send buffer to drain stops it there. A prefix of `data` may have been sent (as asyncio
//!   says, there is no way to tell how much the peer got); no byte is ever sent again or after
//!   the drop, so a later send follows the stream exactly where this one stopped.
//! * **Both backends alike.** `Poll` is level-checked when armed on both backends, so the
//!   try-then-wait sequence cannot miss a wake-up.
//!
//! The socket is borrowed as `&impl AsFd` for the whole call: it cannot be closed while a
//! syscall or a poll on it is pending. After each wait the driver is told the loop is done
//! with the fd (`forget_fd`, a no-op while other ops still wait on it), so closing the socket
//! afterwards is always safe.

use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use socket2::{Domain, SockAddr, SockRef, Socket};

use super::address::Address;
use super::dns::AddrInfoHints;
use crate::driver::{Interest, Op};
use crate::error::{ArgumentKind, Error, Result};
use crate::event_loop::{EventLoop, OpFuture};
use crate::sys::{retry_eintr, would_block};

/// Where [`EventLoop::sock_connect`] connects: a resolved address, or an [`Address`] whose
/// host is resolved with the loop's [`getaddrinfo`](EventLoop::getaddrinfo) for the socket's
/// own family, type and protocol (asyncio's `sock_connect(sock, (host, port))`).
///
/// Built with `into()` from a [`SockAddr`], a [`SocketAddr`] (v4 or v6), an [`Address`], or
/// what an `Address` is made from: `"localhost:80"`, `("localhost", 80)`, `(String, u16)`.
///
/// ```
/// use ringloop::net::sock::ConnectTarget;
///
/// let numeric: ConnectTarget = "127.0.0.1:80".parse::<std::net::SocketAddr>().unwrap().into();
/// let named: ConnectTarget = ("localhost", 80).into();
/// assert!(matches!(numeric, ConnectTarget::Addr(_)));
/// assert!(matches!(named, ConnectTarget::Inet(address) if address.to_string() == "localhost:80"));
/// ```
#[derive(Clone, Debug)]
pub enum ConnectTarget {
    /// A resolved address (IPv4, IPv6 or `AF_UNIX`), used as is.
    Addr(SockAddr),
    /// An IP address or a host and port, resolved first.
    Inet(Address),
}

impl From<SockAddr> for ConnectTarget {
    fn from(addr: SockAddr) -> Self {
        ConnectTarget::Addr(addr)
    }
}

impl From<SocketAddr> for ConnectTarget {
    fn from(addr: SocketAddr) -> Self {
        ConnectTarget::Addr(addr.into())
    }
}

impl From<SocketAddrV4> for ConnectTarget {
    fn from(addr: SocketAddrV4) -> Self {
        ConnectTarget::Addr(addr.into())
    }
}

impl From<SocketAddrV6> for ConnectTarget {
    fn from(addr: SocketAddrV6) -> Self {
        ConnectTarget::Addr(addr.into())
    }
}

/// `From` what an [`Address`] is made from: [`ConnectTarget::Inet`].
macro_rules! connect_target_from_address {
    ($($ty:ty),*) => {$(
        impl From<$ty> for ConnectTarget {
            fn from(address: $ty) -> Self {
                ConnectTarget::Inet(address.into())
            }
        }
    )*};
}

connect_target_from_address!(Address, &str, String, (&str, u16), (String, u16));

/// Which `sock_*` call on which fd, for error messages ("sock_recv(fd 7)"). Formatted only
/// when an error is built: a call that succeeds formats nothing.
#[derive(Clone, Copy)]
struct Call {
    /// The method's name.
    name: &'static str,
    /// The socket.
    fd: RawFd,
}

impl Call {
    fn new(name: &'static str, sock: BorrowedFd<'_>) -> Call {
        Call { name, fd: sock.as_raw_fd() }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(fd {})", self.name, self.fd)
    }
}

/// "Connect call failed ADDRESS", asyncio's message for a failed connect, formatted only when
/// an error is built.
struct ConnectFailed<'a>(&'a SockAddr);

impl fmt::Display for ConnectFailed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Connect call failed {}", crate::transport::describe_addr(self.0))
    }
}

/// `Ok` if `sock` is an open, non-blocking fd; otherwise the error `what` reports.
pub(crate) fn check_nonblocking(sock: BorrowedFd<'_>, what: &dyn fmt::Display) -> Result<()> {
    let flags =
        fcntl(sock, FcntlArg::F_GETFL).map_err(|e| Error::io(what.to_string(), e.into()))?;
    if !OFlag::from_bits_retain(flags).contains(OFlag::O_NONBLOCK) {
        return Err(Error::invalid_argument(
            ArgumentKind::UnsuitableFd,
            format!(
                "{what}: the socket must be non-blocking (asyncio requires it; call \
             set_nonblocking(true) first)"
            ),
        ));
    }
    Ok(())
}

/// An empty buffer with room for exactly `n` bytes; an error (not an abort) if `n` is more
/// than can be allocated.
fn receive_buffer(n: usize, what: Call) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    buf.try_reserve_exact(n).map_err(|_| {
        Error::invalid_argument(
            ArgumentKind::OutOfRange,
            format!("{what}: cannot allocate a buffer of {n} bytes"),
        )
    })?;
    Ok(buf)
}

/// Sets `buf`'s length to the `n` bytes a receive wrote, giving back most of a large unused
/// capacity (a big `nbytes` often receives little).
///
/// # Safety
///
/// The first `n` bytes of `buf`'s capacity must be initialised.
unsafe fn finish_receive(buf: &mut Vec<u8>, n: usize) {
    debug_assert!(n <= buf.capacity());
    // SAFETY: the caller guarantees the first `n` bytes are initialised, within the capacity.
    unsafe { buf.set_len(n) };
    if buf.capacity() - n > 4096 && n < buf.capacity() / 2 {
        buf.shrink_to_fit();
    }
}

/// `buf` as the uninitialised-byte slice socket2's receive calls take.
fn as_uninit(buf: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`; the receive calls only ever write
    // initialised bytes into it, so `buf` stays fully initialised.
    unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) }
}

/// A `Poll` in flight for a `sock_*` call. Dropping it (the call's future dropped, or the poll
/// done) cancels the poll, then tells the driver the loop no longer uses the fd.
struct PollGuard<'a> {
    /// The loop whose driver runs the poll.
    event_loop: &'a EventLoop,
    /// The polled socket.
    fd: RawFd,
    /// The poll (taken on drop).
    op: Option<OpFuture>,
}

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        drop(self.op.take());
        self.event_loop.with_driver(|driver| driver.forget_fd(self.fd));
    }
}

impl EventLoop {
    /// Waits until `sock` is ready for `interest` (or has an error or hang-up to report, which
    /// the next syscall then returns).
    async fn sock_wait(
        &self,
        sock: BorrowedFd<'_>,
        interest: Interest,
        what: &dyn fmt::Display,
    ) -> Result<()> {
        let fd = sock.as_raw_fd();
        let op = self.submit_op(Op::Poll { fd, interest })?;
        let mut guard = PollGuard { event_loop: self, fd, op: Some(op) };
        let (result, _op) = guard.op.as_mut().expect("set just above").await;
        guard.op = None;
        result.map(drop).map_err(|err| Error::io(format!("{what}: waiting for the socket"), err))
    }

    /// Runs `attempt` until it does not would-block, waiting for `interest` in between;
    /// `EINTR` retries at once. The shared loop under the `sock_*` calls.
    async fn sock_retry<T>(
        &self,
        sock: BorrowedFd<'_>,
        interest: Interest,
        what: Call,
        mut attempt: impl FnMut(&SockRef<'_>) -> io::Result<T>,
    ) -> Result<T> {
        self.check_open()?;
        check_nonblocking(sock, &what)?;
        let socket = SockRef::from(&sock);
        loop {
            match retry_eintr(|| attempt(&socket)) {
                Ok(value) => return Ok(value),
                Err(err) if would_block(&err) => self.sock_wait(sock, interest, &what).await?,
                Err(err) => return Err(Error::io(what.to_string(), err)),
            }
        }
    }

    /// Receives up to `nbytes` from `sock` (asyncio's `loop.sock_recv`); empty at end of
    /// stream.
    ///
    /// Dropping the future loses no data: bytes are only taken from the socket by the call
    /// that returns them (see the module's "Implementation").
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a blocking socket; [`Error::Io`] for the OS's errors
    /// (`ECONNRESET`, `ENOTSOCK`, `EBADF` ...); [`Error::Closed`] on a closed loop.
    ///
    /// # Example
    ///
    /// ```
    /// use std::io::Write;
    ///
    /// let (mine, mut theirs) = std::os::unix::net::UnixStream::pair()?;
    /// mine.set_nonblocking(true)?;
    /// theirs.write_all(b"hello")?;
    /// let data = ringloop::run(async move {
    ///     let event_loop = ringloop::get_running_loop().unwrap();
    ///     event_loop.sock_recv(&mine, 1024).await
    /// })??;
    /// assert_eq!(data, b"hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn sock_recv(&self, sock: &impl AsFd, nbytes: usize) -> Result<Vec<u8>> {
        let sock = sock.as_fd();
        let what = Call::new("sock_recv", sock);
        let mut buf = receive_buffer(nbytes, what)?;
        let n = self
            .sock_retry(sock, Interest::READ, what, |s| {
                s.recv(&mut buf.spare_capacity_mut()[..nbytes])
            })
            .await?;
        // SAFETY: `recv` initialised the first `n` bytes of the spare capacity (`n <= nbytes`,
        // which is within the capacity).
        unsafe { finish_receive(&mut buf, n) };
        Ok(buf)
    }

    /// Receives into `buf` (asyncio's `loop.sock_recv_into`): the number of bytes written,
    /// 0 at end of stream. Pass a sub-slice (`&mut buf[filled..]`) to accumulate.
    ///
    /// The kernel writes into `buf` only during this call's own synchronous `recv`, never
    /// after the future is dropped.
    ///
    /// # Errors
    ///
    /// As [`sock_recv`](Self::sock_recv).
    pub async fn sock_recv_into(&self, sock: &impl AsFd, buf: &mut [u8]) -> Result<usize> {
        let sock = sock.as_fd();
        let what = Call::new("sock_recv_into", sock);
        self.sock_retry(sock, Interest::READ, what, |s| s.recv(as_uninit(buf))).await
    }

    /// Receives one datagram of up to `bufsize` bytes (asyncio's `loop.sock_recvfrom`): the
    /// data and the sender's address. A longer datagram is truncated, as `recvfrom(2)` does.
    ///
    /// # Errors
    ///
    /// As [`sock_recv`](Self::sock_recv).
    pub async fn sock_recvfrom(
        &self,
        sock: &impl AsFd,
        bufsize: usize,
    ) -> Result<(Vec<u8>, SockAddr)> {
        let sock = sock.as_fd();
        let what = Call::new("sock_recvfrom", sock);
        let mut buf = receive_buffer(bufsize, what)?;
        let (n, addr) = self
            .sock_retry(sock, Interest::READ, what, |s| {
                s.recv_from(&mut buf.spare_capacity_mut()[..bufsize])
            })
            .await?;
        // SAFETY: `recv_from` initialised the first `n` bytes of the spare capacity
        // (`n <= bufsize`, within the capacity).
        unsafe { finish_receive(&mut buf, n) };
        Ok((buf, addr))
    }

    /// Receives one datagram into `buf[..nbytes]` (asyncio's `loop.sock_recvfrom_into`;
    /// `nbytes == 0` means all of `buf`): the byte count and the sender's address.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if `nbytes > buf.len()`; otherwise as
    /// [`sock_recv`](Self::sock_recv).
    pub async fn sock_recvfrom_into(
        &self,
        sock: &impl AsFd,
        buf: &mut [u8],
        nbytes: usize,
    ) -> Result<(usize, SockAddr)> {
        let sock = sock.as_fd();
        let what = Call::new("sock_recvfrom_into", sock);
        let nbytes = if nbytes == 0 { buf.len() } else { nbytes };
        if nbytes > buf.len() {
            return Err(Error::invalid_argument(
                ArgumentKind::OutOfRange,
                format!(
                    "{what}: nbytes ({nbytes}) is greater than the length of the buffer ({})",
                    buf.len()
                ),
            ));
        }
        let window = &mut buf[..nbytes];
        self.sock_retry(sock, Interest::READ, what, |s| s.recv_from(as_uninit(window))).await
    }

    /// Sends all of `data` (asyncio's `loop.sock_sendall`): `Ok(())` once every byte is in
    /// the kernel, or the first error.
    ///
    /// Dropping the future while it waits for room stops it: a prefix of `data` may have been
    /// sent, nothing after the drop, and no byte twice, so a later send continues the stream
    /// right after that prefix. As asyncio says, there is no way to know how much the peer
    /// received.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a blocking socket; [`Error::Io`] for the OS's errors
    /// (`EPIPE` after the peer closed: sent with `MSG_NOSIGNAL`, so no `SIGPIPE`).
    ///
    /// # Example
    ///
    /// ```
    /// use std::io::Read;
    ///
    /// let (mine, mut theirs) = std::os::unix::net::UnixStream::pair()?;
    /// mine.set_nonblocking(true)?;
    /// ringloop::run(async move {
    ///     let event_loop = ringloop::get_running_loop().unwrap();
    ///     event_loop.sock_sendall(&mine, b"hello").await
    /// })??;
    /// let mut got = [0u8; 5];
    /// theirs.read_exact(&mut got)?;
    /// assert_eq!(&got, b"hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn sock_sendall(&self, sock: &impl AsFd, data: &[u8]) -> Result<()> {
        let sock = sock.as_fd();
        let what = Call::new("sock_sendall", sock);
        let mut sent = 0;
        // One `sock_retry` for the whole send: a partial send is followed by the next one at
        // once (as before), without checking the loop and the socket's flags again.
        self.sock_retry(sock, Interest::WRITE, what, |s| loop {
            sent += s.send_with_flags(&data[sent..], libc::MSG_NOSIGNAL)?;
            if sent >= data.len() {
                return Ok(());
            }
        })
        .await
    }

    /// Sends one datagram to `addr` (asyncio's `loop.sock_sendto`): the bytes sent. Waits and
    /// retries while the socket's buffer is full. (On an *unconnected* `AF_UNIX` datagram
    /// socket the kernel reports a full receiver with `EAGAIN` but polls writable, so the call
    /// retries on every loop iteration until there is room, as asyncio's does.)
    ///
    /// # Errors
    ///
    /// As [`sock_sendall`](Self::sock_sendall) (`EMSGSIZE` for a datagram too large).
    pub async fn sock_sendto(
        &self,
        sock: &impl AsFd,
        data: &[u8],
        addr: &SockAddr,
    ) -> Result<usize> {
        let sock = sock.as_fd();
        let what = Call::new("sock_sendto", sock);
        self.sock_retry(sock, Interest::WRITE, what, |s| {
            s.send_to_with_flags(data, addr, libc::MSG_NOSIGNAL)
        })
        .await
    }

    /// Accepts one connection on the listening `sock` (asyncio's `loop.sock_accept`): the new
    /// socket, non-blocking and close-on-exec, and the peer's address.
    ///
    /// Dropping the future while it waits accepts nothing: the connection stays queued on the
    /// listener.
    ///
    /// # Errors
    ///
    /// As [`sock_recv`](Self::sock_recv) (`EINVAL` for a socket that is not listening).
    ///
    /// # Example
    ///
    /// ```
    /// use socket2::{Domain, Socket, Type};
    ///
    /// ringloop::run(async {
    ///     let event_loop = ringloop::get_running_loop().unwrap();
    ///     let listener = Socket::new(Domain::IPV4, Type::STREAM.nonblocking(), None)?;
    ///     listener.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into())?;
    ///     listener.listen(8)?;
    ///     let at = listener.local_addr()?.as_socket().unwrap();
    ///     let client = Socket::new(Domain::IPV4, Type::STREAM.nonblocking(), None)?;
    ///     event_loop.sock_connect(&client, at).await?; // completes once the kernel queued it
    ///     let (conn, peer) = event_loop.sock_accept(&listener).await?;
    ///     assert_eq!(peer.as_socket(), client.local_addr()?.as_socket());
    ///     event_loop.sock_sendall(&client, b"ping").await?;
    ///     assert_eq!(event_loop.sock_recv(&conn, 1024).await?, b"ping");
    ///     Ok::<(), Box<dyn std::error::Error>>(())
    /// })??;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn sock_accept(&self, sock: &impl AsFd) -> Result<(Socket, SockAddr)> {
        let sock = sock.as_fd();
        let what = Call::new("sock_accept", sock);
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        self.sock_retry(sock, Interest::READ, what, |s| s.accept4(flags)).await
    }

    /// Connects `sock` to `address` (asyncio's `loop.sock_connect`): a `SocketAddr` or
    /// `SockAddr` as is, or anything [`Address`] converts from (`"localhost:80"`,
    /// `("localhost", 80)`, ...), whose host is resolved first through
    /// [`getaddrinfo`](Self::getaddrinfo) with the socket's own family, type and protocol;
    /// the first result is used.
    ///
    /// A connect dropped while in progress goes on in the kernel, as in asyncio; calling
    /// `sock_connect` again waits for it (`EALREADY`) and succeeds once the socket is connected
    /// to `address` (`EISCONN` for that address is success). An `AF_UNIX` connect refused
    /// for a full backlog (`EAGAIN`) is retried each time the socket polls writable.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] carrying the OS error (`ECONNREFUSED` → [`io::ErrorKind::ConnectionRefused`],
    /// `ETIMEDOUT` ...), with "Connect call failed ADDRESS"; [`Error::Dns`] from resolution;
    /// [`Error::InvalidArgument`] for a blocking socket or a host/port on a non-IP socket.
    ///
    /// # Example
    ///
    /// ```
    /// use socket2::{Domain, Socket, Type};
    ///
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let port = listener.local_addr()?.port();
    /// let sock = Socket::new(Domain::IPV4, Type::STREAM.nonblocking(), None)?;
    /// ringloop::run(async move {
    ///     let event_loop = ringloop::get_running_loop().unwrap();
    ///     event_loop.sock_connect(&sock, ("127.0.0.1", port)).await
    /// })??;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn sock_connect(
        &self,
        sock: &impl AsFd,
        address: impl Into<ConnectTarget>,
    ) -> Result<()> {
        let sock = sock.as_fd();
        let what = Call::new("sock_connect", sock);
        self.check_open()?;
        check_nonblocking(sock, &what)?;
        let addr = match address.into() {
            ConnectTarget::Addr(addr) => addr,
            ConnectTarget::Inet(address) => self.sock_resolve(sock, &address, what).await?,
        };
        self.sock_connect_addr(sock, &addr).await
    }

    /// Resolves `address` for `sock`'s family, type and protocol, as asyncio does.
    async fn sock_resolve(
        &self,
        sock: BorrowedFd<'_>,
        address: &Address,
        what: Call,
    ) -> Result<SockAddr> {
        let call = what.to_string();
        let lookup = address.single(&call)?.ok_or_else(|| {
            let message = format!("{call}: an address is needed (not Address::NONE)");
            Error::invalid_argument(ArgumentKind::Missing, message)
        })?;
        let socket = SockRef::from(&sock);
        let params = (socket.domain(), socket.r#type(), socket.protocol());
        let (domain, ty, proto) = match params {
            (Ok(domain), Ok(ty), Ok(proto)) => (domain, ty, proto),
            (Err(err), _, _) | (_, Err(err), _) | (_, _, Err(err)) => {
                return Err(Error::io(format!("{what}: reading the socket's type"), err))
            }
        };
        if domain != Domain::IPV4 && domain != Domain::IPV6 {
            return Err(Error::invalid_argument(
                ArgumentKind::UnsuitableFd,
                format!(
                    "{what}: a host and port need an AF_INET or AF_INET6 socket, not family {}",
                    i32::from(domain)
                ),
            ));
        }
        let hints = AddrInfoHints::new()
            .family(domain.into())
            .socktype(ty.into())
            .protocol(proto.map_or(0, i32::from));
        let infos = self.resolve(&call, lookup, hints).await?;
        Ok(infos[0].addr.into())
    }

    /// Connects `sock` to the resolved `addr`: `connect`, then on `EINPROGRESS`/`EALREADY`
    /// wait for writability and read `SO_ERROR`.
    async fn sock_connect_addr(&self, sock: BorrowedFd<'_>, addr: &SockAddr) -> Result<()> {
        let socket = SockRef::from(&sock);
        let failed = ConnectFailed(addr);
        loop {
            let err = match socket.connect(addr) {
                Ok(()) => return Ok(()),
                Err(err) => err,
            };
            match err.raw_os_error() {
                Some(libc::EISCONN) if socket.peer_addr().is_ok_and(|peer| &peer == addr) => {
                    return Ok(())
                }
                Some(libc::EINPROGRESS | libc::EALREADY | libc::EAGAIN | libc::EINTR) => {}
                _ => return Err(Error::io(failed.to_string(), err)),
            }
            self.sock_wait(sock, Interest::WRITE, &failed).await?;
            match socket.take_error() {
                Ok(None) if socket.peer_addr().is_ok() => return Ok(()),
                // Writable but not connected (a unix listener's backlog was full): try again.
                Ok(None) => {}
                Ok(Some(err)) | Err(err) => return Err(Error::io(failed.to_string(), err)),
            }
        }
    }
}
