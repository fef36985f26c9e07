//! HTTP/1.1 as far as the hello-world benchmark needs it: the request and the response, and the
//! framing of one message head, shared by the servers (which read requests) and the load
//! generator (which checks every response, so a broken server is detected, not counted).

/// The response body.
pub const BODY: &[u8] = b"Hello, World!";

/// The one response every server sends, to every request.
pub const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!";

/// The one request the load generator sends (keep-alive is HTTP/1.1's default).
pub const REQUEST: &[u8] =
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: ringloop-bench\r\n\r\n";

/// The longest message head accepted, blank line included.
const MAX_HEAD: usize = 8 * 1024;

/// A parsed message head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head<'a> {
    /// The request or status line, without its CRLF.
    pub start: &'a [u8],
    /// The head's length, blank line included: where the body starts.
    pub len: usize,
    /// The `Content-Length` header's value, if it has one.
    pub content_length: Option<usize>,
    /// Whether a `Connection` header says `close`.
    pub close: bool,
}

/// Parses the message head at the start of `buf`: `Ok(None)` while it is incomplete. Errors: a
/// head over 8 KiB, a line without CRLF, a header line without `:`, a bad or repeated
/// `Content-Length`, and any `Transfer-Encoding` (not needed here, so not supported).
pub fn parse_head(buf: &[u8]) -> Result<Option<Head<'_>>, String> {
    let mut head = Head { start: &[], len: 0, content_length: None, close: false };
    let mut at = 0;
    loop {
        let Some(newline) = buf[at..].iter().position(|&b| b == b'\n') else {
            return match buf.len() > MAX_HEAD {
                true => Err(format!("message head longer than {MAX_HEAD} bytes")),
                false => Ok(None),
            };
        };
        let line = buf[at..at + newline].strip_suffix(b"\r").ok_or("a head line without CRLF")?;
        let first = at == 0;
        at += newline + 1;
        if first {
            head.start = line;
        } else if line.is_empty() {
            head.len = at;
            return Ok(Some(head));
        } else {
            header(&mut head, line)?;
        }
    }
}

/// Takes in one header line.
fn header(head: &mut Head<'_>, line: &[u8]) -> Result<(), String> {
    let colon = line.iter().position(|&b| b == b':').ok_or("a header line without ':'")?;
    let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
    let text = || String::from_utf8_lossy(line).into_owned();
    if name.eq_ignore_ascii_case(b"content-length") {
        let parsed = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
        let length = parsed.ok_or_else(|| format!("bad Content-Length: {}", text()))?;
        if head.content_length.replace(length).is_some_and(|earlier| earlier != length) {
            return Err(format!("conflicting Content-Length headers: {}", text()));
        }
    } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
        return Err(format!("Transfer-Encoding is not supported: {}", text()));
    } else if name.eq_ignore_ascii_case(b"connection") {
        head.close |=
            value.split(|&b| b == b',').any(|v| v.trim_ascii().eq_ignore_ascii_case(b"close"));
    }
    Ok(())
}

/// Parses the request head at the start of `buf` as [`parse_head`] does, and checks that its
/// start line is an HTTP/1.1 request line.
pub fn request_head(buf: &[u8]) -> Result<Option<Head<'_>>, String> {
    let Some(head) = parse_head(buf)? else { return Ok(None) };
    let parts = head.start.split(|&b| b == b' ').count();
    if parts != 3 || !head.start.ends_with(b" HTTP/1.1") {
        let line = String::from_utf8_lossy(head.start);
        return Err(format!("not an HTTP/1.1 request line: {line:?}"));
    }
    Ok(Some(head))
}

/// The length of the whole request (head and body) at the start of `buf`; `Ok(None)` while
/// it is incomplete.
pub fn request_len(buf: &[u8]) -> Result<Option<usize>, String> {
    let Some(head) = request_head(buf)? else { return Ok(None) };
    let len = head.len + head.content_length.unwrap_or(0);
    Ok((buf.len() >= len).then_some(len))
}

