//! The connections' buffers: one each, from a registered region (`fixed-buffers`, the first
//! [`REGISTERED`] connections at a time) or the heap.

use io_uring::Submitter;

/// Each connection's buffer: what one recv may take.
pub const BUFFER: usize = 64 * 1024;
/// Buffers in the registered region.
pub const REGISTERED: usize = 256;

/// A connection's buffer.
#[derive(Debug)]
pub enum Buf {
    /// Buffer `index` of the registered region.
    Registered(u16),
    /// A buffer of its own.
    Heap(Box<[u8]>),
}

/// The buffers not in use.
#[derive(Debug)]
pub struct Buffers {
    /// The registered region, [`REGISTERED`] buffers of [`BUFFER`] bytes back to back (empty
    /// without `fixed-buffers`). Registered once and never freed or moved: the kernel holds
    /// its pages for the life of the ring.
    region: Box<[u8]>,
    /// Indexes of the region's free buffers.
    free: Vec<u16>,
    /// Heap buffers of closed connections, for the next ones.
    spare: Vec<Box<[u8]>>,
}

impl Buffers {
    /// The pool; with `registered`, the region registered with `submitter`.
    pub fn new(submitter: &Submitter<'_>, registered: bool) -> Result<Buffers, String> {
        if !registered {
            return Ok(Buffers { region: Box::new([]), free: Vec::new(), spare: Vec::new() });
        }
        let mut region = vec![0u8; REGISTERED * BUFFER].into_boxed_slice();
        let iovecs: Vec<libc::iovec> = region
            .chunks_exact_mut(BUFFER)
            .map(|chunk| libc::iovec { iov_base: chunk.as_mut_ptr().cast(), iov_len: BUFFER })
            .collect();
        // SAFETY: the iovecs cover `region`, which the returned pool owns for the rest of the
        // process (the ring, which holds the registration, never outlives it: both live until
        // the server exits) and never moves (a boxed slice).
        unsafe { submitter.register_buffers(&iovecs) }
            .map_err(|e| format!("IORING_REGISTER_BUFFERS: {e}"))?;
        let free = (0..REGISTERED as u16).rev().collect();
        Ok(Buffers { region, free, spare: Vec::new() })
    }

    /// A buffer for a new connection: registered while any is free, else from the heap.
    pub fn take(&mut self) -> Buf {
        match self.free.pop() {
            Some(index) => Buf::Registered(index),
            None => Buf::Heap(self.spare.pop().unwrap_or_else(|| vec![0; BUFFER].into())),
        }
    }

    /// Takes back a closed connection's buffer (the kernel no longer uses it).
    pub fn give(&mut self, buf: Buf) {
        match buf {
            Buf::Registered(index) => self.free.push(index),
            Buf::Heap(heap) => self.spare.push(heap),
        }
    }

    /// Where `buf` starts.
    pub fn ptr(&mut self, buf: &mut Buf) -> *mut u8 {
        match buf {
            Buf::Registered(index) => self.region[usize::from(*index) * BUFFER..].as_mut_ptr(),
            Buf::Heap(heap) => heap.as_mut_ptr(),
        }
    }
}
