//! [`Source`]: the caller's file, checked and duplicated for a transfer, with the range to
//! send.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::stat::{fstat, SFlag};

use crate::error::{ArgumentKind, Error, Result};
use crate::event_loop::EventLoop;
use crate::event_loop::LoopFd;

/// The file a transfer reads: a duplicate the loop owns (the driver closes it once no op
/// names it, whatever the caller does with theirs), and the range.
pub(crate) struct Source {
    /// The duplicate; it shares the caller's file position.
    pub(crate) file: LoopFd,
    /// Where to start.
    pub(crate) start: u64,
    /// Where to stop (exclusive); `None`: at the end (a file without a size, a pipe).
    pub(crate) end: Option<u64>,
    /// A regular file: it has a size and a position, and zero-copy is possible.
    pub(crate) seekable: bool,
}

impl Source {
    /// Checks `file` for `what` ("sendfile(fd 7)") and duplicates it: it must be open for
    /// reading; `offset` and `count` (`None`: to the end) give the range. `Ok(None)` when the
    /// range is empty (`count == 0`, or `offset` at or past the end of a regular file): there
    /// is nothing to send, and the position is set to `offset`.
    pub(crate) fn open(
        event_loop: &EventLoop,
        file: BorrowedFd<'_>,
        offset: u64,
        count: Option<u64>,
        what: &str,
    ) -> Result<Option<Source>> {
        let fd = file.as_raw_fd();
        let io = |call: &str, e: nix::Error| {
            Error::io(format!("{what}: {call} on file fd {fd}"), e.into())
        };
        let flags =
            OFlag::from_bits_retain(fcntl(file, FcntlArg::F_GETFL).map_err(|e| io("fcntl", e))?);
        if flags & OFlag::O_ACCMODE == OFlag::O_WRONLY {
            return Err(Error::invalid_argument(
                ArgumentKind::UnsuitableFd,
                format!("{what}: file fd {fd} is open for writing only; sendfile reads it"),
            ));
        }
        let stat = fstat(file).map_err(|e| io("fstat", e))?;
        let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFDIR {
            return Err(Error::invalid_argument(
                ArgumentKind::UnsuitableFd,
                format!("{what}: file fd {fd} is a directory"),
            ));
        }
        let seekable = kind == SFlag::S_IFREG;
        if !seekable && offset != 0 {
            return Err(Error::invalid_argument(
                ArgumentKind::OutOfRange,
                format!(
                    "{what}: file fd {fd} is not a regular file and has no position: offset must \
                     be 0"
                ),
            ));
        }
        let size = seekable.then(|| u64::try_from(stat.st_size).unwrap_or(0));
        let end = match (size, count) {
            (Some(size), Some(count)) => Some(size.min(offset.saturating_add(count))),
            (Some(size), None) => Some(size),
            (None, Some(count)) => Some(count),
            (None, None) => None,
        };
        if count == Some(0) || end.is_some_and(|end| end <= offset) {
            if seekable {
                seek(file, offset).map_err(|e| io("lseek", e))?;
            }
            return Ok(None);
        }
        let dup = file
            .try_clone_to_owned()
            .map_err(|e| Error::io(format!("{what}: dup of file fd {fd}"), e))?;
        Ok(Some(Source { file: LoopFd::new(event_loop, dup), start: offset, end, seekable }))
    }
}

/// `lseek(SEEK_SET)`.
pub(super) fn seek(file: impl AsFd, to: u64) -> nix::Result<()> {
    let to = i64::try_from(to).map_err(|_| nix::Error::EOVERFLOW)?;
    nix::unistd::lseek(file.as_fd(), to, nix::unistd::Whence::SeekSet).map(drop)
}
