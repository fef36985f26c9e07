//! Unix stream sockets: the [`UnixPath`] argument and `create_unix_connection`. The server
//! side (`create_unix_server`) is in `server/unix.rs`.

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use socket2::{Domain, SockAddr, SockRef, Socket, Type};

use super::connect::{sockaddr_buf, InFlight};
use crate::driver::Op;
use crate::error::{ArgumentKind, Error, Result};
use crate::event_loop::EventLoop;
use crate::protocol::adapt;
use crate::protocol::AnyProtocol;
use crate::tls::TlsConfig;
use crate::transport::Transport;

/// The longest `sun_path` Linux takes, in bytes (a filesystem path also needs a final NUL).
const SUN_PATH_MAX: usize = 108;

/// The `path` argument of the Unix socket calls (asyncio's `str`, `bytes` or path-like
/// `path`), built with `into()` from `&str`, `String`, `&Path`, `PathBuf`, `&OsStr`,
/// `OsString`, `&[u8]`, `Vec<u8>`, a byte array, or an `Option` of any of them (`None` is
/// [`UnixPath::None`]).
///
/// A leading NUL byte names a socket in Linux's abstract namespace (no file is made).
///
/// ```
/// use ringloop::UnixPath;
///
/// assert!(UnixPath::from(&b"\0ringloop-doc"[..]).is_abstract());
/// assert!(!UnixPath::from("/run/app.sock").is_abstract());
/// assert_eq!(UnixPath::from(None::<&str>), UnixPath::None);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum UnixPath {
    /// No path: a `sock` must be given instead.
    #[default]
    None,
    /// A filesystem path, or (with a leading NUL byte) an abstract name.
    Path(OsString),
}

impl UnixPath {
    /// True for a name in the abstract namespace (leading NUL byte).
    pub fn is_abstract(&self) -> bool {
        matches!(self, UnixPath::Path(p) if p.as_bytes().first() == Some(&0))
    }

    /// The path as messages show it: `/run/app.sock`, or `@name` for an abstract name (as `ss`
    /// prints it).
    pub(crate) fn describe(&self) -> String {
        match self {
            UnixPath::None => "no path".into(),
            UnixPath::Path(p) if self.is_abstract() => {
                format!("@{}", p.as_bytes()[1..].escape_ascii())
            }
            UnixPath::Path(p) => Path::new(p).display().to_string(),
        }
    }

    /// The socket address for this path; `call` names the caller in errors.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for [`UnixPath::None`], a NUL byte inside a filesystem path,
    /// or a path longer than `sun_path` holds.
    pub(crate) fn sockaddr(&self, call: &str) -> Result<SockAddr> {
        let UnixPath::Path(path) = self else {
            return Err(Error::invalid_argument(
                ArgumentKind::Missing,
                format!("{call}: no path given"),
            ));
        };
        let bytes = path.as_bytes();
        if !self.is_abstract() && bytes.contains(&0) {
            let what = self.describe();
            return Err(Error::invalid_argument(
                ArgumentKind::Malformed,
                format!("{call}: embedded NUL byte in path {what}"),
            ));
        }
        let room = if self.is_abstract() { SUN_PATH_MAX } else { SUN_PATH_MAX - 1 };
        if bytes.len() > room {
            return Err(Error::invalid_argument(
                ArgumentKind::Malformed,
                format!(
                    "{call}: path {} is {} bytes long, more than the {room} an AF_UNIX address \
                     holds",
                    self.describe(),
                    bytes.len()
                ),
            ));
        }
        SockAddr::unix(Path::new(path))
            .map_err(|e| Error::io(format!("{call}: address for {}", self.describe()), e))
    }
}

/// `From<T> for UnixPath` for each `T` that converts into an `OsString`: a filesystem path.
macro_rules! unix_path_from {
    ($($t:ty),*) => {
        $(
            impl From<$t> for UnixPath {
                fn from(path: $t) -> UnixPath {
                    UnixPath::Path(path.into())
                }
            }
        )*
    };
}

