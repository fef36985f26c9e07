//! Unix stream sockets (`create_unix_server`, `create_unix_connection`, the streams forms,
//! `connect_accepted_socket` on a Unix socket): BEHAVIOURS section 11 (items 95–98), on every
//! backend built in, plus an abstract-namespace server, the `cleanup_socket` rule in each case,
//! peer names, `wait_closed` with Unix clients, and a representative part of the stream
//! transport's behaviours (section 13) over sockets these calls made.
//!
//! Peers are the loop's own clients, or `std::os::unix::net` ones on threads. Tests that
//! count descriptors re-run themselves in a child process ([`in_child`]), so the other tests
//! running in parallel cannot disturb the count.
//!
//! Not applicable / not yet:
//! * 96's TLS checks (`ssl=True`, `server_hostname`, `ssl_handshake_timeout`): no TLS yet.
//!   "Even MemoryError" closes the socket: Rust's allocation failure aborts; the bind errors
//!   that can happen are tested (`a_failed_bind_closes_its_socket`).
//! * 98 with `ssl=server_ctx`: no TLS yet.

use std::cell::RefCell;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use ringloop::{
    BaseProtocol, Error, EventLoop, ExtraInfo, Protocol, Server, Transport, UnixConnectOptions,
    UnixPath, UnixServerOptions,
};
use uring_tests::{
    backend_tests, capture_exceptions, connect_accepted, echo_lines, in_child, open_fds, pattern,
    run_until, spin, TempDir,
};

/// Generous bound for "this must happen" waits (2 shared cores).
const WAIT: f64 = 10.0;
/// What a connection's protocol saw.
#[derive(Clone, Debug, PartialEq)]
enum Ev {
    Made,
    Data(Vec<u8>),
    Eof,
    /// `connection_lost`, with the error's errno if there was one (`Some(-1)`: not an OS error).
    Lost(Option<i32>),
}

/// The events of every connection of one side, and each connection's transport.
#[derive(Clone, Default)]
struct Log {
    events: Rc<RefCell<Vec<Ev>>>,
    transports: Rc<RefCell<Vec<Transport>>>,
}

impl Log {
    fn count(&self, pick: fn(&Ev) -> bool) -> usize {
        self.events.borrow().iter().filter(|e| pick(e)).count()
    }

    fn lost(&self) -> usize {
        self.count(|e| matches!(e, Ev::Lost(_)))
    }

    fn made(&self) -> usize {
        self.count(|e| *e == Ev::Made)
    }

    /// All bytes received, in order.
    fn data(&self) -> Vec<u8> {
        let events = self.events.borrow();
        events.iter().filter_map(|e| if let Ev::Data(d) = e { Some(d.clone()) } else { None }).fold(
            Vec::new(),
            |mut all, d| {
                all.extend(d);
                all
            },
        )
    }

    fn transport(&self, i: usize) -> Transport {
        self.transports.borrow()[i].clone()
    }
}

/// Records events; echoes data when `echo`; `keep_open` answers `eof_received`.
struct Rec {
    log: Log,
    echo: bool,
    keep_open: bool,
    transport: Option<Transport>,
}

impl BaseProtocol for Rec {
    fn connection_made(&mut self, transport: Transport) {
        self.log.events.borrow_mut().push(Ev::Made);
        self.log.transports.borrow_mut().push(transport.clone());
        self.transport = Some(transport);
    }

    fn connection_lost(&mut self, error: Option<Error>) {
        let errno = error.map(|e| e.raw_os_error().unwrap_or(-1));
        self.log.events.borrow_mut().push(Ev::Lost(errno));
    }
}

impl Protocol for Rec {
    fn data_received(&mut self, data: &[u8]) {
        if self.echo {
            self.transport.as_ref().unwrap().write(data).unwrap();
        } else {
            self.log.events.borrow_mut().push(Ev::Data(data.to_vec()));
        }
    }

    fn eof_received(&mut self) -> bool {
        self.log.events.borrow_mut().push(Ev::Eof);
        self.keep_open
    }
}

fn rec(log: &Log, echo: bool) -> impl Fn() -> Rec + 'static {
    let log = log.clone();
    move || Rec { log: log.clone(), echo, keep_open: false, transport: None }
}

/// A fresh directory for `test` (removed when the first value drops) and the socket path in it.
fn sock_path(lp: &EventLoop, test: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::for_test(lp, test);
    let path = dir.join("s.sock");
    (dir, path)
}

