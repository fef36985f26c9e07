//! TLS test material: certificates made at test time (`rcgen`), ringloop configs for them, a
//! recording protocol, blocking rustls peers on threads, and real `openssl` peers.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use ringloop::tls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use ringloop::tls::RootCertStore;
use ringloop::{
    BaseProtocol, ConnectOptions, Error, EventLoop, Protocol, Server, ServerOptions, TlsConfig,
    Transport,
};

use crate::{run_within, Ev};

/// A certificate and its key.
#[derive(Debug)]
pub struct Identity {
    /// The certificate, DER.
    pub cert: CertificateDer<'static>,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The key, PKCS#8 DER.
    pub key_der: Vec<u8>,
    /// The key, PEM.
    pub key_pem: String,
}

impl Identity {
    /// The key as rustls takes it.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// A server config presenting this certificate.
    pub fn server_config(&self) -> TlsConfig {
        TlsConfig::server(vec![self.cert.clone()], self.key()).expect("server config")
    }
}

/// A test CA and the certificates of the tests.
#[derive(Debug)]
pub struct Pki {
    /// The CA certificate, DER.
    pub ca: CertificateDer<'static>,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// For `localhost` and `127.0.0.1`, signed by the CA, valid 1975–4096.
    pub good: Identity,
    /// For `localhost`, signed by the CA, expired in 2000.
    pub expired: Identity,
    /// For `localhost`, self-signed (not from the CA).
    pub untrusted: Identity,
}

/// The certificates, made once per test binary.
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(make_pki)
}

fn make_pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "ringloop test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |expired: bool, issuer: Option<&Issuer<'_, KeyPair>>| {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, "localhost");
        if expired {
            params.not_before = rcgen::date_time_ymd(1999, 1, 1);
            params.not_after = rcgen::date_time_ymd(2000, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = match issuer {
            Some(issuer) => params.signed_by(&key, issuer).unwrap(),
            None => params.self_signed(&key).unwrap(),
        };
        Identity {
            cert: cert.der().clone(),
            cert_pem: cert.pem(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        }
    };
    Pki {
        ca: ca_cert.der().clone(),
        ca_pem: ca_cert.pem(),
        good: leaf(false, Some(&issuer)),
        expired: leaf(true, Some(&issuer)),
        untrusted: leaf(false, None),
    }
}

impl Pki {
    /// The CA as a root store.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        roots
    }

    /// A client config trusting the CA.
    pub fn client(&self) -> TlsConfig {
        TlsConfig::client_trusting(self.roots())
    }

    /// A server config presenting the good certificate.
    pub fn server(&self) -> TlsConfig {
        self.good.server_config()
    }

    /// Writes the CA and `id` as PEM files into `dir`: `(ca, cert, key)` paths.
    pub fn write_files(&self, dir: &Path, id: &Identity) -> (PathBuf, PathBuf, PathBuf) {
        let (ca, cert, key) = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&ca, &self.ca_pem).unwrap();
        std::fs::write(&cert, &id.cert_pem).unwrap();
        std::fs::write(&key, &id.key_pem).unwrap();
        (ca, cert, key)
    }
}

/// rustls' own client config trusting the CA (for blocking peers on threads).
pub fn rustls_client() -> Arc<rustls::ClientConfig> {
    let config = rustls::ClientConfig::builder_with_provider(ringloop::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(pki().roots())
        .with_no_client_auth();
    Arc::new(config)
}

/// rustls' own server config with the good certificate (for blocking peers on threads).
pub fn rustls_server() -> Arc<rustls::ServerConfig> {
    let config = rustls::ServerConfig::builder_with_provider(ringloop::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki().good.cert.clone()], pki().good.key())
        .unwrap();
    Arc::new(config)
}