unix_path_from!(&str, String, &String, &Path, PathBuf, &PathBuf, &OsStr);

impl From<OsString> for UnixPath {
    fn from(path: OsString) -> UnixPath {
        UnixPath::Path(path)
    }
}

impl From<&[u8]> for UnixPath {
    fn from(path: &[u8]) -> UnixPath {
        UnixPath::Path(OsStr::from_bytes(path).into())
    }
}

impl From<Vec<u8>> for UnixPath {
    fn from(path: Vec<u8>) -> UnixPath {
        UnixPath::Path(OsString::from_vec(path))
    }
}

impl<const N: usize> From<&[u8; N]> for UnixPath {
    fn from(path: &[u8; N]) -> UnixPath {
        UnixPath::from(&path[..])
    }
}

impl<T: Into<UnixPath>> From<Option<T>> for UnixPath {
    fn from(path: Option<T>) -> UnixPath {
        path.map_or(UnixPath::None, Into::into)
    }
}

/// The keyword arguments of [`EventLoop::create_unix_connection`] (asyncio's `ssl`, `sock`,
/// `server_hostname`, `ssl_handshake_timeout`, `ssl_shutdown_timeout`). `Default`: no
/// socket, no TLS.
#[derive(Debug, Default)]
pub struct UnixConnectOptions {
    /// Speak TLS with this client config; `server_hostname` is then required (a path is no
    /// host name).
    pub ssl: Option<TlsConfig>,
    /// An already connected `AF_UNIX` stream socket to use instead of a path (which must then
    /// be [`UnixPath::None`]); the transport takes ownership of it.
    pub sock: Option<OwnedFd>,
    /// The name to check the server's certificate against, and send as SNI (only with
    /// `ssl`, where it is required). As for
    /// [`ConnectOptions::server_hostname`](crate::ConnectOptions::server_hostname).
    pub server_hostname: Option<String>,
    /// Seconds the TLS handshake may take (default 60; only with `ssl`).
    pub ssl_handshake_timeout: Option<f64>,
    /// Seconds the closing `close_notify` exchange may take (default 30; only with `ssl`).
    pub ssl_shutdown_timeout: Option<f64>,
}

impl UnixConnectOptions {
    /// The defaults.
    pub fn new() -> UnixConnectOptions {
        UnixConnectOptions::default()
    }

    setters! {
        sock: Some(into OwnedFd),
    }

    tls_setters!(client);
}

/// Checks that `sock` is an `AF_UNIX` `SOCK_STREAM` socket; `call` names the caller.
pub(crate) fn check_unix_stream(sock: &impl AsFd, call: &str) -> Result<()> {
    let fd = sock.as_fd().as_raw_fd();
    let socket = SockRef::from(sock);
    let family = socket.local_addr().map(|a| a.family());
    let kind = socket.r#type();
    match (family, kind) {
        (Ok(family), Ok(kind)) if i32::from(family) == libc::AF_UNIX && kind == Type::STREAM => {
            Ok(())
        }
        (Err(e), _) | (_, Err(e)) => Err(Error::io(format!("{call}(sock fd {fd})"), e)),
        (Ok(family), Ok(kind)) => Err(Error::invalid_argument(
            ArgumentKind::UnsuitableFd,
            format!(
                "{call}: A UNIX Domain Stream Socket was expected, got fd {fd} of family {family} \
             and type {kind:?}"
            ),
        )),
    }
}

