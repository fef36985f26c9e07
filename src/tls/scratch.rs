//! Per-thread scratch buffers for the layer's copies (decrypted plaintext on its way to the
//! protocol, records on their way to the stream below), so an idle TLS connection holds no
//! buffer of its own and a busy one allocates none per read or write.

use std::cell::Cell;
use std::ops::{Deref, DerefMut};
use std::thread::LocalKey;

/// The most capacity a scratch buffer keeps between uses.
const MAX_KEPT: usize = 256 * 1024;

thread_local! {
    static PLAINTEXT: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    static RECORDS: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// A thread's scratch buffer, taken (empty) until dropped. Taken again while taken (a
/// nested use), it is a fresh buffer.
pub(super) struct Scratch {
    /// The buffer.
    buf: Vec<u8>,
    /// Where it goes back.
    slot: &'static LocalKey<Cell<Vec<u8>>>,
}

impl Scratch {
    /// The buffer for decrypted plaintext.
    pub(super) fn plaintext() -> Scratch {
        Scratch::take(&PLAINTEXT)
    }

    /// The buffer for outgoing records.
    pub(super) fn records() -> Scratch {
        Scratch::take(&RECORDS)
    }

    fn take(slot: &'static LocalKey<Cell<Vec<u8>>>) -> Scratch {
        Scratch { buf: slot.with(Cell::take), slot }
    }
}

impl Deref for Scratch {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        if buf.capacity() <= MAX_KEPT {
            buf.clear();
            // `try_with`: at thread exit the slot may be gone; the buffer is then freed.
            let _ = self.slot.try_with(|slot| slot.set(buf));
        }
    }
}
