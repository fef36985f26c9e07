//! Reading through the shared receive buffers (issue 3): a transport holds no read buffer of
//! its own, and pausing stops the persistent recv without losing or reordering a byte.
//! Runs on every backend built in; `RINGLOOP_DISABLE=multishot_recv,buffer_ring` covers the
//! io_uring fallback routes.

use std::cell::RefCell;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::thread;

use ringloop::{BaseProtocol, Error, EventLoop, Protocol, Transport};
use uring_tests::{backend_tests, connect_accepted, pattern, run_until, tcp_pair, Received};

/// Pauses reading on every chunk and resumes it from a later callback; records everything.
#[derive(Default)]
struct Stutter {
    /// The transport, the bytes and whether the connection was lost.
    received: Received,
    chunks: usize,
    eof: bool,
    /// Chunks delivered while paused (must stay 0).
    while_paused: usize,
}

impl BaseProtocol for Stutter {
    fn connection_made(&mut self, transport: Transport) {
        self.received.connection_made(transport);
    }
    fn connection_lost(&mut self, error: Option<Error>) {
        self.received.connection_lost(error);
    }
}

impl Protocol for Stutter {
    fn data_received(&mut self, data: &[u8]) {
        let tr = self.received.transport.clone().expect("connection_made first");
        if !tr.is_reading() {
            self.while_paused += 1;
        }
        self.received.data_received(data);
        self.chunks += 1;
        tr.pause_reading();
        let lp = ringloop::get_running_loop().expect("called on the loop");
        let _ = lp.call_soon(move || tr.resume_reading());
    }
    fn eof_received(&mut self) -> bool {
        self.eof = true;
        false
    }
}

fn start(lp: &EventLoop, fd: OwnedFd) -> Rc<RefCell<Stutter>> {
    connect_accepted(lp, fd, Stutter::default()).1
}

/// Whether the running kernel is at least 6.0 (multishot recv).
fn kernel_6() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    release.split('.').next().and_then(|major| major.parse::<u32>().ok()).is_some_and(|m| m >= 6)
}

backend_tests! {
    fn the_loop_reports_the_persistent_op_features(lp) {
        let names = ["multishot_accept", "multishot_recv", "buffer_ring"];
        let disabled = std::env::var("RINGLOOP_DISABLE").unwrap_or_default();
        let features = lp.features();
        // Each needs the ones after it.
        let needs = |name: &str| match name {
            "multishot_recv" => vec!["multishot_recv", "buffer_ring", "op_recv"],
            "buffer_ring" => vec!["buffer_ring", "op_recv"],
            _ => vec!["multishot_accept", "op_accept"],
        };
        for name in names {
            let off = needs(name).iter().any(|n| disabled.split(',').any(|d| d.trim() == *n));
            let expected = lp.backend() == ringloop::Backend::Uring && !off && kernel_6();
            assert_eq!(features.contains(&name), expected, "{name}: {features:?}");
        }
    }

    fn pausing_on_every_chunk_loses_and_reorders_nothing(lp) {
        let (mut peer, ours) = tcp_pair();
        let proto = start(lp, ours);
        let sent = pattern(4 << 20);
        let expected = sent.clone();
        let writer = thread::spawn(move || {
            peer.write_all(&sent).unwrap();
            peer.shutdown(std::net::Shutdown::Write).unwrap();
            peer
        });
        assert!(run_until(lp, 30.0, || proto.borrow().received.lost), "connection_lost");
        let _peer = writer.join().unwrap();
        let p = proto.borrow();
        let data = &p.received.data;
        assert!(*data == expected, "{} of {} bytes, or reordered", data.len(), expected.len());
        assert!(p.eof && p.chunks > 1);
        assert_eq!(p.while_paused, 0, "nothing is delivered while paused");
    }

    fn bytes_written_while_paused_arrive_after_resume_in_order(lp) {
        let (mut peer, ours) = tcp_pair();
        let proto = start(lp, ours);
        assert!(run_until(lp, 5.0, || proto.borrow().received.transport.is_some()));
        let tr = proto.borrow().received.transport.clone().unwrap();
        peer.write_all(b"a").unwrap();
        assert!(run_until(lp, 5.0, || proto.borrow().received.data == b"a"));
        // Resumed by the protocol's call_soon; now pause for good and write more.
        assert!(run_until(lp, 5.0, || tr.is_reading()));
        tr.pause_reading();
        peer.write_all(&pattern(300_000)).unwrap();
        uring_tests::spin(lp, 0.2);
        assert_eq!(proto.borrow().received.data, b"a", "nothing while paused");
        tr.resume_reading();
        let mut expected = b"a".to_vec();
        expected.extend(pattern(300_000));
        assert!(run_until(lp, 10.0, || proto.borrow().received.data.len() == expected.len()));
        assert!(proto.borrow().received.data == expected);
        tr.close();
        assert!(run_until(lp, 5.0, || proto.borrow().received.lost));
    }
}
