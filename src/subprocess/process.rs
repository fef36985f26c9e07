//! [`Process`] (asyncio's `asyncio.subprocess.Process`): a child process whose pipes are
//! streams, from [`create_subprocess_exec`] and [`create_subprocess_shell`].

use std::ffi::OsStr;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use nix::sys::signal::Signal;

use super::streams::SubprocessStreamProtocol;
use super::{ProcessOptions, SubprocessTransport};
use crate::error::{ArgumentKind, Error, Result};
use crate::event_loop::EventLoop;
use crate::streams::{StreamReader, StreamWriter};
use crate::transport::WriteTransport;

/// A child process with streams for its pipes (asyncio's `Process`), from
/// [`EventLoop::create_subprocess_exec`] or [`EventLoop::create_subprocess_shell`].
///
/// Dropping it neither kills nor waits for the child (as `std::process::Child`); the loop
/// still reaps it when it exits, and kills it if the loop closes first. Dropping the `stdin`
/// writer closes the child's stdin. Reading a pipe only after [`wait`](Self::wait) can
/// deadlock once the child has written more than the pipe and the reader's buffer hold (the
/// child waits for room, `wait` for the child): use [`communicate`](Self::communicate).
pub struct Process {
    /// The child and its pipes.
    transport: SubprocessTransport,
    /// A writer to the child's stdin, if it is a pipe.
    pub stdin: Option<StreamWriter<WriteTransport>>,
    /// A reader of the child's stdout, if it is a pipe.
    pub stdout: Option<StreamReader>,
    /// A reader of the child's stderr, if it is a pipe.
    pub stderr: Option<StreamReader>,
}

impl Process {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.transport.get_pid()
    }

    /// The returncode once the child exited and was reaped (minus the signal that ended it,
    /// if one did), else `None`.
    pub fn returncode(&self) -> Option<i32> {
        self.transport.get_returncode()
    }

    /// The subprocess transport underneath.
    pub fn transport(&self) -> &SubprocessTransport {
        &self.transport
    }

    /// Waits for the child to exit and returns its returncode (asyncio's `wait`). Any number
    /// of `wait`s may run at once; each gets the returncode. It does not read the pipes:
    /// see the deadlock warning on [`Process`].
    pub async fn wait(&self) -> i32 {
        self.transport.wait().await
    }

    /// Writes `input` to stdin and closes it, reads stdout and stderr to their end, all at
    /// once, then waits for the exit (asyncio's `communicate`): `(stdout, stderr)`, each
    /// `None` when not a pipe. No amount of data either way deadlocks. A child that exits or
    /// closes its stdin before reading everything is not an error (`EPIPE` is ignored, as
    /// asyncio does).
    ///
    /// `Error::InvalidArgument` when `input` is given and stdin is not a pipe.
    pub async fn communicate(
        &self,
        input: Option<&[u8]>,
    ) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>)> {
        if input.is_some() && self.stdin.is_none() {
            let why = "communicate: input given, but the child's stdin is not a pipe";
            return Err(Error::invalid_argument(ArgumentKind::Conflicting, why));
        }
        type Step<'a> = Pin<Box<dyn Future<Output = Result<Option<Vec<u8>>>> + 'a>>;
        let steps: [Step<'_>; 3] = [
            Box::pin(self.feed_stdin(input)),
            Box::pin(self.read_all(1)),
            Box::pin(self.read_all(2)),
        ];
        let mut outputs = crate::gather(steps).await?;
        self.wait().await;
        let stderr = outputs.pop().flatten();
        let stdout = outputs.pop().flatten();
        Ok((stdout, stderr))
    }

    /// `communicate`'s stdin: writes `input`, waits for it to drain, closes.
    async fn feed_stdin(&self, input: Option<&[u8]>) -> Result<Option<Vec<u8>>> {
        let Some(stdin) = &self.stdin else { return Ok(None) };
        if let Some(input) = input {
            stdin.write(input)?;
            match stdin.drain().await {
                Err(err) if matches!(err.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)) => {
                    log::debug!(target: "ringloop", "communicate: stdin closed early: {err}");
                }
                result => result?,
            }
        }
        stdin.close();
        Ok(None)
    }

    /// `communicate`'s stdout (`fd` 1) or stderr (2): everything up to EOF, then the pipe
    /// is closed.
    async fn read_all(&self, fd: i32) -> Result<Option<Vec<u8>>> {
        let reader = if fd == 1 { &self.stdout } else { &self.stderr };
        let Some(reader) = reader else { return Ok(None) };
        let output = reader.read_to_end().await?;
        if let Some(pipe) = self.transport.get_pipe_transport(fd) {
            pipe.close();
        }
        Ok(Some(output))
    }

    /// Sends `signal` to the child ([`SubprocessTransport::send_signal`]): nothing happens,
    /// without error, once it exited.
    pub fn send_signal(&self, signal: Signal) -> Result<()> {
        self.transport.send_signal(signal)
    }

    /// Sends `SIGTERM`.
    pub fn terminate(&self) -> Result<()> {
        self.transport.terminate()
    }

    /// Sends `SIGKILL`.
    pub fn kill(&self) -> Result<()> {
        self.transport.kill()
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Process {}>", self.transport.get_pid())
    }
}

