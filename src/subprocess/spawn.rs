//! Starting the child with glibc's `posix_spawn(3)`: a `clone(CLONE_VM | CLONE_VFORK)` that
//! never copies the loop's process, with the child's streams, inherited fds, directory,
//! process group or session and signal state set up by file actions and attributes.
//!
//! # Implementation
//! `std::process::Command` would do for most of it, but not all at once: closing the fds the
//! child was not given (Python's `close_fds=True`, the default), clearing close-on-exec on the
//! `pass_fds` and `setsid` each need a `pre_exec` closure, and with one `std` falls back from
//! `posix_spawn` to `fork()`, which copies the page tables of a big process on the loop's
//! thread. `posix_spawn` has a file action for each (`dup2`, `close`, glibc's
//! `addclosefrom_np` and `addchdir_np`) and an attribute for `setsid`; glibc runs the child on
//! a small stack of its own, blocks signals around the `clone` and resets every caught signal
//! in the child before it unblocks them, so ringloop's signal handlers never run there.
//!
//! The program is looked up along the child's `PATH` here, before spawning (as `execvp`
//! would: a file found but not executable is reported only if nothing else is found), so a
//! missing program never creates a child at all. The working directory is checked first too,
//! so that its errors name it rather than the program.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sys::signal::{SigSet, Signal};

use super::options::ProcessOptions;
use crate::error::{ArgumentKind, Error, Result};
use crate::sys::syscall;

/// Where `execvp` looks when there is no `PATH` (glibc's default, and Python's `os.defpath`).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// What one of the child's fds 0, 1 and 2 becomes. (The loop keeps its end of a pipe; the
/// child's end is an [`ChildFd::Fd`].)
#[derive(Debug)]
pub(crate) enum ChildFd {
    /// Left as this process has it.
    Inherit,
    /// `/dev/null`, opened read-write in the child.
    DevNull,
    /// A copy of this fd, which is 3 or more (see [`above_stdio`]) and close-on-exec.
    Fd(OwnedFd),
    /// A copy of the child's fd 1 (stderr only).
    Stdout,
}

/// A child to start: its program, arguments, streams, and the rest of its options.
pub(crate) struct Spawn<'a> {
    /// The caller, for error messages (`"subprocess_exec"`).
    pub(crate) call: &'static str,
    /// The program: a path, or a name looked up along `PATH`. Also the child's `argv[0]`.
    pub(crate) program: &'a OsStr,
    /// The arguments after `argv[0]`.
    pub(crate) args: &'a [OsString],
    /// Directory, environment, group or session, `pass_fds` (its streams are `stdio`).
    pub(crate) options: &'a ProcessOptions,
    /// The child's fds 0, 1 and 2.
    pub(crate) stdio: [ChildFd; 3],
}

