//! The network examples' command line: `--host`, `--port` and `--backend` for all of them,
//! plus the few flags each one adds (`--message`, `--quiet`, `--max-seconds`, a required
//! `--file`, `--loops`, and the TLS examples' `--cert`, `--key`, `--cafile`,
//! `--server-hostname`). A Unix-socket example takes a required `--path` instead of `--host` and
//! `--port`.

use std::fmt::Display;

use ringloop::{Address, Backend};

/// A flag beyond `--host`, `--port` and `--backend` that an example accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    /// `--message TEXT`: what a client sends (default `Hello World!`).
    Message,
    /// `--quiet`: a server prints nothing per connection.
    Quiet,
    /// `--max-seconds N`: how long a server serves.
    MaxSeconds,
    /// `--path PATH`: the Unix socket's path, required; `--host` and `--port` are then not
    /// accepted.
    Path,
    /// `--cert PEM`: a TLS server's certificate chain, required.
    Cert,
    /// `--key PEM`: a TLS server's private key, required.
    Key,
    /// `--cafile PEM`: the certificates a TLS client trusts (default: Mozilla's roots).
    CaFile,
    /// `--server-hostname NAME`: the name a TLS client checks (default: `--host`).
    ServerHostname,
    /// `--file PATH`: the file a server sends, required.
    File,
    /// `--loops N`: how many loops (threads) serve, all on one port (default 1).
    Loops,
}

impl Flag {
    /// How the usage line shows it.
    fn usage(self) -> &'static str {
        match self {
            Flag::Message => "[--message TEXT]",
            Flag::Quiet => "[--quiet]",
            Flag::MaxSeconds => "[--max-seconds N]",
            // Shown first, in place of `--host` and `--port`.
            Flag::Path => "--path PATH",
            Flag::Cert => "--cert PEM",
            Flag::Key => "--key PEM",
            Flag::CaFile => "[--cafile PEM]",
            Flag::ServerHostname => "[--server-hostname NAME]",
            Flag::File => "--file PATH",
            Flag::Loops => "[--loops N]",
        }
    }

    /// The flag as typed.
    fn name(self) -> &'static str {
        match self {
            Flag::Message => "--message",
            Flag::Quiet => "--quiet",
            Flag::MaxSeconds => "--max-seconds",
            Flag::Path => "--path",
            Flag::Cert => "--cert",
            Flag::Key => "--key",
            Flag::CaFile => "--cafile",
            Flag::ServerHostname => "--server-hostname",
            Flag::File => "--file",
            Flag::Loops => "--loops",
        }
    }
}

/// What an example's command line looks like.
#[derive(Debug)]
pub struct Spec {
    /// The program's name, for the usage line and error messages.
    pub name: &'static str,
    /// The default `--port` (unused with [`Flag::Path`]).
    pub port: u16,
    /// The flags it accepts besides `--host`, `--port` and `--backend`, in usage order.
    pub flags: &'static [Flag],
}

/// A parsed command line.
#[derive(Debug)]
pub struct Args {
    /// The host to serve on or connect to (default `127.0.0.1`).
    pub host: String,
    /// The port; for a server 0 picks a free one.
    pub port: u16,
    /// `None`: `RINGLOOP_BACKEND` or the best available.
    pub backend: Option<Backend>,
    /// `--message`: what to send.
    pub message: String,
    /// `--quiet`: no output per connection.
    pub quiet: bool,
    /// `--max-seconds`: stop serving after this long.
    pub max_seconds: Option<f64>,
    /// `--path`: the Unix socket (set whenever the spec has [`Flag::Path`]).
    pub path: Option<String>,
    /// `--cert`: the certificate chain's PEM file (set whenever the spec has [`Flag::Cert`]).
    pub cert: Option<String>,
    /// `--key`: the private key's PEM file (set whenever the spec has [`Flag::Key`]).
    pub key: Option<String>,
    /// `--cafile`: the trusted certificates' PEM file.
    pub cafile: Option<String>,
    /// `--server-hostname`: the name to check.
    pub server_hostname: Option<String>,
    /// `--file`: the file to send (set whenever the spec has [`Flag::File`]).
    pub file: Option<String>,
    /// `--loops`: how many loops serve (at least 1).
    pub loops: usize,
}

