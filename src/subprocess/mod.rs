//! Child processes (asyncio's "Running Subprocesses"): the low-level
//! [`EventLoop::subprocess_exec`] and [`EventLoop::subprocess_shell`] with a
//! [`SubprocessProtocol`] and a [`SubprocessTransport`], and the high-level
//! [`create_subprocess_exec`]/[`create_subprocess_shell`] giving a [`Process`] whose stdin,
//! stdout and stderr are streams.
//!
//! ```
//! use ringloop::subprocess::{create_subprocess_exec, ProcessOptions, Stdio};
//!
//! let (line, code) = ringloop::run(async {
//!     let options = ProcessOptions::new().stdin(Stdio::DevNull);
//!     let process = create_subprocess_exec("echo", ["hello"], options).await?;
//!     let line = process.stdout.as_ref().unwrap().readline().await?;
//!     let code = process.wait().await;
//!     Ok::<_, ringloop::Error>((line, code))
//! })??;
//! assert_eq!((&line[..], code), (&b"hello\n"[..], 0));
//! # Ok::<(), ringloop::Error>(())
//! ```
//!
//! # Spawning
//! The child is started with `posix_spawn` (a `vfork`-style `clone`: the loop's process is
//! never copied) and inherits its three streams and the
//! [`pass_fds`](ProcessOptions::pass_fds), **nothing else**: every other fd is closed in the
//! child, close-on-exec or not (Python's `close_fds=True`). Its signal mask is empty and
//! SIGPIPE and SIGXFSZ are back to their default (Python's `restore_signals=True`). See
//! `spawn.rs`.
//!
//! # Exit, reaping and signals
//! Each child is held by a pidfd. The driver waits for its exit and reaps it with one op on
//! the pidfd (`IORING_OP_WAITID` on io_uring where the kernel has it, else a readable pidfd
//! and `waitid(P_PIDFD)`; no thread per child, no SIGCHLD handler: ringloop never touches
//! SIGCHLD and never reaps a child it did not spawn). Signals go through `pidfd_send_signal`, so a pid reused by another
//! process is never signalled. A child still running when its loop closes is killed and
//! reaped; so is one whose `subprocess_exec` failed or was dropped after the spawn. No zombie
//! is left behind.
//!
//! # Shell injection
//! [`subprocess_shell`](EventLoop::subprocess_shell) and [`create_subprocess_shell`] run
//! `cmd` with `/bin/sh -c`. It is the application's responsibility to ensure that all
//! whitespace and special characters are quoted appropriately to avoid
//! [shell injection](https://en.wikipedia.org/wiki/Shell_injection#Shell_injection)
//! vulnerabilities; prefer the `_exec` forms, which take the arguments one by one and involve
//! no shell.

mod child;
mod core;
mod options;
mod process;
mod protocol;
mod spawn;
mod streams;
mod transport;

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::rc::Rc;

pub use options::{ProcessOptions, Stdio};
pub use process::{create_subprocess_exec, create_subprocess_shell, Process};
pub use protocol::SubprocessProtocol;
pub use transport::{PipeTransport, SubprocessTransport};

use self::core::SubprocessCore;
use crate::error::{ArgumentKind, Error, Result};
use crate::event_loop::EventLoop;
use child::Child;
use protocol::SubprocessAdapter;
use spawn::{above_stdio, ChildFd, Spawn};
use transport::{connect_pipes, ParentEnds};

/// The shell of `subprocess_shell` and `create_subprocess_shell`.
const SHELL: &str = "/bin/sh";

impl EventLoop {
    /// Starts `program` with `args` as a child process (asyncio's `subprocess_exec`) and
    /// connects it to a new protocol from `protocol_factory`. `program` is a path, or a name
    /// looked up along the child's `PATH`; it is also the child's `argv[0]`. Returns once
    /// `connection_made` has run.
    ///
    /// Its stdin, stdout and stderr are pipes to the loop unless `options` says otherwise
    /// ([`ProcessOptions`]): the child's output reaches `pipe_data_received`, and its stdin
    /// is written through [`get_pipe_transport(0)`](SubprocessTransport::get_pipe_transport).
    ///
    /// Errors, each naming the program and the cause, with nothing left behind (no child, no
    /// fd): `Error::Io` with `ENOENT` for a program that does not exist ("program not
    /// found") or a working directory that does not exist, `EACCES` for a file that is not
    /// executable; `Error::InvalidArgument` for options that contradict each other.
    ///
    /// ```
    /// use std::os::fd::RawFd;
    ///
    /// use ringloop::subprocess::ProcessOptions;
    /// use ringloop::{BaseProtocol, Error, Future, SubprocessProtocol, SubprocessTransport};
    ///
    /// /// Collects what the child prints; resolves `done` at `connection_lost`.
    /// struct Collect {
    ///     output: Vec<u8>,
    ///     done: Future<()>,
    /// }
    /// impl BaseProtocol<SubprocessTransport> for Collect {
    ///     fn connection_lost(&mut self, _error: Option<Error>) {
    ///         self.done.set_result(()).unwrap();
    ///     }
    /// }
    /// impl SubprocessProtocol for Collect {
    ///     fn pipe_data_received(&mut self, fd: RawFd, data: &[u8]) {
    ///         assert_eq!(fd, 1);
    ///         self.output.extend_from_slice(data);
    ///     }
    /// }
    ///
    /// let (code, output) = ringloop::run(async {
    ///     let event_loop = ringloop::get_running_loop()?;
    ///     let done = event_loop.create_future();
    ///     let protocol = Collect { output: Vec::new(), done: done.clone() };
    ///     let (transport, protocol) = event_loop
    ///         .subprocess_exec(move || protocol, "echo", ["hello"], ProcessOptions::new())
    ///         .await?;
    ///     done.await?;
    ///     let output = std::mem::take(&mut protocol.borrow_mut().output);
    ///     Ok::<_, Error>((transport.get_returncode(), output))
    /// })??;
    /// assert_eq!((code, &output[..]), (Some(0), &b"hello\n"[..]));
    /// # Ok::<(), ringloop::Error>(())
    /// ```
    pub async fn subprocess_exec<P, F>(
        &self,
        protocol_factory: F,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
        options: ProcessOptions,
    ) -> Result<(SubprocessTransport, Rc<RefCell<P>>)>
    where
        P: SubprocessProtocol + 'static,
        F: FnOnce() -> P,
    {
        let args: Vec<OsString> = args.into_iter().map(|arg| arg.as_ref().to_owned()).collect();
        let protocol = Rc::new(RefCell::new(protocol_factory()));
        let call = "subprocess_exec";
        let transport = self.start_subprocess(call, &protocol, program.as_ref(), &args, options);
        Ok((transport.await?, protocol))
    }