impl EventLoop {
    /// Connects to the Unix stream socket at `path` and wraps the connection in a transport
    /// driving `protocol_factory()`'s protocol (asyncio's `loop.create_unix_connection`).
    /// Returns the transport and the protocol; `connection_made` runs at the next iteration.
    ///
    /// `path` is a filesystem path or an abstract name (leading NUL byte), as [`UnixPath`]
    /// takes it. With `options.sock`, that connected socket is used instead (`path` must then
    /// be [`UnixPath::None`]). The transport behaves as a TCP one does.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidArgument`]: `path` and `sock` both given, neither, a `sock` that is
    ///   not an `AF_UNIX` stream socket, or a path `AF_UNIX` cannot hold.
    /// - [`Error::Io`] from the connect, naming the path and keeping the errno (`ENOENT`: no
    ///   such file, `ECONNREFUSED`: nobody listening, `EAGAIN`: the listener's backlog is
    ///   full — Linux does not queue a Unix connect, and neither backend waits).
    ///
    /// # Example
    ///
    /// ```
    /// use std::io::Read;
    /// use ringloop::{BaseProtocol, Protocol, Transport, UnixConnectOptions};
    ///
    /// struct Hello;
    /// impl BaseProtocol for Hello {
    ///     fn connection_made(&mut self, transport: Transport) {
    ///         transport.write(b"hello").unwrap();
    ///         transport.close();
    ///     }
    /// }
    /// impl Protocol for Hello {}
    ///
    /// let path = std::env::temp_dir().join(format!("ringloop-doc-{}.sock", std::process::id()));
    /// let listener = std::os::unix::net::UnixListener::bind(&path)?;
    /// let peer = std::thread::spawn(move || {
    ///     let (mut stream, _) = listener.accept().unwrap();
    ///     let mut got = String::new();
    ///     stream.read_to_string(&mut got).unwrap();
    ///     got
    /// });
    /// let path = ringloop::run(async move {
    ///     let lp = ringloop::get_running_loop()?;
    ///     let options = UnixConnectOptions::new();
    ///     lp.create_unix_connection(|| Hello, &path, options).await?;
    ///     Ok::<_, ringloop::Error>(path)
    /// })??;
    /// assert_eq!(peer.join().unwrap(), "hello");
    /// std::fs::remove_file(path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn create_unix_connection<K, P, F>(
        &self,
        protocol_factory: F,
        path: impl Into<UnixPath>,
        mut options: UnixConnectOptions,
    ) -> Result<(Transport, Rc<RefCell<P>>)>
    where
        P: AnyProtocol<K>,
        F: FnOnce() -> P,
    {
        self.check_open()?;
        let tls = options.tls_args("create_unix_connection").client(None)?;
        let path = path.into();
        let socket =
            match (path, options.sock.take()) {
                (UnixPath::Path(_), Some(_)) => return Err(Error::invalid_argument(
                    ArgumentKind::Conflicting,
                    "create_unix_connection: path and sock can not be specified at the same time",
                )),
                (UnixPath::None, None) => {
                    return Err(Error::invalid_argument(
                        ArgumentKind::Missing,
                        "create_unix_connection: no path and sock were specified",
                    ))
                }
                (UnixPath::None, Some(sock)) => {
                    check_unix_stream(&sock, "create_unix_connection")?;
                    sock
                }
                (path, None) => self.connect_unix(&path).await?,
            };
        let protocol = Rc::new(RefCell::new(protocol_factory()));
        let app = adapt(protocol.clone());
        Ok((self.open_stream(socket, app, tls, "create_unix_connection").await?, protocol))
    }

    /// A new `AF_UNIX` stream socket, connected to `path`.
    async fn connect_unix(&self, path: &UnixPath) -> Result<OwnedFd> {
        const CALL: &str = "create_unix_connection";
        let addr = path.sockaddr(CALL)?;
        let kind = Type::STREAM.nonblocking().cloexec();
        let socket = Socket::new(Domain::UNIX, kind, None)
            .map_err(|e| Error::io(format!("{CALL}: socket(AF_UNIX)"), e))?;
        let op =
            self.submit_op(Op::Connect { fd: socket.as_raw_fd(), addr: sockaddr_buf(&addr) })?;
        // Dropped early (the caller cancelled), it cancels the connect before closing.
        let mut in_flight =
            InFlight { event_loop: self.clone(), op: Some(op), socket: Some(socket) };
        let (result, _op) = in_flight.op.as_mut().expect("set just above").await;
        in_flight.op = None;
        result.map_err(|e| Error::io(format!("{CALL}: connect to {}", path.describe()), e))?;
        Ok(in_flight.socket.take().expect("set until success").into())
    }
}