impl Args {
    /// `--host` and `--port` as one address.
    pub fn address(&self) -> Address {
        (self.host.as_str(), self.port).into()
    }
}

impl Spec {
    /// Whether it takes `--path` rather than `--host` and `--port`.
    fn unix(&self) -> bool {
        self.flags.contains(&Flag::Path)
    }

    /// The usage line.
    pub fn usage(&self) -> String {
        let address = if self.unix() { " --path PATH" } else { " [--host HOST] [--port PORT]" };
        let mut usage = format!("usage: {}{address} [--backend uring|epoll]", self.name);
        for flag in self.flags.iter().filter(|&&flag| flag != Flag::Path) {
            usage.push(' ');
            usage.push_str(flag.usage());
        }
        usage
    }

    /// Parses `args` (without the program name); the error says what is wrong.
    pub fn parse(&self, mut args: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut parsed = Args {
            host: "127.0.0.1".into(),
            port: self.port,
            backend: None,
            message: "Hello World!".into(),
            quiet: false,
            max_seconds: None,
            path: None,
            cert: None,
            key: None,
            cafile: None,
            server_hostname: None,
            file: None,
            loops: 1,
        };
        let inet = !self.unix();
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            let extra = self.flags.iter().copied().find(|flag| flag.name() == arg);
            match (arg.as_str(), extra) {
                ("--host", _) if inet => parsed.host = value()?,
                ("--port", _) if inet => parsed.port = parse_value(&arg, &value()?)?,
                ("--backend", _) => parsed.backend = Some(parse_backend(&value()?)?),
                (_, Some(Flag::Message)) => parsed.message = value()?,
                (_, Some(Flag::Quiet)) => parsed.quiet = true,
                (_, Some(Flag::MaxSeconds)) => {
                    parsed.max_seconds = Some(parse_seconds(&arg, &value()?)?)
                }
                (_, Some(Flag::Path)) => parsed.path = Some(value()?),
                (_, Some(Flag::Cert)) => parsed.cert = Some(value()?),
                (_, Some(Flag::Key)) => parsed.key = Some(value()?),
                (_, Some(Flag::CaFile)) => parsed.cafile = Some(value()?),
                (_, Some(Flag::ServerHostname)) => parsed.server_hostname = Some(value()?),
                (_, Some(Flag::File)) => parsed.file = Some(value()?),
                (_, Some(Flag::Loops)) => parsed.loops = parse_loops(&arg, &value()?)?,
                ("-h" | "--help", None) => return Err(self.usage()),
                (other, None) => {
                    return Err(format!("unknown argument {other:?}\n{}", self.usage()))
                }
            }
        }
        if self.unix() && parsed.path.is_none() {
            return Err(format!("--path is required\n{}", self.usage()));
        }
        for (flag, given) in
            [(Flag::Cert, &parsed.cert), (Flag::Key, &parsed.key), (Flag::File, &parsed.file)]
        {
            if self.flags.contains(&flag) && given.is_none() {
                return Err(format!("{} is required\n{}", flag.name(), self.usage()));
            }
        }
        Ok(parsed)
    }
}

/// Parses a flag's value, naming the flag in the error.
pub fn parse_value<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String>
where
    T::Err: Display,
{
    value.parse().map_err(|e| format!("{flag} {value:?}: {e}"))
}

/// A number of seconds: finite and not negative.
fn parse_seconds(flag: &str, value: &str) -> Result<f64, String> {
    let secs: f64 = parse_value(flag, value)?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{flag} must be a finite number >= 0, not {secs}"));
    }
    Ok(secs)
}

/// A number of loops: at least 1.
fn parse_loops(flag: &str, value: &str) -> Result<usize, String> {
    match parse_value(flag, value)? {
        0 => Err(format!("{flag} must be at least 1")),
        loops => Ok(loops),
    }
}

/// `--backend uring|epoll`.
pub fn parse_backend(name: &str) -> Result<Backend, String> {
    match name {
        "uring" => Ok(Backend::Uring),
        "epoll" => Ok(Backend::Epoll),
        other => Err(format!("--backend must be uring or epoll, not {other:?}")),
    }
}