    /// Runs `cmd` with `/bin/sh -c` as a child process (asyncio's `subprocess_shell`);
    /// otherwise as [`subprocess_exec`](Self::subprocess_exec).
    ///
    /// It is the application's responsibility to ensure that all whitespace and special
    /// characters are quoted appropriately to avoid
    /// [shell injection](https://en.wikipedia.org/wiki/Shell_injection#Shell_injection)
    /// vulnerabilities: never build `cmd` from untrusted text; use `subprocess_exec` with the
    /// arguments one by one instead.
    pub async fn subprocess_shell<P, F>(
        &self,
        protocol_factory: F,
        cmd: impl AsRef<OsStr>,
        options: ProcessOptions,
    ) -> Result<(SubprocessTransport, Rc<RefCell<P>>)>
    where
        P: SubprocessProtocol + 'static,
        F: FnOnce() -> P,
    {
        let args = [OsString::from("-c"), cmd.as_ref().to_owned()];
        let protocol = Rc::new(RefCell::new(protocol_factory()));
        let call = "subprocess_shell";
        let transport = self.start_subprocess(call, &protocol, SHELL.as_ref(), &args, options);
        Ok((transport.await?, protocol))
    }

    /// Spawns the child, connects its pipes, then runs `connection_made`. `call` names the
    /// caller in errors.
    async fn start_subprocess<P: SubprocessProtocol + 'static>(
        &self,
        call: &'static str,
        protocol: &Rc<RefCell<P>>,
        program: &OsStr,
        args: &[OsString],
        mut options: ProcessOptions,
    ) -> Result<SubprocessTransport> {
        self.check_open()?;
        let stdio =
            [&mut options.stdin, &mut options.stdout, &mut options.stderr].map(std::mem::take);
        let (stdio, ends) = plan_stdio(call, stdio)?;
        // The child's ends of its pipes are closed here once it has them.
        let pid = Spawn { call, program, args, options: &options, stdio }.run()?;
        let child = Child::new(self, pid, call)?;
        let failed_pipes = Rc::new(RefCell::new(Vec::new()));
        let adapter =
            SubprocessAdapter { protocol: protocol.clone(), failed_pipes: failed_pipes.clone() };
        let core = SubprocessCore::new(child, Rc::new(adapter), failed_pipes);
        let starting = Starting(Some(core.clone()));
        connect_pipes(self, &core, ends).await?;
        starting.done();
        let transport = SubprocessTransport { core: core.clone() };
        core.start(transport.clone());
        Ok(transport)
    }
}

/// What each of the child's fds 0, 1 and 2 becomes, and the loop's ends of its pipes.
fn plan_stdio(call: &str, stdio: [Stdio; 3]) -> Result<([ChildFd; 3], ParentEnds)> {
    let mut ends: ParentEnds = [None, None, None];
    let mut plan = |fd: usize, stdio: Stdio| -> Result<ChildFd> {
        let failed =
            |err: std::io::Error| Error::io(format!("{call}: preparing the child's fd {fd}"), err);
        Ok(match stdio {
            Stdio::Pipe => {
                let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(|e| failed(e.into()))?;
                let (ours, theirs) = if fd == 0 { (write, read) } else { (read, write) };
                ends[fd] = Some(ours);
                ChildFd::Fd(above_stdio(theirs).map_err(failed)?)
            }
            Stdio::DevNull => ChildFd::DevNull,
            Stdio::Inherit => ChildFd::Inherit,
            Stdio::Fd(file) => ChildFd::Fd(above_stdio(file).map_err(failed)?),
            Stdio::Stdout if fd == 2 => ChildFd::Stdout,
            Stdio::Stdout => {
                let name = if fd == 0 { "stdin" } else { "stdout" };
                return Err(Error::invalid_argument(
                    ArgumentKind::Conflicting,
                    format!("{call}: {name} cannot be Stdio::Stdout (only stderr can)"),
                ));
            }
        })
    };
    let [stdin, stdout, stderr] = stdio;
    let planned = [plan(0, stdin)?, plan(1, stdout)?, plan(2, stderr)?];
    Ok((planned, ends))
}

/// Gives the subprocess up ([`SubprocessCore::abandon`]) unless its start completed: an error
/// while connecting the pipes, or the `subprocess_exec` future dropped.
struct Starting(Option<Rc<SubprocessCore>>);

impl Starting {
    /// The start completed.
    fn done(mut self) {
        self.0 = None;
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(core) = self.0.take() {
            core.abandon();
        }
    }
}
