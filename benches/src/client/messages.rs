//! What one message is, per workload: the bytes a request sends, and how received bytes
//! complete replies (echo: the same number of bytes; HTTP: one valid hello-world response).

use std::io;

use crate::http;

/// A workload's messages as the load generator sees them.
pub trait Messages {
    /// Per connection: what is known of the reply being received.
    type Replies: Default;

    /// One request's bytes.
    fn request(&self) -> &[u8];

    /// Takes in bytes received on one connection; returns how many replies they completed.
    /// An error is a broken server: the run stops with it.
    fn replies(&self, state: &mut Self::Replies, data: &[u8]) -> io::Result<usize>;
}

/// Echo messages of one size, all bytes `0x5a`: a reply is that many bytes back.
#[derive(Debug)]
pub struct Echo {
    /// One message.
    message: Vec<u8>,
}

impl Echo {
    /// Messages of `size` bytes.
    pub fn new(size: usize) -> Echo {
        Echo { message: vec![0x5a; size] }
    }
}

impl Messages for Echo {
    /// Bytes of the oldest reply received so far.
    type Replies = usize;

    fn request(&self) -> &[u8] {
        &self.message
    }

    fn replies(&self, received: &mut usize, data: &[u8]) -> io::Result<usize> {
        *received += data.len();
        let done = *received / self.message.len();
        *received %= self.message.len();
        Ok(done)
    }
}

/// HTTP/1.1 keep-alive hello-world: [`http::REQUEST`], answered by a response that
/// [`http::response_len`] accepts.
#[derive(Debug)]
pub struct Http;

impl Messages for Http {
    /// The start of a response whose end has not arrived yet.
    type Replies = Vec<u8>;

    fn request(&self) -> &[u8] {
        http::REQUEST
    }

    fn replies(&self, partial: &mut Vec<u8>, data: &[u8]) -> io::Result<usize> {
        if partial.is_empty() {
            let (done, used) = responses(data)?;
            partial.extend_from_slice(&data[used..]);
            return Ok(done);
        }
        partial.extend_from_slice(data);
        let (done, used) = responses(partial)?;
        partial.drain(..used);
        Ok(done)
    }
}

/// The number of complete responses at the start of `data`, and the bytes they take.
fn responses(data: &[u8]) -> io::Result<(usize, usize)> {
    let (mut done, mut used) = (0, 0);
    loop {
        match http::response_len(&data[used..]) {
            Ok(Some(len)) => (done, used) = (done + 1, used + len),
            Ok(None) => return Ok((done, used)),
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("HTTP: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_replies_count_bytes() {
        let (echo, mut received) = (Echo::new(10), 0);
        assert_eq!(echo.replies(&mut received, &[0; 25]).unwrap(), 2);
        assert_eq!(echo.replies(&mut received, &[0; 5]).unwrap(), 1);
        assert_eq!(received, 0);
    }

    #[test]
    fn http_replies_are_framed_across_reads() {
        let mut partial = Vec::new();
        let stream = [http::RESPONSE, http::RESPONSE, http::RESPONSE].concat();
        let (a, b) = stream.split_at(http::RESPONSE.len() + 20);
        assert_eq!(Http.replies(&mut partial, a).unwrap(), 1);
        assert_eq!(partial.len(), 20);
        assert_eq!(Http.replies(&mut partial, b).unwrap(), 2);
        assert!(partial.is_empty());
        assert!(Http.replies(&mut partial, b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
    }
}