/// A unique abstract name (leading NUL).
fn abstract_name(lp: &EventLoop, test: &str) -> Vec<u8> {
    format!("\0ringloop-ux-{}-{test}-{}", std::process::id(), lp.backend()).into_bytes()
}

fn try_serve(
    lp: &EventLoop,
    log: &Log,
    echo: bool,
    path: impl Into<UnixPath>,
    options: UnixServerOptions,
) -> Result<Server, Error> {
    let (lp2, factory, path) = (lp.clone(), rec(log, echo), path.into());
    let future = async move { lp2.create_unix_server(factory, path, options).await };
    lp.run_until_complete(future).unwrap()
}

fn serve(lp: &EventLoop, log: &Log, echo: bool, path: impl Into<UnixPath>) -> Server {
    try_serve(lp, log, echo, path, UnixServerOptions::default()).expect("create_unix_server")
}

fn try_connect(
    lp: &EventLoop,
    log: &Log,
    path: impl Into<UnixPath>,
    options: UnixConnectOptions,
) -> Result<Transport, Error> {
    let (lp2, factory, path) = (lp.clone(), rec(log, false), path.into());
    let future = async move { lp2.create_unix_connection(factory, path, options).await };
    lp.run_until_complete(future).unwrap().map(|(transport, _)| transport)
}

fn connect(lp: &EventLoop, log: &Log, path: impl Into<UnixPath>) -> Transport {
    let transport = try_connect(lp, log, path, UnixConnectOptions::new()).expect("connect");
    assert!(run_until(lp, WAIT, || log.made() == 1), "client connection_made");
    transport
}

/// Closes `server` and runs the loop until `wait_closed` returns.
fn close_and_wait(lp: &EventLoop, server: &Server) {
    server.close();
    let s = server.clone();
    let waiting = lp.create_task(async move { s.wait_closed().await }).unwrap();
    assert!(run_until(lp, WAIT, || waiting.done()), "wait_closed returned");
}

fn inode(path: &Path) -> (u64, u64) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.dev(), meta.ino())
}

/// A blocking client on a thread: sends `data`, shuts down writing, returns what it read.
fn echo_client(path: PathBuf, data: Vec<u8>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut stream = UnixStream::connect(&path).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut reader = stream.try_clone().unwrap();
        let reading = std::thread::spawn(move || {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).unwrap();
            got
        });
        stream.write_all(&data).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        reading.join().unwrap()
    })
}

/// Echoes `data` through the server at `path` with [`echo_client`], running the loop meanwhile:
/// the client gets `data` back within `secs`.
fn check_echo(lp: &EventLoop, path: &Path, data: &[u8], secs: f64) {
    let client = echo_client(path.to_path_buf(), data.to_vec());
    assert!(run_until(lp, secs, || client.is_finished()), "the client finished");
    assert_eq!(client.join().unwrap(), data);
}

/// A new echo server at `path` echoes `data` for a std client, then removes its socket file
/// at close.
fn echo_then_close(lp: &EventLoop, path: &Path, data: &[u8]) {
    let server = serve(lp, &Log::default(), true, path);
    check_echo(lp, path, data, WAIT);
    close_and_wait(lp, &server);
    assert!(!path.exists());
}

/// A little later, each side of a connection has still lost it exactly once; then closes
/// `server`.
fn lost_once_each_then_close(lp: &EventLoop, server: &Server, client_log: &Log, server_log: &Log) {
    spin(lp, 0.02);
    assert_eq!((client_log.lost(), server_log.lost()), (1, 1));
    close_and_wait(lp, server);
}