/// A blocking TLS server on a thread, for one connection: `serve` runs on the rustls stream
/// once the handshake is done. Returns the port and the thread.
pub fn rustls_peer_server<T: Send + 'static>(
    serve: impl FnOnce(&mut rustls::StreamOwned<rustls::ServerConnection, TcpStream>) -> T
        + Send
        + 'static,
) -> (u16, std::thread::JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let thread = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        tcp.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let conn = rustls::ServerConnection::new(rustls_server()).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).unwrap();
        }
        serve(&mut stream)
    });
    (port, thread)
}

/// A stream protocol that records its callbacks (as [`Ev`]), the bytes it got and the error
/// of `connection_lost`; it echoes what it receives when `echo` is set.
#[derive(Debug, Default)]
pub struct TlsRec {
    /// The transport of `connection_made`.
    pub transport: Option<Transport>,
    /// Every callback, in order.
    pub events: Vec<Ev>,
    /// Every byte received.
    pub data: Vec<u8>,
    /// `connection_lost`'s error.
    pub lost_error: Option<Error>,
    /// Write back what arrives.
    pub echo: bool,
}

impl TlsRec {
    /// A recorder that echoes.
    pub fn echo() -> TlsRec {
        TlsRec { echo: true, ..TlsRec::default() }
    }

    /// How many `connection_lost` calls came.
    pub fn lost_count(&self) -> usize {
        self.events.iter().filter(|e| matches!(e, Ev::Lost(_))).count()
    }

    /// True once `connection_lost` came.
    pub fn is_lost(&self) -> bool {
        self.lost_count() > 0
    }
}

impl BaseProtocol for TlsRec {
    fn connection_made(&mut self, transport: Transport) {
        self.events.push(Ev::Made);
        self.transport = Some(transport);
    }

    fn connection_lost(&mut self, error: Option<Error>) {
        self.events.push(Ev::Lost(crate::errno_of(&error)));
        self.lost_error = error;
    }

    fn pause_writing(&mut self) {
        self.events.push(Ev::Pause);
    }

    fn resume_writing(&mut self) {
        self.events.push(Ev::Resume);
    }
}

impl Protocol for TlsRec {
    fn data_received(&mut self, data: &[u8]) {
        self.events.push(Ev::Data(data.len()));
        self.data.extend_from_slice(data);
        if self.echo {
            self.transport.as_ref().unwrap().write(data).unwrap();
        }
    }

    fn eof_received(&mut self) -> bool {
        self.events.push(Ev::Eof);
        false
    }
}

/// A shared recorder.
pub type Shared = Rc<RefCell<TlsRec>>;

/// True if `openssl` runs here; otherwise prints a `SKIPPED` line for `test`.
pub fn have_openssl(test: &str) -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        crate::skipped(format!("{test}: openssl is not installed"));
    }
    found
}

/// A free TCP port on 127.0.0.1 (bound and released: a peer process binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An `openssl` process, killed when dropped; its output lines come through `lines`.
#[derive(Debug)]
pub struct OpensslPeer {
    /// The process.
    pub child: Child,
    /// Its stdout and stderr, line by line.
    pub lines: mpsc::Receiver<String>,
}

