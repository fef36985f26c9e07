//! `BufferedProtocol` through the public constructors (`connect_accepted_socket`,
//! `create_connection`, `create_server`) and `Transport::set_protocol`: BEHAVIOURS item 116,
//! on every backend built in, with real sockets.
//!
//! The transport copies received bytes into the buffers `get_buffer` lends, in as many rounds
//! as the buffers need, and calls `buffer_updated(n)` after each. `get_buffer` returning an
//! empty buffer or panicking is a fatal error and `buffer_updated` is then not called.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::thread;
use std::time::Duration;

use ringloop::{
    BaseProtocol, BufferedProtocol, ConnectOptions, Error, EventLoop, Protocol, ServerOptions,
    Transport,
};
use uring_tests::{
    backend_tests, capture_error_texts, connect_accepted, pattern, quiet_panic, run_until, spin,
};

/// Generous bound for "this must happen" waits (2 shared cores, debug build).
const WAIT: f64 = 20.0;

/// One callback of a [`Buf`] protocol.
#[derive(Clone, Debug, PartialEq)]
enum Ev {
    Made,
    /// `buffer_updated(n)` (consecutive calls are not merged).
    Updated(usize),
    Eof,
    /// `connection_lost`; the error's text if any.
    Lost(Option<String>),
}

/// What `get_buffer` does.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Lend {
    /// Lends the whole buffer.
    Buffer,
    /// Returns an empty slice.
    Empty,
    /// Panics.
    Panic,
}

/// A recording `BufferedProtocol` with a buffer of a chosen size.
struct Buf {
    buffer: Vec<u8>,
    lend: Lend,
    /// Every byte received, in order.
    data: Vec<u8>,
    events: Vec<Ev>,
    /// Every `size_hint` given to `get_buffer`.
    hints: Vec<usize>,
    lost_error: Option<Error>,
    keep_open: bool,
    /// Echo what arrives.
    echo: bool,
    transport: Option<Transport>,
}

impl Buf {
    fn new(size: usize) -> Buf {
        Buf {
            buffer: vec![0; size],
            lend: Lend::Buffer,
            data: Vec::new(),
            events: Vec::new(),
            hints: Vec::new(),
            lost_error: None,
            keep_open: false,
            echo: false,
            transport: None,
        }
    }

    fn lost_count(&self) -> usize {
        self.events.iter().filter(|e| matches!(e, Ev::Lost(_))).count()
    }

    fn updates(&self) -> Vec<usize> {
        let sizes = self.events.iter().filter_map(|e| match e {
            Ev::Updated(n) => Some(*n),
            _ => None,
        });
        sizes.collect()
    }

    /// The events with the `buffer_updated` run collapsed into one `Updated(total)`.
    fn summary(&self) -> Vec<Ev> {
        let mut out: Vec<Ev> = Vec::new();
        for ev in &self.events {
            match (out.last_mut(), ev) {
                (Some(Ev::Updated(total)), Ev::Updated(n)) => *total += n,
                _ => out.push(ev.clone()),
            }
        }
        out
    }
}

impl BaseProtocol for Buf {
    fn connection_made(&mut self, transport: Transport) {
        self.events.push(Ev::Made);
        self.transport = Some(transport);
    }

    fn connection_lost(&mut self, error: Option<Error>) {
        self.events.push(Ev::Lost(error.as_ref().map(ToString::to_string)));
        self.lost_error = error;
    }
}

impl BufferedProtocol for Buf {
    fn get_buffer(&mut self, size_hint: usize) -> &mut [u8] {
        self.hints.push(size_hint);
        match self.lend {
            Lend::Buffer => &mut self.buffer,
            Lend::Empty => &mut [],
            Lend::Panic => quiet_panic("boom in get_buffer"),
        }
    }

    fn buffer_updated(&mut self, nbytes: usize) {
        let got = &self.buffer[..nbytes];
        self.data.extend_from_slice(got);
        if self.echo {
            let _ = self.transport.as_ref().unwrap().write(got);
        }
        self.events.push(Ev::Updated(nbytes));
    }

    fn eof_received(&mut self) -> bool {
        self.events.push(Ev::Eof);
        self.keep_open
    }
}

type Shared = Rc<RefCell<Buf>>;

/// A connected TCP pair: `(peer, our end)`. The peer is blocking.
fn tcp_pair() -> (TcpStream, OwnedFd) {
    let (peer, ours) = uring_tests::tcp_pair();
    peer.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    (peer, ours)
}

/// Wraps `fd` in a transport driving `buf`; runs the loop until `connection_made`.
fn connect(lp: &EventLoop, fd: OwnedFd, buf: Buf) -> (Transport, Shared) {
    let (tr, proto) = connect_accepted(lp, fd, buf);
    assert!(run_until(lp, WAIT, || !proto.borrow().events.is_empty()), "connection_made");
    (tr, proto)
}

