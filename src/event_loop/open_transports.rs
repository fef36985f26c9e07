//! The transports a loop started that have not yet finished (delivered `connection_lost`):
//! what [`EventLoop::close`](super::EventLoop::close) lets go of when it closes with
//! connections still open.
//!
//! A protocol that keeps its transport (asyncio's `self.transport = transport`) and the
//! transport, which keeps its protocol, hold each other; `connection_lost` breaks that cycle
//! (the transport drops its protocol after it). A loop closed, or dropped, with the connection
//! still open never delivers it: without this list the pair would never be freed, nor the
//! transport's fd closed (asyncio leaves them to its garbage collector).

use std::cell::{Cell, RefCell};
use std::rc::Weak;

use slab::Slab;

/// A started transport, as its loop's close sees it.
pub(crate) trait OpenTransport {
    /// The loop closed with the transport open: it closes its fd and lets go of its protocol,
    /// with no callback (there is no loop left to run one).
    fn release_at_close(&self);
}

/// A loop's open transports.
#[derive(Default)]
pub(crate) struct OpenTransports(RefCell<Slab<Weak<dyn OpenTransport>>>);

impl OpenTransports {
    /// Lists `transport`; its key goes back to [`remove`](Self::remove) once it finished.
    pub(crate) fn add(&self, transport: Weak<dyn OpenTransport>) -> usize {
        self.0.borrow_mut().insert(transport)
    }

    /// Unlists a finished transport.
    pub(crate) fn remove(&self, key: usize) {
        self.0.borrow_mut().try_remove(key);
    }

    /// How many are listed (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.borrow().len()
    }

    /// Releases every listed transport (the loop closes; see [`OpenTransport`]). The list is
    /// emptied first: a release drops protocols, whose drop may call back into the loop.
    pub(crate) fn release_all(&self) {
        let open: Vec<_> = self.0.borrow_mut().drain().collect();
        for transport in open.iter().filter_map(Weak::upgrade) {
            transport.release_at_close();
        }
    }
}

impl Drop for OpenTransports {
    /// A loop dropped without `close()` releases its transports too (its driver, dropped
    /// before this list, has drained every op first).
    fn drop(&mut self) {
        self.release_all();
    }
}

/// Where a transport is listed: the key, while it is. Four bytes (`NONE` when unlisted):
/// every open connection carries one.
pub(crate) struct OpenKey(Cell<u32>);

impl OpenKey {
    /// Not listed.
    const NONE: u32 = u32::MAX;

    /// Keeps the key [`OpenTransports::add`] gave; false for a key past `u32` (never: that
    /// many transports open at once), which the caller then unlists.
    fn set(&self, key: usize) -> bool {
        match u32::try_from(key) {
            Ok(key) if key != Self::NONE => {
                self.0.set(key);
                true
            }
            _ => false,
        }
    }

    /// The key, once: a transport is unlisted at most once.
    fn take(&self) -> Option<usize> {
        match self.0.replace(Self::NONE) {
            Self::NONE => None,
            key => Some(key as usize),
        }
    }
}

impl Default for OpenKey {
    fn default() -> Self {
        OpenKey(Cell::new(Self::NONE))
    }
}

impl super::EventLoop {
    /// Lists a started transport until it finishes (see [`OpenTransports`]).
    pub(crate) fn list_open(&self, transport: Weak<dyn OpenTransport>, key: &OpenKey) {
        let listed = self.inner.open_transports.add(transport);
        if !key.set(listed) {
            self.inner.open_transports.remove(listed);
        }
    }

    /// Unlists a transport that finished (its `connection_lost` delivered).
    pub(crate) fn unlist_open(&self, key: &OpenKey) {
        if let Some(key) = key.take() {
            self.inner.open_transports.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;
    use std::rc::Rc;

    use crate::test_support::loops;
    use crate::{sleep, BaseProtocol, Error, Protocol, Transport};

    /// Keeps its transport, as asyncio protocols do.
    #[derive(Default)]
    struct Keeps {
        transport: Option<Transport>,
        lost: bool,
    }

    impl BaseProtocol for Keeps {
        fn connection_made(&mut self, transport: Transport) {
            self.transport = Some(transport);
        }

        fn connection_lost(&mut self, _: Option<Error>) {
            self.lost = true;
        }
    }

    impl Protocol for Keeps {}

    #[test]
    fn a_transport_is_listed_from_its_start_until_connection_lost() {
        for lp in loops("a_transport_is_listed_from_its_start_until_connection_lost") {
            let run = lp.clone();
            let (peers, protocols) = lp
                .run_until_complete(async move {
                    let (mut peers, mut protocols) = (Vec::new(), Vec::new());
                    for _ in 0..20 {
                        let (peer, ours) = UnixStream::pair().unwrap();
                        let (_, protocol) = run
                            .connect_accepted_socket(Keeps::default, OwnedFd::from(ours))
                            .await
                            .unwrap();
                        peers.push(peer);
                        protocols.push(protocol);
                    }
                    sleep(0.01).await.unwrap();
                    (peers, protocols)
                })
                .unwrap();
            assert_eq!(lp.inner.open_transports.len(), 20);
            let transports: Vec<_> =
                protocols.iter().map(|p| p.borrow().transport.clone().unwrap()).collect();
            transports.iter().for_each(Transport::close);
            lp.run_until_complete(sleep(0.05)).unwrap().unwrap();
            assert!(protocols.iter().all(|p: &Rc<RefCell<Keeps>>| p.borrow().lost));
            assert_eq!(lp.inner.open_transports.len(), 0, "each unlisted after its lost");
            drop((peers, transports));
            assert!(protocols.iter().all(|p| Rc::strong_count(p) == 1), "the cycles are broken");
        }
    }
}