impl Spawn<'_> {
    /// Starts the child and returns its pid. Errors name the program and the cause
    /// (`Error::Io` with the errno: `ENOENT` for a program or directory that does not exist,
    /// `EACCES` for one that is not executable), or the option that is wrong
    /// (`Error::InvalidArgument`). Nothing is left behind on failure: every fd made for the
    /// child here is closed when it returns.
    pub(crate) fn run(&self) -> Result<u32> {
        let options = self.options;
        if options.process_group.is_some() && options.new_session {
            return Err(self.invalid(
                ArgumentKind::Conflicting,
                "process_group and start_new_session exclude each other",
            ));
        }
        let cwd = options.cwd.as_deref().map(|dir| self.check_cwd(dir)).transpose()?;
        let (env, path_var) = self.environment()?;
        let search = path_var.as_deref().unwrap_or(OsStr::new(DEFAULT_PATH));
        let program = resolve(self.program, search).map_err(|err| self.failed(err))?;
        let argv = std::iter::once(self.program).chain(self.args.iter().map(OsString::as_os_str));
        let argv = CStrings::new(argv.map(|arg| self.c_string("argument", arg)))?;
        let mut actions = FileActions::new().map_err(|e| self.failed(e))?;
        let _copies = self.fd_actions(&mut actions)?;
        if let Some(cwd) = &cwd {
            actions.chdir(cwd).map_err(|e| self.failed(e))?;
        }
        let attributes = self.attributes().map_err(|e| self.failed(e))?;
        let mut pid: libc::pid_t = 0;
        // SAFETY: `program`, every string of `argv` and `env` and both pointer arrays (each
        // ending with a null pointer) live until the call returns; `actions` and `attributes`
        // are initialized. posix_spawn reads them and writes only `pid`.
        let spawned = check(unsafe {
            libc::posix_spawn(
                &mut pid,
                program.as_ptr(),
                &actions.0,
                &attributes.0,
                argv.as_ptr(),
                env.as_ptr(),
            )
        });
        spawned.map_err(|err| self.failed(err))?;
        Ok(pid as u32)
    }

    /// The file actions for the child's fds: its three streams, the `pass_fds` without
    /// close-on-exec, every other fd closed. Returns the copies made for the `pass_fds`,
    /// which must stay open until the child is spawned.
    fn fd_actions(&self, actions: &mut FileActions) -> Result<Vec<OwnedFd>> {
        let failed = |err| self.failed(err);
        for (target, child_fd) in self.stdio.iter().enumerate() {
            let target = target as RawFd;
            match child_fd {
                ChildFd::Inherit => {}
                ChildFd::DevNull => actions.open_dev_null(target).map_err(failed)?,
                ChildFd::Fd(fd) => actions.dup2(fd.as_raw_fd(), target).map_err(failed)?,
                // `plan_stdio` makes `Stdout` for stderr only.
                ChildFd::Stdout => actions.dup2(1, target).map_err(failed)?,
            }
        }
        let pass = &self.options.pass_fds;
        let mut copies = Vec::with_capacity(pass.len());
        for &fd in pass {
            if fd < 3 {
                let why =
                    format!("pass_fds: fd {fd} is a standard stream (use stdin/stdout/stderr)");
                return Err(self.invalid(ArgumentKind::UnsuitableFd, &why));
            }
            // dup2 of a copy onto the fd gives the child the same file without close-on-exec.
            let copy = above_stdio_raw(fd).map_err(|err| {
                Error::io(format!("{}: pass_fds: fd {fd} cannot be passed", self.call), err)
            })?;
            actions.dup2(copy.as_raw_fd(), fd).map_err(failed)?;
            copies.push(copy);
        }
        let top = pass.iter().copied().max().unwrap_or(2);
        for fd in (3..top).filter(|fd| !pass.contains(fd)) {
            actions.close(fd).map_err(failed)?;
        }
        actions.close_from(top + 1).map_err(failed)?;
        Ok(copies)
    }

    /// The spawn attributes: an empty signal mask, SIGPIPE and SIGXFSZ back to their default
    /// (a Rust program ignores SIGPIPE; Python's `restore_signals=True` resets both), and the
    /// process group or session.
    fn attributes(&self) -> io::Result<Attributes> {
        let mut attributes = Attributes::new()?;
        let mut flags = libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
        attributes.set_sigmask(&SigSet::empty())?;
        attributes.set_sigdefault(&(Signal::SIGPIPE | Signal::SIGXFSZ))?;
        if let Some(pgid) = self.options.process_group {
            flags |= libc::POSIX_SPAWN_SETPGROUP;
            attributes.set_pgroup(pgid as libc::pid_t)?;
        }
        if self.options.new_session {
            flags |= libc::POSIX_SPAWN_SETSID as libc::c_int;
        }
        attributes.set_flags(flags as libc::c_short)?;
        Ok(attributes)
    }

    /// The child's environment as `KEY=VALUE` strings, and its `PATH`.
    fn environment(&self) -> Result<(CStrings, Option<OsString>)> {
        let options = self.options;
        let mut vars: Vec<(OsString, OsString)> =
            if options.env_clear { Vec::new() } else { std::env::vars_os().collect() };
        for (key, value) in &options.env {
            let bytes = key.as_bytes();
            if bytes.is_empty() || bytes.contains(&b'=') {
                let why = format!("environment variable name {key:?} is empty or contains '='");
                return Err(self.invalid(ArgumentKind::Malformed, &why));
            }
            vars.retain(|(k, _)| k != key);
            if let Some(value) = value {
                vars.push((key.clone(), value.clone()));
            }
        }
        let path = vars.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone());
        let strings = vars.into_iter().map(|(mut key, value)| {
            key.push("=");
            key.push(value);
            self.c_string("environment variable", &key)
        });
        Ok((CStrings::new(strings)?, path))
    }

    /// `dir` as a C string, once it is known to be a directory (its own error otherwise).
    fn check_cwd(&self, dir: &Path) -> Result<CString> {
        let failed = |err| {
            let context =
                format!("{}: cannot run {:?}: working directory {dir:?}", self.call, self.program);
            Error::io(context, err)
        };
        let metadata = std::fs::metadata(dir).map_err(failed)?;
        if !metadata.is_dir() {
            return Err(failed(io::Error::from_raw_os_error(libc::ENOTDIR)));
        }
        self.c_string("working directory", dir.as_os_str())
    }

    fn c_string(&self, what: &str, text: &OsStr) -> Result<CString> {
        CString::new(text.as_bytes()).map_err(|_| {
            self.invalid(ArgumentKind::Malformed, &format!("{what} {text:?} contains a NUL byte"))
        })
    }

    fn invalid(&self, kind: ArgumentKind, why: &str) -> Error {
        let message = format!("{}: cannot run {:?}: {why}", self.call, self.program);
        Error::invalid_argument(kind, message)
    }

    /// Spawning failed with `err`: an `Error::Io` naming the program and what the errno means
    /// for it.
    fn failed(&self, err: io::Error) -> Error {
        let cause = match err.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) => "program not found",
            Some(libc::EACCES) => "not executable",
            Some(libc::ENOEXEC) => "not an executable format",
            _ => "spawn failed",
        };
        Error::io(format!("{}: cannot run {:?}: {cause}", self.call, self.program), err)
    }
}