fn wait_lost(lp: &EventLoop, proto: &Shared) {
    assert!(run_until(lp, WAIT, || proto.borrow().lost_count() > 0), "connection_lost");
    spin(lp, 0.05);
    assert_eq!(proto.borrow().lost_count(), 1, "connection_lost exactly once");
}

/// Connects a [`Buf`] whose `get_buffer` lends as `lend`, has the peer write, and runs the
/// loop until `connection_lost`: the errors reported, the peer and the protocol.
fn lost_in_get_buffer(lp: &EventLoop, lend: Lend) -> (Rc<RefCell<Vec<String>>>, TcpStream, Shared) {
    let errors = capture_error_texts(lp);
    let (mut peer, ours) = tcp_pair();
    let mut buf = Buf::new(16);
    buf.lend = lend;
    let (_tr, proto) = connect(lp, ours, buf);
    peer.write_all(b"data").unwrap();
    wait_lost(lp, &proto);
    (errors, peer, proto)
}

/// A plain `Protocol` recording what it receives.
#[derive(Default)]
struct Plain {
    data: Vec<u8>,
    transport: Option<Transport>,
    /// Installed by `set_protocol` from inside `data_received`, once `data` holds this many.
    switch_at: Option<(usize, Shared)>,
}

impl BaseProtocol for Plain {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }
}

impl Protocol for Plain {
    fn data_received(&mut self, data: &[u8]) {
        self.data.extend_from_slice(data);
        if let Some((at, next)) = self.switch_at.take() {
            if self.data.len() >= at {
                self.transport.as_ref().unwrap().set_protocol(next);
            } else {
                self.switch_at = Some((at, next));
            }
        }
    }
}

