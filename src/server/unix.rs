//! `create_unix_server`: a [`Server`] on one `AF_UNIX` stream socket, and the socket file it
//! removes when it closes (`cleanup_socket`).
//!
//! # Implementation
//!
//! As asyncio's `_UnixSelectorEventLoop.create_unix_server`: before binding a filesystem
//! path, a socket file already there (left by a server that died) is unlinked — any other
//! file makes the bind fail with `EADDRINUSE`. With `cleanup_socket`, the file's device and
//! inode are recorded once the socket is bound (or adopted from `sock`), and `close()`
//! unlinks the path only if it still names that same file: a path another server has bound
//! meanwhile is left alone. A freed inode number is often handed out again at once, but not
//! this one while the check can run: the bound socket holds its inode until the socket
//! closes, and `close()` checks before it closes the listening socket.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, SockRef, Socket, Type};

use super::{protocol_maker, Listener, Server, Serving};
use crate::error::{ArgumentKind, Error, Result};
use crate::event_loop::EventLoop;
use crate::net::unix::{check_unix_stream, UnixPath};
use crate::protocol::AnyProtocol;
use crate::tls::TlsConfig;

/// The name errors give for the call.
const CALL: &str = "create_unix_server";

/// The keyword arguments of [`EventLoop::create_unix_server`] (asyncio's `sock`, `backlog`,
/// `ssl`, `ssl_handshake_timeout`, `ssl_shutdown_timeout`, `start_serving`,
/// `cleanup_socket`). `Default`: no socket, backlog 100, no TLS, serving at once, cleaning up
/// the socket file.
#[derive(Debug)]
pub struct UnixServerOptions {
    /// Serve TLS with this server config (as [`ServerOptions::ssl`](crate::ServerOptions::ssl)).
    pub ssl: Option<TlsConfig>,
    /// Seconds each TLS handshake may take (default 60; only with `ssl`).
    pub ssl_handshake_timeout: Option<f64>,
    /// Seconds the closing `close_notify` exchange may take (default 30; only with `ssl`).
    pub ssl_shutdown_timeout: Option<f64>,
    /// An `AF_UNIX` stream socket, bound (or already listening), to serve on instead of a
    /// path (which must then be [`UnixPath::None`]).
    pub sock: Option<OwnedFd>,
    /// `listen(2)` backlog.
    pub backlog: i32,
    /// Accept at once; otherwise the socket listens (the kernel queues connections up to the
    /// backlog) and accepting starts on [`Server::start_serving`] or [`Server::serve_forever`].
    pub start_serving: bool,
    /// Unlink the socket file at [`Server::close`], unless it was replaced meanwhile (also
    /// for a server made from `sock`).
    pub cleanup_socket: bool,
}

impl Default for UnixServerOptions {
    fn default() -> UnixServerOptions {
        UnixServerOptions {
            ssl: None,
            ssl_handshake_timeout: None,
            ssl_shutdown_timeout: None,
            sock: None,
            backlog: 100,
            start_serving: true,
            cleanup_socket: true,
        }
    }
}

impl UnixServerOptions {
    /// The defaults: the same as `UnixServerOptions::default()`.
    pub fn new() -> UnixServerOptions {
        UnixServerOptions::default()
    }

    tls_setters!(server);

    setters! {
        sock: Some(into OwnedFd),
        backlog: i32,
        start_serving: bool,
        cleanup_socket: bool,
    }
}

/// The socket file a Unix server made, as it was when bound.
#[derive(Debug)]
pub(super) struct SocketFile {
    /// The path the socket is bound to.
    path: PathBuf,
    /// `st_dev` then.
    dev: u64,
    /// `st_ino` then.
    ino: u64,
}

impl SocketFile {
    /// The file `addr` names now; `None` for an abstract or unnamed address, or a path that
    /// is already gone.
    fn record(addr: &SockAddr) -> Option<SocketFile> {
        let path = addr.as_pathname()?;
        match std::fs::metadata(path) {
            Ok(meta) => Some(SocketFile { path: path.into(), dev: meta.dev(), ino: meta.ino() }),
            Err(err) => {
                if err.kind() != io::ErrorKind::NotFound {
                    log::error!(target: "ringloop", "{CALL}: cannot stat {}: {err}", path.display());
                }
                None
            }
        }
    }

    /// Unlinks the path if it still names the file recorded; a path already gone is fine.
    pub(super) fn remove_unless_replaced(self) {
        remove_socket_if(&self.path, "clean up listening", |meta| {
            let same = (meta.dev(), meta.ino()) == (self.dev, self.ino);
            if !same {
                log::debug!(target: "ringloop", "{} was replaced: not removed", self.path.display());
            }
            same
        });
    }
}

/// Unlinks `path` if it is a socket (one a dead server left); errors are logged, as the bind
/// that follows reports what matters.
fn remove_stale_socket(path: &Path) {
    remove_socket_if(path, "check or remove stale", |meta| meta.file_type().is_socket());
}

/// Unlinks `path` if `check` passes its metadata; an error, but for a path already gone, is
/// logged as "Unable to `doing` UNIX socket".
fn remove_socket_if(path: &Path, doing: &str, check: impl FnOnce(&std::fs::Metadata) -> bool) {
    let outcome = std::fs::metadata(path).and_then(|meta| {
        if check(&meta) {
            std::fs::remove_file(path)
        } else {
            Ok(())
        }
    });
    match outcome {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            let path = path.display();
            log::error!(target: "ringloop", "Unable to {doing} UNIX socket {path}: {err}");
        }
        _ => {}
    }
}

