//! [`ProcessOptions`]: the keyword arguments of `subprocess_exec`/`subprocess_shell` and
//! `create_subprocess_exec`/`create_subprocess_shell` (the `subprocess.Popen` ones asyncio
//! passes on), and [`Stdio`], what each of the child's standard streams is connected to.

use std::ffi::{OsStr, OsString};
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::streams::DEFAULT_LIMIT;

/// What one of the child's standard streams is connected to (asyncio's `stdin=`, `stdout=`,
/// `stderr=` values).
#[derive(Debug, Default)]
pub enum Stdio {
    /// A new pipe to the loop (`subprocess.PIPE`, the default): the child's output reaches
    /// the protocol's `pipe_data_received`, its input is written through
    /// [`get_pipe_transport(0)`](crate::SubprocessTransport::get_pipe_transport).
    #[default]
    Pipe,
    /// `/dev/null` (`subprocess.DEVNULL`).
    DevNull,
    /// This process's own stream, inherited (`None` in asyncio).
    Inherit,
    /// An open file, pipe end or socket (asyncio's "an existing file descriptor"). The child
    /// gets a copy; this one is closed once the child is spawned (pass a
    /// [`try_clone`](OwnedFd::try_clone) to keep yours). If it is the end of a pipe the loop
    /// should watch, register the other end with
    /// [`connect_read_pipe`](crate::EventLoop::connect_read_pipe) or
    /// [`connect_write_pipe`](crate::EventLoop::connect_write_pipe).
    Fd(OwnedFd),
    /// For `stderr` only: the same as the child's stdout (`subprocess.STDOUT`), so both
    /// streams arrive merged, in the order written, on fd 1.
    Stdout,
}

impl From<OwnedFd> for Stdio {
    fn from(fd: OwnedFd) -> Stdio {
        Stdio::Fd(fd)
    }
}

impl From<std::fs::File> for Stdio {
    fn from(file: std::fs::File) -> Stdio {
        Stdio::Fd(file.into())
    }
}

/// How the child is started, beyond its program and arguments (asyncio's `**kwargs` passed
/// to `subprocess.Popen`): its standard streams, working directory, environment, process
/// group or session, and the fds it inherits. `Default` is asyncio's `subprocess_exec`: all
/// three streams [`Stdio::Pipe`], this process's directory and environment.
///
/// Unlike `subprocess.Popen`'s `close_fds=False`, there is no way to let every fd through:
/// the child inherits its three streams and the [`pass_fds`](Self::pass_fds), nothing else,
/// whether or not the others are close-on-exec.
///
/// ```
/// use ringloop::subprocess::{ProcessOptions, Stdio};
///
/// let options = ProcessOptions::new()
///     .stdin(Stdio::DevNull)
///     .stderr(Stdio::Stdout)
///     .cwd("/")
///     .env_clear()
///     .env("LANG", "C");
/// # let _ = options;
/// ```
#[derive(Debug)]
pub struct ProcessOptions {
    /// The child's fd 0.
    pub(crate) stdin: Stdio,
    /// The child's fd 1.
    pub(crate) stdout: Stdio,
    /// The child's fd 2.
    pub(crate) stderr: Stdio,
    /// The child's working directory (`cwd=`); this process's when `None`.
    pub(crate) cwd: Option<PathBuf>,
    /// Start from an empty environment instead of this process's.
    pub(crate) env_clear: bool,
    /// Variables set (`Some`) or removed (`None`), in the order given; the last one wins.
    pub(crate) env: Vec<(OsString, Option<OsString>)>,
    /// `process_group=`: join this process group (0: a new one led by the child).
    pub(crate) process_group: Option<u32>,
    /// `start_new_session=True`: the child calls `setsid`.
    pub(crate) new_session: bool,
    /// `pass_fds=`: fds the child inherits under the same numbers.
    pub(crate) pass_fds: Vec<RawFd>,
    /// The buffer limit of the [`Process`](super::Process) stream readers (`limit=`).
    pub(crate) limit: usize,
}

impl Default for ProcessOptions {
    fn default() -> ProcessOptions {
        ProcessOptions {
            stdin: Stdio::Pipe,
            stdout: Stdio::Pipe,
            stderr: Stdio::Pipe,
            cwd: None,
            env_clear: false,
            env: Vec::new(),
            process_group: None,
            new_session: false,
            pass_fds: Vec::new(),
            limit: DEFAULT_LIMIT,
        }
    }
}

impl ProcessOptions {
    /// The defaults: three pipes, this process's directory and environment.
    pub fn new() -> ProcessOptions {
        ProcessOptions::default()
    }

    setters! {
        /// The child's stdin. [`Stdio::Stdout`] is refused when the child is spawned.
        stdin: into Stdio,
        /// The child's stdout. [`Stdio::Stdout`] is refused when the child is spawned.
        stdout: into Stdio,
        /// The child's stderr; [`Stdio::Stdout`] merges it into stdout.
        stderr: into Stdio,
        /// Puts the child in this process group, or in a new group it leads when it is 0
        /// (`process_group=`). Not with [`start_new_session`](Self::start_new_session).
        process_group: Some(u32),
        /// The buffer limit of the [`Process`](super::Process) stdout and stderr readers
        /// (asyncio's `limit=`, default [`DEFAULT_LIMIT`]); not used by `subprocess_exec`.
        limit: usize,
    }

    /// The child's working directory (`cwd=`). A relative program path is found from there.
    pub fn cwd(mut self, dir: impl AsRef<Path>) -> ProcessOptions {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// Sets an environment variable for the child. The program is looked up in the child's
    /// `PATH` (this process's unless set here or cleared).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> ProcessOptions {
        self.env.push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Sets several environment variables (`env=` given as a mapping adds to a cleared
    /// environment: call [`env_clear`](Self::env_clear) first for Python's behaviour).
    pub fn envs<I, K, V>(mut self, vars: I) -> ProcessOptions
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (key, value) in vars {
            self = self.env(key, value);
        }
        self
    }

    /// Removes an environment variable from the child's environment.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> ProcessOptions {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Starts the child's environment empty instead of from this process's; variables set
    /// before or after are kept.
    pub fn env_clear(mut self) -> ProcessOptions {
        self.env_clear = true;
        self
    }

    /// Runs the child in a new session (`start_new_session=True`): it is the leader of a new
    /// session and process group, without a controlling terminal.
    pub fn start_new_session(mut self) -> ProcessOptions {
        self.new_session = true;
        self
    }

    /// fds the child inherits under the same numbers (`pass_fds=`), close-on-exec or not;
    /// each must be open (and 3 or more) when the child is spawned.
    pub fn pass_fds(mut self, fds: impl IntoIterator<Item = RawFd>) -> ProcessOptions {
        self.pass_fds.extend(fds);
        self
    }

    /// Which of stdin, stdout and stderr are pipes to the loop.
    pub(crate) fn piped(&self) -> [bool; 3] {
        [&self.stdin, &self.stdout, &self.stderr].map(|s| matches!(s, Stdio::Pipe))
    }
}
