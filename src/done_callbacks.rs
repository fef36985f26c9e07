//! The done callbacks of a future or a task: registered by id, removed by id, taken at the end.

use std::cell::{Cell, RefCell};

/// Done callbacks by id (asyncio's `_callbacks`), shared by [`Future`](crate::Future) and
/// [`Task`](crate::Task): ids count up from 0, one per `add_done_callback` call, whether the
/// callback is kept or run at once.
pub(crate) struct DoneCallbacks<C> {
    /// The callbacks still registered, in the order added.
    list: RefCell<Vec<(u64, C)>>,
    /// The id the next callback gets.
    next_id: Cell<u64>,
}

impl<C> DoneCallbacks<C> {
    /// None registered; the first id is 0.
    pub(crate) fn new() -> DoneCallbacks<C> {
        DoneCallbacks { list: RefCell::new(Vec::new()), next_id: Cell::new(0) }
    }

    /// Takes an id for a callback that is not kept (the owner was already done).
    pub(crate) fn next_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    /// Keeps `callback` until [`take`](Self::take); returns its id.
    pub(crate) fn add(&self, callback: C) -> u64 {
        let id = self.next_id();
        self.list.borrow_mut().push((id, callback));
        id
    }

    /// Removes the callback `id`; returns how many were removed (0 or 1).
    pub(crate) fn remove(&self, id: u64) -> usize {
        let mut list = self.list.borrow_mut();
        let before = list.len();
        list.retain(|(kept, _)| *kept != id);
        before - list.len()
    }

    /// Every callback still registered, in the order added, leaving none.
    pub(crate) fn take(&self) -> impl Iterator<Item = C> {
        self.list.take().into_iter().map(|(_, callback)| callback)
    }

    /// Drops every callback still registered.
    pub(crate) fn clear(&self) {
        drop(self.list.take());
    }
}
