//! `StreamReader`: asyncio's `StreamReader` (read, readline, readexactly, readuntil), plus
//! `read_buf` and the poll step of the I/O traits.

use std::fmt;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};

use super::StreamState;
use crate::error::{ArgumentKind, Error, Result};

/// The reading side of a stream connection (asyncio's `StreamReader`). Cheap to clone; clones
/// read from the same buffer.
///
/// Every read fails with the connection's error once `connection_lost(Some(err))` was
/// delivered (even with bytes still buffered, as asyncio); after a clean EOF the buffered
/// bytes are read, then reads give empty results. A read future dropped while waiting takes
/// nothing from the buffer.
#[derive(Clone)]
pub struct StreamReader {
    /// The connection's shared state.
    state: Rc<StreamState>,
}

impl StreamReader {
    pub(crate) fn new(state: Rc<StreamState>) -> StreamReader {
        StreamReader { state }
    }

    fn check_exception(&self) -> Result<()> {
        match self.state.exception() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Takes the first `n` buffered bytes (`n` ≤ the buffer's length) and resumes the
    /// transport if the buffer fell to the limit.
    fn take(&self, n: usize) -> Vec<u8> {
        let data = {
            let mut buffer = self.state.buffer.borrow_mut();
            let data = buffer[..n].to_vec();
            buffer.advance(n);
            data
        };
        self.state.maybe_resume_transport();
        data
    }

    /// The buffer limit (asyncio's `limit`).
    pub fn limit(&self) -> usize {
        self.state.limit
    }

    /// Bytes buffered and not yet read.
    pub fn buffered(&self) -> usize {
        self.state.buffer.borrow().len()
    }

    /// The error reads fail with, if the connection was lost with one (asyncio's
    /// `exception()`).
    pub fn exception(&self) -> Option<Error> {
        self.state.exception()
    }

    /// True when EOF was received and the buffer is empty (asyncio's `at_eof`).
    pub fn at_eof(&self) -> bool {
        self.state.eof.get() && self.state.buffer.borrow().is_empty()
    }

    /// Up to `n` bytes: what is buffered, else waits for some (asyncio's `read(n)`). Empty at
    /// EOF, and for `n == 0`. [`read_to_end`](Self::read_to_end) is asyncio's `read(-1)`.
    pub async fn read(&self, n: usize) -> Result<Vec<u8>> {
        self.check_exception()?;
        if n == 0 {
            return Ok(Vec::new());
        }
        if self.state.buffer.borrow().is_empty() && !self.state.eof.get() {
            self.state.wait_for_data().await;
            self.check_exception()?;
        }
        let n = n.min(self.state.buffer.borrow().len());
        Ok(self.take(n))
    }

    /// Appends what is buffered to `buf`, else waits for some, and returns how many bytes it
    /// appended: 0 only at EOF. The bytes are copied into `buf`'s spare capacity, at most
    /// `buf.capacity() - buf.len()` of them, so a buffer with room is never reallocated (reuse
    /// one across calls: `clear()` it, or `split()` off what was read, and `reserve` again).
    /// A full buffer (no spare capacity) gets up to [`limit`](Self::limit) bytes, and grows for
    /// them. The connection's error, as for [`read`](Self::read), once it was lost with one.
    ///
    /// A future dropped while waiting appends nothing and takes nothing from the reader.
    pub async fn read_buf(&self, buf: &mut BytesMut) -> Result<usize> {
        let spare = buf.capacity() - buf.len();
        let max = if spare > 0 { spare } else { self.state.limit };
        std::future::poll_fn(|cx| self.poll_take(cx, max, |bytes| buf.extend_from_slice(bytes)))
            .await
    }

    /// Everything until EOF (asyncio's `read(-1)`). The bytes stay in the buffer until EOF,
    /// so dropping the future loses nothing; waiting for more data resumes a paused transport.
    pub async fn read_to_end(&self) -> Result<Vec<u8>> {
        loop {
            self.check_exception()?;
            if self.state.eof.get() {
                let n = self.state.buffer.borrow().len();
                return Ok(self.take(n));
            }
            self.state.wait_for_data().await;
        }
    }

    /// Exactly `n` bytes (asyncio's `readexactly`). At EOF before `n` bytes,
    /// [`Error::IncompleteRead`] with the bytes read (which leave the buffer).
    pub async fn readexactly(&self, n: usize) -> Result<Vec<u8>> {
        self.check_exception()?;
        if n == 0 {
            return Ok(Vec::new());
        }
        loop {
            let buffered = self.state.buffer.borrow().len();
            if buffered >= n {
                return Ok(self.take(n));
            }
            if self.state.eof.get() {
                let partial = self.take(buffered);
                return Err(Error::IncompleteRead { partial, expected: Some(n) });
            }
            self.state.wait_for_data().await;
            self.check_exception()?;
        }
    }

    /// One line, `\n` included (asyncio's `readline`). At EOF, what is left (possibly empty,
    /// without `\n`). A line longer than the limit is `Error::InvalidArgument`, and is
    /// discarded from the buffer (up to and including its `\n` if that was received, else the
    /// whole buffer), as asyncio does.
    pub async fn readline(&self) -> Result<Vec<u8>> {
        match self.readuntil(b"\n").await {
            Ok(line) => Ok(line),
            Err(Error::IncompleteRead { partial, .. }) => Ok(partial),
            Err(Error::LimitOverrun { consumed, message }) => {
                {
                    let mut buffer = self.state.buffer.borrow_mut();
                    if buffer.get(consumed..).is_some_and(|rest| rest.starts_with(b"\n")) {
                        buffer.advance(consumed + 1);
                    } else {
                        buffer.clear();
                    }
                }
                self.state.maybe_resume_transport();
                Err(Error::invalid_argument(ArgumentKind::OutOfRange, message))
            }
            Err(error) => Err(error),
        }
    }

    /// Everything up to and including `separator` (asyncio's `readuntil`).
    ///
    /// Errors: `Error::InvalidArgument` for an empty separator; [`Error::LimitOverrun`] when
    /// more than `limit` bytes are buffered without the separator, or the separator is found
    /// beyond the limit (the data stays buffered; `consumed` says how much may be skipped);
    /// [`Error::IncompleteRead`] (`expected: None`) at EOF without the separator, carrying
    /// what was buffered (which leaves the buffer).
    pub async fn readuntil(&self, separator: &[u8]) -> Result<Vec<u8>> {
        let seplen = separator.len();
        if seplen == 0 {
            return Err(Error::invalid_argument(
                ArgumentKind::Missing,
                "readuntil: the separator must not be empty",
            ));
        }
        self.check_exception()?;
        let limit = self.state.limit;
        // Where the search resumes: bytes before it cannot start a match.
        let mut offset = 0;
        let isep = loop {
            let buflen = self.state.buffer.borrow().len();
            if buflen - offset >= seplen {
                let found = find(&self.state.buffer.borrow()[offset..], separator);
                if let Some(at) = found {
                    break offset + at;
                }
                offset = buflen + 1 - seplen;
                if offset > limit {
                    return Err(Error::LimitOverrun {
                        consumed: offset,
                        message: format!(
                            "Separator is not found, and chunk exceed the limit ({limit} bytes)"
                        ),
                    });
                }
            }
            if self.state.eof.get() {
                let partial = self.take(buflen);
                return Err(Error::IncompleteRead { partial, expected: None });
            }
            self.state.wait_for_data().await;
            self.check_exception()?;
        };
        if isep > limit {
            return Err(Error::LimitOverrun {
                consumed: isep,
                message: format!(
                    "Separator is found, but chunk is longer than limit ({isep} > {limit} bytes)"
                ),
            });
        }
        Ok(self.take(isep + seplen))
    }
}

/// The offset of the first `needle` (not empty) in `haystack`. A short haystack, the usual
/// case (a line, an HTTP head), is scanned for the needle's first byte with `memchr` and each
/// hit compared: ~100 instructions for a 35-byte HTTP head and `b"\r\n\r\n"`, where comparing
/// every window cost ~600 and `memchr::memmem`'s searcher, built per call, ~420. A long one
/// goes to that searcher (linear in the haystack whatever the needle).
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    const SHORT: usize = 256;
    let (&first, rest) = needle.split_first()?;
    if haystack.len() >= SHORT {
        return memchr::memmem::find(haystack, needle);
    }
    let mut from = 0;
    while let Some(hit) = memchr::memchr(first, &haystack[from..]) {
        let at = from + hit;
        if haystack[at + 1..].starts_with(rest) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

impl StreamReader {
    /// The read step of [`read_buf`](Self::read_buf) and the I/O traits: hands up to `max`
    /// buffered bytes to `copy_out` (which takes them all) and returns how many; `Ok(0)` at EOF
    /// or for a `max` of 0; the connection's error after `connection_lost(Some(err))`. Waits
    /// (registering `cx`) while the buffer is empty short of EOF.
    fn poll_take(
        &self,
        cx: &mut Context<'_>,
        max: usize,
        copy_out: impl FnOnce(&[u8]),
    ) -> Poll<Result<usize>> {
        let state = &self.state;
        self.check_exception()?;
        if max == 0 {
            return Poll::Ready(Ok(0));
        }
        let n = max.min(state.buffer.borrow().len());
        if n > 0 {
            let mut buffer = state.buffer.borrow_mut();
            copy_out(&buffer[..n]);
            buffer.advance(n);
            drop(buffer);
            state.maybe_resume_transport();
            return Poll::Ready(Ok(n));
        }
        if state.eof.get() {
            return Poll::Ready(Ok(0));
        }
        state.wait_for_more(cx);
        Poll::Pending
    }

    /// The `poll_read` of the I/O traits: [`poll_take`](Self::poll_take), the connection's
    /// error as an `io::Error` (its [`Error`] inside).
    pub(crate) fn poll_read_with(
        &self,
        cx: &mut Context<'_>,
        max: usize,
        copy_out: impl FnOnce(&[u8]),
    ) -> Poll<io::Result<usize>> {
        self.poll_take(cx, max, copy_out).map_err(io::Error::from)
    }
}

impl fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<StreamReader {:?}>", self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::find;

    /// The first window equal to `needle`, compared one by one.
    fn reference(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|window| window == needle)
    }

    #[test]
    fn find_gives_the_first_match_in_short_and_long_haystacks() {
        let head = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
        assert_eq!(find(head, b"\r\n\r\n"), Some(head.len() - 4));
        assert_eq!(find(b"aaab", b"aab"), Some(1)); // a false start overlapping the match
        assert_eq!(find(b"abc\r\n\r", b"\r\n\r\n"), None); // a prefix of the needle at the end
        assert_eq!(find(b"", b"\n"), None);
        assert_eq!(find(b"\n", b"\n"), Some(0));
        // Every needle of a few bytes against haystacks either side of the short-scan bound.
        let alphabet = b"\r\nab";
        for len in [0, 1, 7, 63, 255, 256, 257, 1000] {
            let haystack: Vec<u8> =
                (0..len).map(|i| alphabet[(i * 7 + i / 5) % alphabet.len()]).collect();
            for needle_len in 1..=4 {
                for start in 0..alphabet.len() {
                    let needle: Vec<u8> =
                        (0..needle_len).map(|i| alphabet[(start + i) % alphabet.len()]).collect();
                    let expected = reference(&haystack, &needle);
                    assert_eq!(find(&haystack, &needle), expected, "{len} {needle:?}");
                }
            }
        }
    }
}