/// Checks the hello-world response at the start of `buf` and returns its length; `Ok(None)`
/// while it is incomplete. Anything but `HTTP/1.1 200` with a `Content-Length` and the body
/// [`BODY`], on a connection kept alive, is an error.
pub fn response_len(buf: &[u8]) -> Result<Option<usize>, String> {
    let Some(head) = parse_head(buf)? else { return Ok(None) };
    if !head.start.starts_with(b"HTTP/1.1 200 ") {
        return Err(format!("status line {:?}", String::from_utf8_lossy(head.start)));
    }
    if head.close {
        return Err("the server closes the connection (Connection: close)".into());
    }
    let length = head.content_length.ok_or("a response without Content-Length")?;
    let Some(body) = buf.get(head.len..head.len + length) else { return Ok(None) };
    if body != BODY {
        return Err(format!("body {:?}, not {:?}", String::from_utf8_lossy(body), "Hello, World!"));
    }
    Ok(Some(head.len + length))
}

/// A server's request framing over received chunks: answers every complete request with
/// [`RESPONSE`] and keeps an incomplete one until the rest arrives.
#[derive(Debug, Default)]
pub struct Responder {
    /// The start of a request whose end has not arrived yet.
    partial: Vec<u8>,
    /// The responses to the last chunk's requests.
    out: Vec<u8>,
}

impl Responder {
    /// The responses to write for the complete requests now received (empty when none): one
    /// buffer, so pipelined requests get one write.
    pub fn feed(&mut self, data: &[u8]) -> Result<&[u8], String> {
        self.out.clear();
        if self.partial.is_empty() {
            let used = respond(data, &mut self.out)?;
            self.partial.extend_from_slice(&data[used..]);
        } else {
            self.partial.extend_from_slice(data);
            let used = respond(&self.partial, &mut self.out)?;
            self.partial.drain(..used);
        }
        Ok(&self.out)
    }
}

/// Appends a response to `out` per complete request at the start of `input`; returns the bytes
/// those requests took.
fn respond(input: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
    let mut used = 0;
    while let Some(len) = request_len(&input[used..])? {
        out.extend_from_slice(RESPONSE);
        used += len;
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_is_valid_and_framed_whole() {
        assert_eq!(response_len(RESPONSE), Ok(Some(RESPONSE.len())));
        for cut in 0..RESPONSE.len() {
            assert_eq!(response_len(&RESPONSE[..cut]), Ok(None), "cut at {cut}");
        }
        let two = [RESPONSE, RESPONSE].concat();
        assert_eq!(response_len(&two), Ok(Some(RESPONSE.len())));
    }

    #[test]
    fn broken_responses_are_errors() {
        for bad in [
            &b"HTTP/1.1 500 Oops\r\nContent-Length: 13\r\n\r\nHello, World!"[..],
            b"HTTP/1.1 200 OK\r\n\r\nHello, World!",
            b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, world?",
            b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\nHello, World!",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\nContent-Length: 13\n\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        ] {
            assert!(response_len(bad).is_err(), "{:?} accepted", String::from_utf8_lossy(bad));
        }
        assert!(response_len(&vec![b'x'; MAX_HEAD + 1]).is_err());
    }

    #[test]
    fn requests_are_framed_with_their_bodies() {
        assert_eq!(request_len(REQUEST), Ok(Some(REQUEST.len())));
        assert_eq!(request_len(&REQUEST[..10]), Ok(None));
        let post = b"POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\nabcGET";
        assert_eq!(request_len(post), Ok(Some(post.len() - 3)));
        assert_eq!(request_len(&post[..post.len() - 4]), Ok(None));
        assert!(request_len(b"hello\r\n\r\n").is_err());
    }

    #[test]
    fn the_responder_answers_pipelined_and_split_requests() {
        let mut responder = Responder::default();
        let three = [REQUEST, REQUEST, REQUEST].concat();
        let (a, b) = three.split_at(REQUEST.len() + 7);
        assert_eq!(responder.feed(a).unwrap(), RESPONSE);
        assert_eq!(responder.feed(b).unwrap(), [RESPONSE, RESPONSE].concat());
        assert_eq!(responder.feed(b"").unwrap(), b"");
        assert!(responder.feed(b"nonsense\r\n\r\n").is_err());
    }
}