/// A non-blocking connect to `path` from a new socket: the socket, or the errno.
fn nonblocking_connect(path: &Path) -> Result<OwnedFd, i32> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_encoded_bytes();
    assert!(bytes.len() < addr.sun_path.len());
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is a valid, NUL-terminated sockaddr_un of `len` bytes.
    let rc = unsafe { libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len) };
    if rc == 0 {
        Ok(sock)
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// Reads from `peer` (made non-blocking) while the loop runs, until `want` bytes or EOF.
fn read_while_running(lp: &EventLoop, peer: &mut UnixStream, want: usize) -> Vec<u8> {
    peer.set_nonblocking(true).unwrap();
    let got = RefCell::new(Vec::new());
    let eof = std::cell::Cell::new(false);
    let done = || {
        let mut buf = [0; 4096];
        loop {
            match (&*peer).read(&mut buf) {
                Ok(0) => eof.set(true),
                Ok(n) => {
                    got.borrow_mut().extend_from_slice(&buf[..n]);
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("peer read: {e}"),
            }
            break;
        }
        eof.get() || got.borrow().len() >= want
    };
    assert!(run_until(lp, WAIT, done), "the peer read {} bytes", got.borrow().len());
    got.into_inner()
}

/// A connected pair made by the calls under test: (server log, client log, client transport).
fn unix_pair(lp: &EventLoop, path: &Path, server_keep_open: bool) -> (Server, Log, Log, Transport) {
    let (server_log, client_log) = (Log::default(), Log::default());
    let factory_log = server_log.clone();
    let factory = move || Rec {
        log: factory_log.clone(),
        echo: false,
        keep_open: server_keep_open,
        transport: None,
    };
    let (lp2, path2) = (lp.clone(), path.to_owned());
    let future = async move {
        lp2.create_unix_server(factory, path2.as_path(), UnixServerOptions::default()).await
    };
    let server = lp.run_until_complete(future).unwrap().expect("create_unix_server");
    let client = connect(lp, &client_log, path);
    assert!(run_until(lp, WAIT, || server_log.made() == 1), "server connection_made");
    (server, server_log, client_log, client)
}

backend_tests! {
    /// Item 95 (and the echo round trip): a path given as `PathBuf`, `&str`, bytes.
    fn echo_round_trip_through_path_forms(lp) {
        let (_dir, path) = sock_path(lp, "echo_round_trip_through_path_forms");
        let server = serve(lp, &Log::default(), true, path.clone());
        let str_path = path.to_str().unwrap().to_owned();
        let byte_path = path.as_os_str().as_encoded_bytes().to_vec();
        let forms: Vec<UnixPath> =
            vec![path.as_path().into(), str_path.into(), byte_path.into()];
        for (i, form) in forms.into_iter().enumerate() {
            let log = Log::default();
            let transport = connect(lp, &log, form);
            let data = pattern(100_000 + i);
            transport.write(&data).unwrap();
            assert!(run_until(lp, WAIT, || log.data().len() == data.len()), "echo {i}");
            assert_eq!(log.data(), data);
            transport.close();
            assert!(run_until(lp, WAIT, || log.lost() == 1), "client lost {i}");
            assert_eq!(log.events.borrow().last(), Some(&Ev::Lost(None)));
        }
        assert!(run_until(lp, WAIT, || server.connection_count() == 0));
        close_and_wait(lp, &server);
        assert!(!path.exists(), "the socket file is removed at close");
    }

    /// Item 95: a blocking std client against the server, many bytes each way.
    fn echo_with_a_std_client(lp) {
        let (_dir, path) = sock_path(lp, "echo_with_a_std_client");
        let server = serve(lp, &Log::default(), true, path.as_path());
        check_echo(lp, &path, &pattern(1 << 20), 30.0);
        close_and_wait(lp, &server);
    }

    /// `get_extra_info("peername"/"sockname")` on both ends of a filesystem-path connection.
    fn peername_and_sockname(lp) {
        let (_dir, path) = sock_path(lp, "peername_and_sockname");
        let (server, server_log, _client_log, client) = unix_pair(lp, &path, false);
        let Some(ExtraInfo::Address(peer)) = client.get_extra_info("peername") else {
            panic!("client peername");
        };
        assert_eq!(peer.as_pathname(), Some(path.as_path()));
        let Some(ExtraInfo::Address(local)) = client.get_extra_info("sockname") else {
            panic!("client sockname");
        };
        assert!(local.is_unnamed(), "the client socket was never bound: {local:?}");
        let accepted = server_log.transport(0);
        assert_eq!(accepted.sockname().unwrap().as_pathname(), Some(path.as_path()));
        assert!(accepted.peername().unwrap().is_unnamed());
        assert_eq!(server.sockets()[0].as_pathname(), Some(path.as_path()));
        assert!(format!("{server:?}").contains(&format!("sockets=[{}]", path.display())), "{server:?}");
        client.close();
        close_and_wait(lp, &server);
    }

    /// An abstract-namespace server: no file, peernames carry the name, the name is free
    /// again once the server is closed.
    fn abstract_namespace_server(lp) {
        let name = abstract_name(lp, "abstract_namespace_server");
        let server = serve(lp, &Log::default(), true, name.clone());
        assert_eq!(server.sockets()[0].as_abstract_namespace(), Some(&name[1..]));
        assert!(format!("{server:?}").contains("sockets=[@ringloop-ux-"), "{server:?}");
        let log = Log::default();
        let as_str = String::from_utf8(name.clone()).unwrap();
        let client = connect(lp, &log, as_str.as_str());
        assert_eq!(client.peername().unwrap().as_abstract_namespace(), Some(&name[1..]));
        client.write(b"ping").unwrap();
        assert!(run_until(lp, WAIT, || log.data() == b"ping"));
        let taken = try_serve(lp, &Log::default(), false, name.clone(), UnixServerOptions::default());
        let err = taken.expect_err("the name is taken");
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE), "{err}");
        let want = format!("create_unix_server: bind to @{} (the name is taken)", &as_str[1..]);
        assert!(err.to_string().starts_with(&want), "{err}");
        client.close();
        close_and_wait(lp, &server);
        let err = try_connect(lp, &Log::default(), name.clone(), UnixConnectOptions::new())
            .expect_err("nobody listens any more");
        assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED), "{err}");
        let again = serve(lp, &Log::default(), false, name);
        close_and_wait(lp, &again);
    }

    /// Item 95: a socket file left by a dead server is replaced at bind.
    fn a_stale_socket_file_is_replaced(lp) {
        let (_dir, path) = sock_path(lp, "a_stale_socket_file_is_replaced");
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "the dead listener left its file");
        echo_then_close(lp, &path, b"after the stale file");
    }

    /// Item 95: a regular file at the path → EADDRINUSE, "bind to PATH (a file that is not a
    /// socket ...)",
    /// and the file is left alone.
    fn a_regular_file_at_the_path_is_address_in_use(lp) {
        let (_dir, path) = sock_path(lp, "a_regular_file_at_the_path_is_address_in_use");
        std::fs::write(&path, b"not a socket").unwrap();
        let err = try_serve(lp, &Log::default(), false, path.as_path(), UnixServerOptions::default())
            .expect_err("a regular file is in the way");
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE), "{err}");
        let text = err.to_string();
        let want = format!("create_unix_server: bind to {} (a file that is not a socket", path.display());
        assert!(text.starts_with(&want), "{text}");
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
    }

    /// Item 95: connecting to a missing path → ENOENT, naming the path; to a socket file
    /// nobody listens on → ECONNREFUSED.
    fn connecting_to_a_missing_path_is_enoent(lp) {
        let (_dir, path) = sock_path(lp, "connecting_to_a_missing_path_is_enoent");
        let err = try_connect(lp, &Log::default(), path.as_path(), UnixConnectOptions::new())
            .expect_err("no such file");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
        assert_eq!(err.io_error().unwrap().kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        drop(UnixListener::bind(&path).unwrap());
        let err = try_connect(lp, &Log::default(), path.as_path(), UnixConnectOptions::new())
            .expect_err("nobody listening");
        assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED), "{err}");
    }

    /// A listener whose backlog is full: the connect fails at once with EAGAIN on both
    /// backends (the kernel does not queue a Unix connect), rather than waiting.
    fn a_full_backlog_is_eagain(lp) {
        use std::os::fd::AsRawFd;
        let (_dir, path) = sock_path(lp, "a_full_backlog_is_eagain");
        let listener = UnixListener::bind(&path).unwrap();
        // SAFETY: listen(2) on a bound socket we own only changes its backlog.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        let mut queued = Vec::new();
        let refusal = loop {
            match nonblocking_connect(&path) {
                Ok(sock) if queued.len() < 64 => queued.push(sock),
                Ok(_) => panic!("64 connects queued on a backlog of 0"),
                Err(errno) => break errno,
            }
        };
        assert_eq!(refusal, libc::EAGAIN);
        let started = lp.time();
        let err = try_connect(lp, &Log::default(), path.as_path(), UnixConnectOptions::new())
            .expect_err("the backlog is full");
        assert_eq!(err.raw_os_error(), Some(libc::EAGAIN), "{err}");
        assert!(lp.time() - started < 1.0, "failed at once");
    }

    /// Item 96: path and sock together, neither, and a sock of the wrong kind.
    fn argument_checks(lp) {
        let (_dir, path) = sock_path(lp, "argument_checks");
        let invalid = |result: Result<(), Error>, what: &str| match result {
            Err(Error::InvalidArgument { message: text, .. }) => text,
            other => panic!("{what}: {other:?}"),
        };
        let sock: OwnedFd = UnixListener::bind(&path).unwrap().into();
        let both = UnixServerOptions::default().sock(sock);
        let text = invalid(try_serve(lp, &Log::default(), false, path.as_path(), both).map(drop), "both");
        assert!(text.contains("path and sock can not be specified at the same time"), "{text}");
        let text = invalid(
            try_serve(lp, &Log::default(), false, UnixPath::None, UnixServerOptions::default()).map(drop),
            "neither",
        );
        assert!(text.contains("path was not specified, and no sock specified"), "{text}");
        let tcp: OwnedFd = std::net::TcpListener::bind("127.0.0.1:0").unwrap().into();
        let text = invalid(
            try_serve(lp, &Log::default(), false, None::<&str>, UnixServerOptions::default().sock(tcp))
                .map(drop),
            "tcp sock",
        );
        assert!(text.contains("A UNIX Domain Stream Socket was expected"), "{text}");
        let dgram: OwnedFd = std::os::unix::net::UnixDatagram::unbound().unwrap().into();
        let text = invalid(
            try_serve(lp, &Log::default(), false, UnixPath::None, UnixServerOptions::default().sock(dgram))
                .map(drop),
            "datagram sock",
        );
        assert!(text.contains("A UNIX Domain Stream Socket was expected"), "{text}");

        let (a, _b) = UnixStream::pair().unwrap();
        let both = UnixConnectOptions::new().sock(a);
        let text = invalid(try_connect(lp, &Log::default(), path.as_path(), both).map(drop), "both");
        assert!(text.contains("path and sock can not be specified at the same time"), "{text}");
        let neither = try_connect(lp, &Log::default(), UnixPath::None, UnixConnectOptions::new());
        let text = invalid(neither.map(drop), "neither");
        assert!(text.contains("no path and sock were specified"), "{text}");
        let tcp = std::net::TcpStream::connect(
            std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap(),
        )
        .unwrap();
        let wrong = try_connect(lp, &Log::default(), UnixPath::None, UnixConnectOptions::new().sock(tcp));
        let text = invalid(wrong.map(drop), "tcp sock");
        assert!(text.contains("A UNIX Domain Stream Socket was expected"), "{text}");
        let long = "x".repeat(200);
        let text = invalid(try_connect(lp, &Log::default(), long.as_str(), UnixConnectOptions::new()).map(drop), "long");
        assert!(text.contains("more than the 107"), "{text}");
        let nul = b"/tmp/a\0b".to_vec();
        let text = invalid(try_serve(lp, &Log::default(), false, nul, UnixServerOptions::default()).map(drop), "nul");
        assert!(text.contains("embedded NUL"), "{text}");
    }

    /// Item 96: a failed bind closes the socket it made (counted in a child process).
    fn a_failed_bind_closes_its_socket(lp) {
        if !in_child(lp, "a_failed_bind_closes_its_socket") {
            return;
        }
        let (_dir, path) = sock_path(lp, "a_failed_bind_closes_its_socket");
        std::fs::write(&path, b"").unwrap();
        let missing_dir = path.with_file_name("no-such-dir").join("s.sock");
        let _ = try_serve(lp, &Log::default(), false, path.as_path(), UnixServerOptions::default());
        let before = open_fds();
        for _ in 0..20 {
            let err = try_serve(lp, &Log::default(), false, path.as_path(), UnixServerOptions::default())
                .expect_err("EADDRINUSE");
            assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
            let err = try_serve(lp, &Log::default(), false, missing_dir.as_path(), UnixServerOptions::default())
                .expect_err("ENOENT");
            assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
            let err = try_connect(lp, &Log::default(), missing_dir.as_path(), UnixConnectOptions::new())
                .expect_err("ENOENT");
            assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
        }
        assert_eq!(open_fds(), before, "no descriptor leaked");
    }

    /// Item 97: `close()` removes the socket file at once; no error if it is already gone.
    fn cleanup_removes_the_socket_file(lp) {
        let (_dir, path) = sock_path(lp, "cleanup_removes_the_socket_file");
        let errors = capture_exceptions(lp);
        let server = serve(lp, &Log::default(), false, path.as_path());
        assert!(path.exists());
        server.close();
        assert!(!path.exists(), "removed by close() itself");
        close_and_wait(lp, &server);

        let gone = serve(lp, &Log::default(), false, path.as_path());
        std::fs::remove_file(&path).unwrap();
        close_and_wait(lp, &gone);
        assert!(!path.exists());
        assert!(errors.borrow().is_empty(), "{:?}", errors.borrow());
    }

    /// Item 97: a file that replaced the socket meanwhile (another server) is left alone.
    fn cleanup_leaves_a_replaced_file(lp) {
        let (_dir, path) = sock_path(lp, "cleanup_leaves_a_replaced_file");
        let server = serve(lp, &Log::default(), false, path.as_path());
        std::fs::remove_file(&path).unwrap();
        let other = UnixListener::bind(&path).unwrap();
        let other_inode = inode(&path);
        close_and_wait(lp, &server);
        assert_eq!(inode(&path), other_inode, "the replacement is still there");
        let client = UnixStream::connect(&path).expect("the replacement still accepts");
        drop((client, other));

        // A regular file in its place is left alone too.
        let path = path.with_file_name("t.sock");
        let server = serve(lp, &Log::default(), false, path.as_path());
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"mine").unwrap();
        close_and_wait(lp, &server);
        assert_eq!(std::fs::read(&path).unwrap(), b"mine");
    }

    /// Item 97: `cleanup_socket=false` leaves the file.
    fn cleanup_socket_false_keeps_the_file(lp) {
        let (_dir, path) = sock_path(lp, "cleanup_socket_false_keeps_the_file");
        let options = UnixServerOptions::default().cleanup_socket(false);
        let server = try_serve(lp, &Log::default(), false, path.as_path(), options).unwrap();
        let before = inode(&path);
        close_and_wait(lp, &server);
        assert_eq!(inode(&path), before, "the file stays");
        // It is stale now: the next server replaces it.
        echo_then_close(lp, &path, b"next");
    }

    /// Item 97: a server made from `sock=` removes the file too (and not with
    /// `cleanup_socket=false`); it serves on the socket given.
    fn cleanup_with_a_sock(lp) {
        let (_dir, path) = sock_path(lp, "cleanup_with_a_sock");
        let listener = UnixListener::bind(&path).unwrap();
        let options = UnixServerOptions::default().sock(listener);
        let server = try_serve(lp, &Log::default(), true, None::<&str>, options).unwrap();
        assert_eq!(server.sockets()[0].as_pathname(), Some(path.as_path()));
        check_echo(lp, &path, b"via sock", WAIT);
        close_and_wait(lp, &server);
        assert!(!path.exists(), "removed for a sock= server too");

        let listener = UnixListener::bind(&path).unwrap();
        let options = UnixServerOptions::default().sock(listener).cleanup_socket(false);
        let server = try_serve(lp, &Log::default(), false, UnixPath::None, options).unwrap();
        close_and_wait(lp, &server);
        assert!(path.exists(), "cleanup_socket=false with sock= keeps it");
    }

    /// `start_serving=false`: the socket listens (a connect is queued) but nothing is accepted
    /// until `start_serving`.
    fn start_serving_later(lp) {
        let (_dir, path) = sock_path(lp, "start_serving_later");
        let options = UnixServerOptions::default().start_serving(false).backlog(5);
        let server_log = Log::default();
        let server = try_serve(lp, &server_log, true, path.as_path(), options).unwrap();
        assert!(!server.is_serving());
        let early = UnixStream::connect(&path).expect("the socket listens");
        spin(lp, 0.05);
        assert_eq!(server.connection_count(), 0, "accepted before start_serving");
        server.start_serving().unwrap();
        assert!(server.is_serving());
        assert!(run_until(lp, WAIT, || server.connection_count() == 1), "the queued connection");
        drop(early);
        assert!(run_until(lp, WAIT, || server.connection_count() == 0), "its EOF closed it");
        let log = Log::default();
        let client = connect(lp, &log, path.as_path());
        client.write(b"now").unwrap();
        assert!(run_until(lp, WAIT, || log.data() == b"now"));
        client.close();
        close_and_wait(lp, &server);
    }

    /// `wait_closed` waits for the Unix clients, and returns once the last one is gone.
    fn wait_closed_waits_for_unix_clients(lp) {
        let (_dir, path) = sock_path(lp, "wait_closed_waits_for_unix_clients");
        let (server, server_log, client_log, client) = unix_pair(lp, &path, false);
        let log2 = Log::default();
        let second = connect(lp, &log2, path.as_path());
        assert!(run_until(lp, WAIT, || server.connection_count() == 2));
        server.close();
        let s = server.clone();
        let waiting = lp.create_task(async move { s.wait_closed().await }).unwrap();
        spin(lp, 0.05);
        assert!(!waiting.done(), "two clients still connected");
        client.close();
        assert!(run_until(lp, WAIT, || server.connection_count() == 1));
        spin(lp, 0.02);
        assert!(!waiting.done(), "one client still connected");
        second.close();
        assert!(run_until(lp, WAIT, || waiting.done()), "wait_closed after the last client");
        assert_eq!(server_log.lost(), 2, "each server-side connection lost once");
        assert_eq!((client_log.lost(), log2.lost()), (1, 1));
    }

    /// Item 98: `connect_accepted_socket` on an accepted Unix socket exchanges data and ends
    /// in `connection_lost`; `create_unix_connection(sock=)` takes a connected one.
    fn accepted_and_given_sockets(lp) {
        let (_dir, path) = sock_path(lp, "accepted_and_given_sockets");
        let listener = UnixListener::bind(&path).unwrap();
        let mut peer = UnixStream::connect(&path).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let log = Log::default();
        let (transport, _) = connect_accepted(lp, accepted.into(), rec(&log, false)());
        transport.write(b"from the loop").unwrap();
        peer.write_all(b"to the loop").unwrap();
        assert!(run_until(lp, WAIT, || log.data() == b"to the loop"));
        assert_eq!(read_while_running(lp, &mut peer, 13), b"from the loop");
        drop(peer);
        assert!(run_until(lp, WAIT, || log.lost() == 1));
        assert_eq!(log.events.borrow()[1..], [Ev::Data(b"to the loop".to_vec()), Ev::Eof, Ev::Lost(None)]);

        let (mut peer, ours) = UnixStream::pair().unwrap();
        let log = Log::default();
        let options = UnixConnectOptions::new().sock(ours);
        let transport = try_connect(lp, &log, UnixPath::None, options).unwrap();
        transport.write(b"given").unwrap();
        transport.close();
        assert_eq!(read_while_running(lp, &mut peer, usize::MAX), b"given");
        assert!(run_until(lp, WAIT, || log.lost() == 1));
    }

    /// Section 13 over a Unix connection: `write_eof` half-closes; the other side, kept
    /// open, still answers; then each side loses the connection exactly once.
    fn write_eof_half_close(lp) {
        let (_dir, path) = sock_path(lp, "write_eof_half_close");
        let (server, server_log, client_log, client) = unix_pair(lp, &path, true);
        client.write(b"question").unwrap();
        client.write_eof();
        client.write_eof();
        assert!(run_until(lp, WAIT, || server_log.count(|e| *e == Ev::Eof) == 1));
        assert_eq!(server_log.data(), b"question");
        let accepted = server_log.transport(0);
        accepted.write(b"answer").unwrap();
        accepted.close();
        assert!(run_until(lp, WAIT, || client_log.lost() == 1 && server_log.lost() == 1));
        assert_eq!(
            client_log.events.borrow()[..],
            [Ev::Made, Ev::Data(b"answer".to_vec()), Ev::Eof, Ev::Lost(None)]
        );
        lost_once_each_then_close(lp, &server, &client_log, &server_log);
    }

    /// Section 13 over a Unix connection: `close()` flushes a large buffer before
    /// `connection_lost`; `close()` twice loses once.
    fn close_flushes_before_connection_lost(lp) {
        let (_dir, path) = sock_path(lp, "close_flushes_before_connection_lost");
        let (server, server_log, client_log, client) = unix_pair(lp, &path, false);
        let data = pattern(8 << 20);
        let accepted = server_log.transport(0);
        accepted.write(&data).unwrap();
        assert!(accepted.get_write_buffer_size() > 0, "the kernel cannot take 8 MiB at once");
        accepted.close();
        accepted.close();
        assert!(accepted.is_closing());
        assert_eq!(server_log.lost(), 0, "not before the flush");
        assert!(run_until(lp, 30.0, || server_log.lost() == 1), "flushed and lost");
        assert_eq!(server_log.events.borrow().last(), Some(&Ev::Lost(None)));
        assert!(run_until(lp, WAIT, || client_log.lost() == 1));
        assert_eq!(client_log.data(), data, "every byte arrived, in order");
        client.close();
        lost_once_each_then_close(lp, &server, &client_log, &server_log);
    }

    /// Section 13 over a Unix connection: `abort()` drops the buffer and loses the
    /// connection once with no error; the peer sees the end.
    fn abort_drops_the_buffer(lp) {
        let (_dir, path) = sock_path(lp, "abort_drops_the_buffer");
        let (server, server_log, client_log, client) = unix_pair(lp, &path, false);
        client.write(&pattern(8 << 20)).unwrap();
        assert!(client.get_write_buffer_size() > 0);
        client.abort();
        client.abort();
        assert!(run_until(lp, WAIT, || client_log.lost() == 1));
        assert_eq!(client_log.events.borrow().last(), Some(&Ev::Lost(None)));
        assert!(run_until(lp, WAIT, || server_log.lost() == 1), "the server side ends");
        assert!(server_log.data().len() < 8 << 20, "the buffer was dropped");
        spin(lp, 0.02);
        assert_eq!(client_log.lost(), 1);
        close_and_wait(lp, &server);
    }

    /// Section 13 over a Unix connection: `pause_reading` holds data back until
    /// `resume_reading`; both are idempotent and `is_reading` follows.
    fn pause_and_resume_reading(lp) {
        let (_dir, path) = sock_path(lp, "pause_and_resume_reading");
        let (server, server_log, client_log, client) = unix_pair(lp, &path, false);
        client.pause_reading();
        client.pause_reading();
        assert!(!client.is_reading());
        server_log.transport(0).write(b"held back").unwrap();
        spin(lp, 0.05);
        assert!(client_log.data().is_empty(), "nothing delivered while paused");
        client.resume_reading();
        client.resume_reading();
        assert!(client.is_reading());
        assert!(run_until(lp, WAIT, || client_log.data() == b"held back"));
        client.close();
        assert!(!client.is_reading());
        assert!(run_until(lp, WAIT, || server_log.lost() == 1 && client_log.lost() == 1));
        close_and_wait(lp, &server);
    }

    /// Streams: `start_unix_server` and `open_unix_connection` echo lines.
    fn streams_echo(lp) {
        let (_dir, path) = sock_path(lp, "streams_echo");
        let lp2 = lp.clone();
        let path2 = path.clone();
        let replies = lp.run_until_complete(async move {
            let server = lp2.start_unix_server(echo_lines, path2.as_path(), UnixServerOptions::default()).await?;
            let (reader, writer) =
                lp2.open_unix_connection(path2.as_path(), UnixConnectOptions::new()).await?;
            let mut replies = Vec::new();
            for line in [&b"one\n"[..], b"two\n"] {
                writer.write(line)?;
                writer.drain().await?;
                replies.push(reader.readline().await?);
            }
            writer.write_eof();
            replies.push(reader.read_to_end().await?);
            writer.close();
            writer.wait_closed().await?;
            server.close();
            server.wait_closed().await;
            Ok::<_, Error>(replies)
        });
        let replies = replies.unwrap().unwrap();
        assert_eq!(replies, [b"one\n".to_vec(), b"two\n".to_vec(), Vec::new()]);
        assert!(!path.exists());
    }

    /// No descriptor is left behind by servers, clients and their connections (counted in a
    /// child process).
    fn no_descriptor_leaks(lp) {
        if !in_child(lp, "no_descriptor_leaks") {
            return;
        }
        let (_dir, path) = sock_path(lp, "no_descriptor_leaks");
        let warm = serve(lp, &Log::default(), true, path.as_path());
        close_and_wait(lp, &warm);
        let before = open_fds();
        for round in 0..5 {
            let server = serve(lp, &Log::default(), true, path.as_path());
            let logs: Vec<Log> = (0..10).map(|_| Log::default()).collect();
            let clients: Vec<Transport> = logs.iter().map(|log| connect(lp, log, path.as_path())).collect();
            for (i, client) in clients.iter().enumerate() {
                client.write(format!("{round}/{i}").as_bytes()).unwrap();
            }
            for (i, log) in logs.iter().enumerate() {
                let want = format!("{round}/{i}").into_bytes();
                assert!(run_until(lp, WAIT, || log.data() == want), "echo {round}/{i}");
            }
            for (i, client) in clients.iter().enumerate() {
                if i % 2 == 0 { client.close() } else { client.abort() }
            }
            assert!(run_until(lp, WAIT, || logs.iter().all(|log| log.lost() == 1)));
            close_and_wait(lp, &server);
        }
        spin(lp, 0.05);
        assert_eq!(open_fds(), before, "no descriptor leaked");
        assert!(!path.exists());
    }
}