impl EventLoop {
    /// Starts `program` with `args` (asyncio's `create_subprocess_exec`) and gives a
    /// [`Process`] whose piped streams are [`StreamWriter`]/[`StreamReader`]s (limit
    /// [`ProcessOptions::limit`]). As [`subprocess_exec`](Self::subprocess_exec) otherwise,
    /// errors included. Note the default: all three streams are pipes (asyncio's
    /// `create_subprocess_exec` inherits them unless told `PIPE`); say
    /// [`Stdio::Inherit`](super::Stdio::Inherit) for those the child should share.
    ///
    /// ```
    /// use ringloop::subprocess::ProcessOptions;
    ///
    /// let (stdout, stderr, code) = ringloop::run(async {
    ///     let lp = ringloop::get_running_loop()?;
    ///     let process = lp.create_subprocess_exec("cat", [] as [&str; 0], ProcessOptions::new()).await?;
    ///     let (stdout, stderr) = process.communicate(Some(b"echoed by cat")).await?;
    ///     Ok::<_, ringloop::Error>((stdout, stderr, process.returncode()))
    /// })??;
    /// assert_eq!(stdout.as_deref(), Some(&b"echoed by cat"[..]));
    /// assert_eq!((stderr.as_deref(), code), (Some(&b""[..]), Some(0)));
    /// # Ok::<(), ringloop::Error>(())
    /// ```
    pub async fn create_subprocess_exec(
        &self,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
        options: ProcessOptions,
    ) -> Result<Process> {
        let protocol = SubprocessStreamProtocol::new(options.piped(), options.limit)?;
        let streams = protocol.clone();
        let (transport, _) = self.subprocess_exec(|| protocol, program, args, options).await?;
        Ok(process(transport, &streams))
    }

    /// Runs `cmd` with `/bin/sh -c` (asyncio's `create_subprocess_shell`); otherwise as
    /// [`create_subprocess_exec`](Self::create_subprocess_exec). The same warning about
    /// shell injection as for [`subprocess_shell`](Self::subprocess_shell) applies: quote
    /// everything in `cmd` that is not yours.
    pub async fn create_subprocess_shell(
        &self,
        cmd: impl AsRef<OsStr>,
        options: ProcessOptions,
    ) -> Result<Process> {
        let protocol = SubprocessStreamProtocol::new(options.piped(), options.limit)?;
        let streams = protocol.clone();
        let (transport, _) = self.subprocess_shell(|| protocol, cmd, options).await?;
        Ok(process(transport, &streams))
    }
}

/// The process over `transport`, its streams from `protocol`.
fn process(transport: SubprocessTransport, protocol: &SubprocessStreamProtocol) -> Process {
    let (stdin, stdout, stderr) = protocol.streams(&transport);
    Process { transport, stdin, stdout, stderr }
}

/// [`EventLoop::create_subprocess_exec`] on the running loop.
pub async fn create_subprocess_exec(
    program: impl AsRef<OsStr>,
    args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    options: ProcessOptions,
) -> Result<Process> {
    crate::get_running_loop()?.create_subprocess_exec(program, args, options).await
}

/// [`EventLoop::create_subprocess_shell`] on the running loop (see its shell-injection
/// warning).
pub async fn create_subprocess_shell(
    cmd: impl AsRef<OsStr>,
    options: ProcessOptions,
) -> Result<Process> {
    crate::get_running_loop()?.create_subprocess_shell(cmd, options).await
}