/// The file `program` names: itself when it has a `/` (relative to the child's working
/// directory), else the first regular, executable `DIR/program` for `DIR` along `search` (an
/// empty entry is the current directory), as `execvp` finds it. `ENOENT` if there is none,
/// `EACCES` if only files that cannot be executed were found.
pub(crate) fn resolve(program: &OsStr, search: &OsStr) -> io::Result<CString> {
    let not_found = || io::Error::from_raw_os_error(libc::ENOENT);
    let bytes = program.as_bytes();
    if bytes.is_empty() {
        return Err(not_found());
    }
    let c_string =
        |bytes: &[u8]| CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    if bytes.contains(&b'/') {
        return c_string(bytes);
    }
    let mut denied = false;
    for dir in search.as_bytes().split(|&b| b == b':') {
        let dir = if dir.is_empty() { Path::new(".") } else { Path::new(OsStr::from_bytes(dir)) };
        let candidate = dir.join(program);
        let Ok(metadata) = std::fs::metadata(&candidate) else { continue };
        let executable = nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok();
        if metadata.is_file() && executable {
            return c_string(candidate.as_os_str().as_bytes());
        }
        denied = true;
    }
    Err(if denied { io::Error::from_raw_os_error(libc::EACCES) } else { not_found() })
}

/// A close-on-exec copy of `fd` numbered 3 or more, so that it can be `dup2`ed onto any of
/// the child's standard streams without being one of them.
pub(crate) fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() >= 3 {
        return Ok(fd);
    }
    above_stdio_raw(fd.as_raw_fd())
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, 3)`.
fn above_stdio_raw(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC reads no memory; an fd that is not open gives EBADF.
    let copy = syscall!(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: `copy` is a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// The `posix_spawn*` calls return the error number instead of setting `errno`.
fn check(ret: libc::c_int) -> io::Result<()> {
    match ret {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// A `posix_spawn` object made by its `init` function (`posix_spawnattr_init`,
/// `posix_spawn_file_actions_init`), which returns an error number.
fn init<T>(init: unsafe extern "C" fn(*mut T) -> libc::c_int) -> io::Result<T> {
    let mut raw = MaybeUninit::uninit();
    // SAFETY: a posix_spawn `init` function initializes the object it is given.
    check(unsafe { init(raw.as_mut_ptr()) })?;
    // SAFETY: initialized by the successful call above.
    Ok(unsafe { raw.assume_init() })
}

/// NUL-terminated strings and the null-terminated array of pointers to them that `execve`
/// takes (`argv`, `envp`).
struct CStrings {
    /// The strings; their bytes do not move when the `Vec` does.
    _strings: Vec<CString>,
    /// Pointers into `_strings`, then a null pointer.
    pointers: Vec<*mut libc::c_char>,
}

impl CStrings {
    fn new(strings: impl Iterator<Item = Result<CString>>) -> Result<CStrings> {
        let strings = strings.collect::<Result<Vec<CString>>>()?;
        let mut pointers: Vec<_> =
            strings.iter().map(|s| s.as_ptr() as *mut libc::c_char).collect();
        pointers.push(std::ptr::null_mut());
        Ok(CStrings { _strings: strings, pointers })
    }

    fn as_ptr(&self) -> *const *mut libc::c_char {
        self.pointers.as_ptr()
    }
}

/// `posix_spawn_file_actions_t`, destroyed on drop.
struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> io::Result<FileActions> {
        init(libc::posix_spawn_file_actions_init).map(FileActions)
    }

    fn dup2(&mut self, fd: RawFd, target: RawFd) -> io::Result<()> {
        // SAFETY: `self.0` is initialized; the action only records the two numbers.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, fd, target) })
    }

    fn open_dev_null(&mut self, target: RawFd) -> io::Result<()> {
        const DEV_NULL: &CStr = c"/dev/null";
        // SAFETY: `self.0` is initialized; the path is copied into the action list.
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(
                &mut self.0,
                target,
                DEV_NULL.as_ptr(),
                libc::O_RDWR,
                0,
            )
        })
    }

    /// Closes `fd` in the child; glibc ignores an fd that is not open there.
    fn close(&mut self, fd: RawFd) -> io::Result<()> {
        // SAFETY: `self.0` is initialized; the action only records the number.
        check(unsafe { libc::posix_spawn_file_actions_addclose(&mut self.0, fd) })
    }

    /// Closes every fd from `from` up in the child (glibc 2.34).
    fn close_from(&mut self, from: RawFd) -> io::Result<()> {
        // SAFETY: `self.0` is initialized; the action only records the number.
        check(unsafe { libc::posix_spawn_file_actions_addclosefrom_np(&mut self.0, from) })
    }

    /// Changes directory in the child (glibc 2.29).
    fn chdir(&mut self, dir: &CStr) -> io::Result<()> {
        // SAFETY: `self.0` is initialized; the path is copied into the action list.
        check(unsafe { libc::posix_spawn_file_actions_addchdir_np(&mut self.0, dir.as_ptr()) })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialized in `new`, destroyed once.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// `posix_spawnattr_t`, destroyed on drop.
struct Attributes(libc::posix_spawnattr_t);

impl Attributes {
    fn new() -> io::Result<Attributes> {
        init(libc::posix_spawnattr_init).map(Attributes)
    }

    fn set_flags(&mut self, flags: libc::c_short) -> io::Result<()> {
        // SAFETY: `self.0` is initialized.
        check(unsafe { libc::posix_spawnattr_setflags(&mut self.0, flags) })
    }

    fn set_sigmask(&mut self, set: &SigSet) -> io::Result<()> {
        // SAFETY: `self.0` is initialized; `set` is copied.
        check(unsafe { libc::posix_spawnattr_setsigmask(&mut self.0, set.as_ref()) })
    }

    fn set_sigdefault(&mut self, set: &SigSet) -> io::Result<()> {
        // SAFETY: `self.0` is initialized; `set` is copied.
        check(unsafe { libc::posix_spawnattr_setsigdefault(&mut self.0, set.as_ref()) })
    }

    fn set_pgroup(&mut self, pgid: libc::pid_t) -> io::Result<()> {
        // SAFETY: `self.0` is initialized.
        check(unsafe { libc::posix_spawnattr_setpgroup(&mut self.0, pgid) })
    }
}

impl Drop for Attributes {
    fn drop(&mut self) {
        // SAFETY: initialized in `new`, destroyed once.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno(result: io::Result<CString>) -> Option<i32> {
        result.unwrap_err().raw_os_error()
    }

    #[test]
    fn resolve_searches_the_path_like_execvp() {
        let found = resolve(OsStr::new("sh"), OsStr::new("/nonexistent:/bin:/usr/bin")).unwrap();
        assert_eq!(found.as_bytes(), b"/bin/sh");
        // A name with a slash is taken as it is, whether or not it exists.
        let path = resolve(OsStr::new("./no/such"), OsStr::new("/bin")).unwrap();
        assert_eq!(path.as_bytes(), b"./no/such");
        assert_eq!(
            errno(resolve(OsStr::new("no-such-program-x"), OsStr::new("/bin"))),
            Some(libc::ENOENT)
        );
        assert_eq!(errno(resolve(OsStr::new(""), OsStr::new("/bin"))), Some(libc::ENOENT));
        // `/etc/passwd` exists but is not executable, and `/` has `etc` only as a directory.
        assert_eq!(errno(resolve(OsStr::new("passwd"), OsStr::new("/etc"))), Some(libc::EACCES));
        assert_eq!(errno(resolve(OsStr::new("etc"), OsStr::new("/"))), Some(libc::EACCES));
        // Found further along the path after a non-executable one.
        let found = resolve(OsStr::new("sh"), OsStr::new("/etc:/bin")).unwrap();
        assert_eq!(found.as_bytes(), b"/bin/sh");
    }

    #[test]
    fn above_stdio_copies_only_the_standard_streams() {
        let (r, w) = crate::test_support::pipe();
        let raw = r.as_raw_fd();
        assert_eq!(above_stdio(r).unwrap().as_raw_fd(), raw, "already 3 or more: kept");
        drop(w);
        // A standard stream (stderr is open under the test harness) is copied above them.
        let copy = above_stdio_raw(libc::STDERR_FILENO).unwrap();
        assert!(copy.as_raw_fd() >= 3);
        let flags = nix::fcntl::fcntl(&copy, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        assert_eq!(above_stdio_raw(-1).unwrap_err().raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn check_maps_the_returned_error_number() {
        assert!(check(0).is_ok());
        assert_eq!(check(libc::ENOMEM).unwrap_err().raw_os_error(), Some(libc::ENOMEM));
    }
}