backend_tests! {
    // A 7-byte buffer takes a 100 KiB payload intact: many rounds per read, each
    // `buffer_updated(n)` with 1 <= n <= 7, then eof_received, then connection_lost once.
    fn small_buffer_takes_a_large_payload(lp) {
        let (mut peer, ours) = tcp_pair();
        let (tr, proto) = connect(lp, ours, Buf::new(7));
        let payload = pattern(100 * 1024);
        let sent = payload.clone();
        let writer = thread::spawn(move || {
            peer.write_all(&sent).unwrap();
            peer.shutdown(Shutdown::Write).unwrap();
            peer
        });
        wait_lost(lp, &proto);
        let mut peer = writer.join().unwrap();
        let p = proto.borrow();
        assert!(p.data == payload, "data corrupted: {} bytes of {}", p.data.len(), payload.len());
        let updates = p.updates();
        assert!(updates.iter().all(|&n| (1..=7).contains(&n)), "a round over the buffer");
        assert!(updates.len() >= payload.len() / 7, "{} rounds", updates.len());
        assert!(p.hints.iter().all(|&h| h > 0), "size hints: the bytes still to deliver");
        let want = vec![Ev::Made, Ev::Updated(payload.len()), Ev::Eof, Ev::Lost(None)];
        assert_eq!(p.summary(), want);
        drop(p);
        assert!(tr.is_closing() && tr.socket_fd().is_none());
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).expect("EOF: our socket was closed");
        assert!(rest.is_empty());
    }

    // A buffer larger than the data: one round per read, and `eof_received` returning true
    // keeps the transport open for writing (and `is_reading` stays true).
    fn keep_open_after_eof(lp) {
        let (mut peer, ours) = tcp_pair();
        let mut buf = Buf::new(1 << 20);
        buf.keep_open = true;
        let (tr, proto) = connect(lp, ours, buf);
        peer.write_all(b"hello").unwrap();
        peer.shutdown(Shutdown::Write).unwrap();
        assert!(run_until(lp, WAIT, || proto.borrow().events.contains(&Ev::Eof)));
        spin(lp, 0.05);
        assert_eq!(proto.borrow().events, vec![Ev::Made, Ev::Updated(5), Ev::Eof]);
        assert!(!tr.is_closing() && tr.is_reading());
        tr.write(b"bye").unwrap();
        tr.close();
        let reader = thread::spawn(move || {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).map(|_| got)
        });
        wait_lost(lp, &proto);
        assert!(run_until(lp, WAIT, || reader.is_finished()));
        assert_eq!(reader.join().unwrap().unwrap(), b"bye");
        assert_eq!(proto.borrow().events.last(), Some(&Ev::Lost(None)));
    }

    // BEHAVIOURS 116: `get_buffer` returning an empty buffer is a fatal error (asyncio's
    // "get_buffer() returned an empty buffer"), reported to the exception handler, and
    // `buffer_updated` is not called.
    fn empty_buffer_is_a_fatal_error(lp) {
        let (errors, mut peer, proto) = lost_in_get_buffer(lp, Lend::Empty);
        let p = proto.borrow();
        assert_eq!(p.hints.len(), 1, "get_buffer asked once");
        assert!(p.updates().is_empty(), "buffer_updated was called");
        assert!(
            matches!(&p.lost_error, Some(Error::Runtime { message: m, .. }) if m == "get_buffer() returned an empty buffer"),
            "{:?}",
            p.lost_error
        );
        let errors = errors.borrow();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("protocol.get_buffer() call failed"), "{}", errors[0]);
        let mut rest = Vec::new();
        let _ = peer.read_to_end(&mut rest); // the transport closed its end
    }

    // BEHAVIOURS 116: a panic in `get_buffer` is a fatal error; `buffer_updated` is not called.
    fn panic_in_get_buffer_is_a_fatal_error(lp) {
        let (errors, _peer, proto) = lost_in_get_buffer(lp, Lend::Panic);
        let p = proto.borrow();
        assert!(p.updates().is_empty(), "buffer_updated was called");
        assert!(
            matches!(&p.lost_error, Some(Error::Panic(m)) if m.contains("boom in get_buffer")),
            "{:?}",
            p.lost_error
        );
        assert!(errors.borrow()[0].contains("get_buffer"), "{:?}", errors.borrow());
    }

    // BEHAVIOURS 116: `set_protocol` switches from a `Protocol` to a `BufferedProtocol`
    // mid-stream (from inside `data_received`); the bytes after the switch go through
    // `get_buffer`/`buffer_updated`, in order, and the switch back works too.
    fn set_protocol_switches_kinds_mid_stream(lp) {
        let (mut peer, ours) = tcp_pair();
        let buffered = Rc::new(RefCell::new(Buf::new(3)));
        let plain = Plain { switch_at: Some((5, buffered.clone())), ..Plain::default() };
        let (tr, first) = connect_accepted(lp, ours, plain);
        peer.write_all(b"first").unwrap();
        assert!(run_until(lp, WAIT, || first.borrow().data == b"first"));
        peer.write_all(b"second").unwrap();
        assert!(run_until(lp, WAIT, || buffered.borrow().data == b"second"));
        assert!(tr.get_protocol::<Buf>().is_some_and(|p| Rc::ptr_eq(&p, &buffered)));
        assert_eq!(first.borrow().data, b"first", "the old protocol got nothing more");
        let back = Rc::new(RefCell::new(Plain::default()));
        tr.set_protocol(back.clone());
        peer.write_all(b"third").unwrap();
        assert!(run_until(lp, WAIT, || back.borrow().data == b"third"));
        assert_eq!(buffered.borrow().data, b"second");
        assert!(buffered.borrow().updates().iter().all(|&n| n <= 3));
        tr.abort();
        spin(lp, 0.05);
    }

    // `create_server` with a `BufferedProtocol` factory: each connection's protocol echoes
    // what `buffer_updated` reports.
    fn create_server_with_a_buffered_protocol(lp) {
        let lp2 = lp.clone();
        let server = lp
            .run_until_complete(async move {
                let factory = || Buf { echo: true, ..Buf::new(4) };
                lp2.create_server(factory, "127.0.0.1:0", ServerOptions::default()).await
            })
            .unwrap()
            .unwrap();
        let port = server.sockets()[0].as_socket().unwrap().port();
        let client = thread::spawn(move || {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            stream.write_all(b"hello, buffered world").unwrap();
            stream.shutdown(Shutdown::Write).unwrap();
            let mut got = Vec::new();
            stream.read_to_end(&mut got).unwrap();
            got
        });
        assert!(run_until(lp, 60.0, || client.is_finished()));
        assert_eq!(client.join().unwrap(), b"hello, buffered world");
        server.close();
        let closing = server.clone();
        // Every connection is gone (its socket closed) once this completes.
        lp.run_until_complete(async move { closing.wait_closed().await }).unwrap();
    }

    // `create_connection` with a `BufferedProtocol` factory: the returned protocol is the one
    // the transport fills.
    fn create_connection_with_a_buffered_protocol(lp) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(&pattern(10_000)).unwrap();
        });
        let lp2 = lp.clone();
        let (tr, proto) = lp
            .run_until_complete(async move {
                let options = ConnectOptions::new();
                lp2.create_connection(|| Buf::new(100), ("127.0.0.1", port), options)
                    .await
            })
            .unwrap()
            .unwrap();
        wait_lost(lp, &proto);
        server.join().unwrap();
        assert!(proto.borrow().data == pattern(10_000));
        assert_eq!(proto.borrow().summary().last(), Some(&Ev::Lost(None)));
        assert!(tr.is_closing());
    }
}