/// A new socket bound to `path` (a stale socket file there replaced). On error the socket is
/// closed.
fn bind_unix(path: &UnixPath) -> Result<Listener> {
    let addr = path.sockaddr(CALL)?;
    if let Some(file) = addr.as_pathname() {
        remove_stale_socket(file);
    }
    let kind = Type::STREAM.nonblocking().cloexec();
    let socket = Socket::new(Domain::UNIX, kind, None)
        .map_err(|e| Error::io(format!("{CALL}: socket(AF_UNIX)"), e))?;
    socket.bind(&addr).map_err(|err| {
        let what = path.describe();
        match err.raw_os_error() {
            Some(libc::EADDRINUSE) => {
                let why = match path.is_abstract() {
                    true => "the name is taken",
                    false => "a file that is not a socket, or a live server's socket, is there",
                };
                Error::io(format!("{CALL}: bind to {what} ({why})"), err)
            }
            _ => Error::io(format!("{CALL}: bind to {what}"), err),
        }
    })?;
    let addr = socket.local_addr().map_err(|e| Error::io(format!("{CALL}: getsockname"), e))?;
    Ok(Listener { fd: socket.into(), addr })
}

/// Checks and prepares a user-supplied socket (`UnixServerOptions::sock`).
fn adopt_unix(sock: OwnedFd) -> Result<Listener> {
    check_unix_stream(&sock, CALL)?;
    let socket = SockRef::from(&sock);
    socket.set_nonblocking(true).map_err(|e| Error::io(format!("{CALL}: set_nonblocking"), e))?;
    let addr = socket.local_addr().map_err(|e| Error::io(format!("{CALL}: getsockname"), e))?;
    Ok(Listener { fd: sock, addr })
}

impl EventLoop {
    /// Creates a server on the Unix stream socket at `path` (asyncio's
    /// `loop.create_unix_server`); each accepted connection gets a
    /// [`Transport`](crate::Transport) driving a fresh `protocol_factory()`, as with
    /// [`create_server`](Self::create_server).
    ///
    /// `path` is a filesystem path or an abstract name (leading NUL byte), as [`UnixPath`]
    /// takes it. A socket file already at the path is replaced (a server that died left it);
    /// with [`UnixServerOptions::cleanup_socket`] (the default) [`Server::close`] removes the
    /// file again unless it was replaced meanwhile. With [`UnixServerOptions::sock`], `path`
    /// must be [`UnixPath::None`].
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidArgument`]: `path` and `sock` both given, neither, a `sock` that is
    ///   not an `AF_UNIX` stream socket, or a path `AF_UNIX` cannot hold.
    /// - [`Error::Io`] of `EADDRINUSE` ("bind to PATH (a file that is not a socket, or a live
    ///   server's socket, is there)") when something other than a socket is at the path or the
    ///   abstract name is taken; other bind and listen errors name the path. The socket made
    ///   is closed.
    ///
    /// # Example
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use ringloop::{BaseProtocol, Protocol, Transport, UnixServerOptions};
    ///
    /// #[derive(Default)]
    /// struct Echo(Option<Transport>);
    /// impl BaseProtocol for Echo {
    ///     fn connection_made(&mut self, transport: Transport) {
    ///         self.0 = Some(transport);
    ///     }
    /// }
    /// impl Protocol for Echo {
    ///     fn data_received(&mut self, data: &[u8]) {
    ///         let _ = self.0.as_ref().unwrap().write(data);
    ///     }
    /// }
    ///
    /// let path = std::env::temp_dir().join(format!("ringloop-echo-{}.sock", std::process::id()));
    /// let reply = ringloop::run(async move {
    ///     let lp = ringloop::get_running_loop()?;
    ///     let options = UnixServerOptions::new();
    ///     let server = lp.create_unix_server(Echo::default, &path, options).await?;
    ///     let client = move || -> std::io::Result<Vec<u8>> {
    ///         let mut stream = std::os::unix::net::UnixStream::connect(&path)?;
    ///         stream.write_all(b"hello")?;
    ///         let mut reply = [0; 5];
    ///         stream.read_exact(&mut reply)?;
    ///         Ok(reply.to_vec())
    ///     };
    ///     let reply = lp.run_in_executor(None, client)?.await?;
    ///     server.close(); // removes the socket file
    ///     server.wait_closed().await;
    ///     Ok::<_, ringloop::Error>(reply)
    /// })??;
    /// assert_eq!(reply.unwrap(), b"hello");
    /// # Ok::<(), ringloop::Error>(())
    /// ```
    pub async fn create_unix_server<K, P, F>(
        &self,
        protocol_factory: F,
        path: impl Into<UnixPath>,
        mut options: UnixServerOptions,
    ) -> Result<Server>
    where
        P: AnyProtocol<K>,
        F: Fn() -> P + 'static,
    {
        self.check_open()?;
        let tls = options.tls_args(CALL).server()?;
        let listener = match (path.into(), options.sock.take()) {
            (UnixPath::Path(_), Some(_)) => {
                return Err(Error::invalid_argument(
                    ArgumentKind::Conflicting,
                    format!("{CALL}: path and sock can not be specified at the same time"),
                ))
            }
            (UnixPath::None, None) => {
                return Err(Error::invalid_argument(
                    ArgumentKind::Missing,
                    format!("{CALL}: path was not specified, and no sock specified"),
                ))
            }
            (UnixPath::None, Some(sock)) => adopt_unix(sock)?,
            (path, None) => bind_unix(&path)?,
        };
        let socket_file = options.cleanup_socket.then(|| SocketFile::record(&listener.addr));
        let make_protocol = protocol_maker(protocol_factory);
        let (backlog, start) = (options.backlog, options.start_serving);
        let serving = Serving { make_protocol, tls, backlog, start_serving: start };
        Server::start(self, vec![listener], serving, socket_file.flatten())
    }
}
