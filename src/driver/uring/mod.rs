//! io_uring backend (STUB: being written; same API as the final one).
#![allow(dead_code, unused_variables)]

use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::{Completion, EventFd, Op, OpId};

/// The io_uring driver.
#[derive(Debug)]
pub(crate) struct UringDriver<T> {
    waker: Arc<EventFd>,
    owners: slab::Slab<T>,
}

impl<T: Clone> UringDriver<T> {
    pub(crate) fn new() -> io::Result<Self> {
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }
    pub(crate) fn submit(&mut self, op: Op, owner: T) -> OpId {
        todo!()
    }
    pub(crate) fn cancel(&mut self, id: OpId) -> Option<T> {
        todo!()
    }
    pub(crate) fn turn(
        &mut self,
        timeout: Option<Duration>,
        out: &mut Vec<Completion<T>>,
    ) -> io::Result<()> {
        todo!()
    }
    pub(crate) fn waker(&self) -> Arc<EventFd> {
        self.waker.clone()
    }
    pub(crate) fn features(&self) -> Vec<&'static str> {
        Vec::new()
    }
    pub(crate) fn in_flight(&self) -> usize {
        0
    }
}
