//! What an [`Op::Send`](super::Op::Send) sends: shared bytes, or a copy the op owns.
//!
//! A batched write of a borrowed slice must be copied (the kernel reads it after `write`
//! returns). Copied into a `Vec` the op owns, the bytes need no shared header, no reference
//! count and no second queue: the op is the only place they are, writes made before the op
//! reaches the kernel are appended to it in place ([`Driver::append`]), and its completion
//! hands the `Vec` back for the next copy (`transport::copy_pool`).
//!
//! [`Driver::append`]: super::any::Driver::append

use std::ops::Deref;

use bytes::Bytes;

/// The bytes of a send.
#[derive(Debug)]
pub(crate) enum SendBuf {
    /// Shared bytes (an owned write, a buffered chunk, a held receive buffer).
    Shared(Bytes),
    /// A copy the op owns.
    Copied(Vec<u8>),
}

impl Deref for SendBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            SendBuf::Shared(bytes) => bytes,
            SendBuf::Copied(vec) => vec,
        }
    }
}

impl From<Bytes> for SendBuf {
    fn from(bytes: Bytes) -> SendBuf {
        SendBuf::Shared(bytes)
    }
}

impl SendBuf {
    /// Appends `buffers` to an owned copy; false (nothing done) for shared bytes.
    pub(crate) fn append(&mut self, buffers: &[&[u8]]) -> bool {
        let SendBuf::Copied(vec) = self else { return false };
        for data in buffers {
            vec.extend_from_slice(data);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_owned_copy_is_appended_to() {
        let mut copied = SendBuf::Copied(b"ab".to_vec());
        assert!(copied.append(&[b"c", b"", b"de"]));
        assert_eq!(&copied[..], b"abcde");
        let mut shared = SendBuf::from(Bytes::from_static(b"ab"));
        assert!(!shared.append(&[b"c"]));
        assert_eq!(&shared[..], b"ab");
    }
}