impl OpensslPeer {
    /// Starts `openssl args...`, its stdin piped.
    pub fn spawn(args: &[&str]) -> OpensslPeer {
        let mut child = Command::new("openssl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning openssl");
        let (sender, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        OpensslPeer { child, lines }
    }

    /// Waits (bounded) for a line containing `text`; the lines read meanwhile.
    pub fn wait_for(&self, text: &str, secs: u64) -> Result<Vec<String>, Vec<String>> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(text);
                    seen.push(line);
                    if found {
                        return Ok(seen);
                    }
                }
                Err(_) => break,
            }
        }
        Err(seen)
    }

    /// Writes `data` to its stdin.
    pub fn send(&mut self, data: &[u8]) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(data).unwrap();
        stdin.flush().unwrap();
    }

    /// Closes its stdin, then waits (bounded) for it to exit: its exit status, if it did.
    pub fn finish(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Every line it printed so far.
    pub fn drain(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for OpensslPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `openssl s_server` on a free port with `id`, answering each line reversed (`-rev`), for
/// one connection; `extra` adds flags (`-tls1_3`). Waits until it accepts.
pub fn s_server(dir: &Path, id: &Identity, extra: &[&str]) -> (OpensslPeer, u16) {
    let (_, cert, key) = pki().write_files(dir, id);
    for _ in 0..5 {
        let port = free_port();
        let accept = format!("127.0.0.1:{port}");
        let mut args = vec!["s_server", "-accept", &accept, "-rev", "-naccept", "1"];
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        args.extend(["-cert", cert, "-key", key]);
        args.extend(extra);
        let peer = OpensslPeer::spawn(&args);
        if peer.wait_for("ACCEPT", 20).is_ok() {
            return (peer, port);
        }
    }
    panic!("openssl s_server did not start");
}

/// Generous bound for "this must happen" waits (2 shared cores, debug build).
pub const WAIT: f64 = 20.0;

/// A server protocol whose recorder the test keeps.
pub struct Tap(pub Shared);

impl BaseProtocol for Tap {
    fn connection_made(&mut self, transport: Transport) {
        self.0.borrow_mut().connection_made(transport);
    }
    fn connection_lost(&mut self, error: Option<Error>) {
        self.0.borrow_mut().connection_lost(error);
    }
    fn pause_writing(&mut self) {
        self.0.borrow_mut().pause_writing();
    }
    fn resume_writing(&mut self) {
        self.0.borrow_mut().resume_writing();
    }
}

impl Protocol for Tap {
    fn data_received(&mut self, data: &[u8]) {
        // Not through the shared borrow: the echo writes, which may call back.
        let (echo, transport) = {
            let mut rec = self.0.borrow_mut();
            rec.events.push(Ev::Data(data.len()));
            rec.data.extend_from_slice(data);
            (rec.echo, rec.transport.clone())
        };
        if echo {
            transport.unwrap().write(data).unwrap();
        }
    }
    fn eof_received(&mut self) -> bool {
        self.0.borrow_mut().eof_received()
    }
}

/// The server side's recorders, in the order the connections were made.
pub type Served = Rc<RefCell<Vec<Shared>>>;

/// A TLS server on 127.0.0.1 (the good certificate unless `options` has a config), echoing
/// when `echo`.
pub fn tls_server(lp: &EventLoop, echo: bool, options: ServerOptions) -> (Server, u16, Served) {
    let served: Served = Rc::default();
    let sink = served.clone();
    let factory = move || {
        let rec = Rc::new(RefCell::new(TlsRec { echo, ..TlsRec::default() }));
        sink.borrow_mut().push(rec.clone());
        Tap(rec)
    };
    let lp2 = lp.clone();
    let options = match options.ssl {
        Some(_) => options,
        None => options.ssl(pki().server()),
    };
    let server =
        run_within(
            lp,
            WAIT,
            async move { lp2.create_server(factory, "127.0.0.1:0", options).await },
        )
        .expect("create_server");
    let port = server.sockets()[0].as_socket().unwrap().port();
    (server, port, served)
}

/// A TLS client to `port` (server name 127.0.0.1 unless the options say otherwise).
pub fn tls_connect(
    lp: &EventLoop,
    port: u16,
    options: ConnectOptions,
) -> Result<(Transport, Shared), Error> {
    let lp2 = lp.clone();
    run_within(lp, WAIT, async move {
        lp2.create_connection(TlsRec::default, ("127.0.0.1", port), options).await
    })
}

/// A client config trusting the test CA.
pub fn client_options() -> ConnectOptions {
    ConnectOptions::new().ssl(pki().client())
}

/// Closes `server` and waits for it.
pub fn close_server(lp: &EventLoop, server: Server) {
    server.close();
    run_within(lp, WAIT, async move { server.wait_closed().await });
}
