//! TLS at scale: 1,000 connections echoing at once, and 10,000 handshake-and-close cycles
//! that leave no fd behind (counted in `/proc/self/fd`, in a child process of its own). On
//! every backend built in.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use ringloop::{BaseProtocol, Error, EventLoop, Protocol, ServerOptions, Transport};
use uring_tests::tls::{client_options, close_server, tls_server, WAIT};
use uring_tests::{backend_tests, in_child, open_fds, pattern, run_until, settle};

/// What the clients of a batch share: how many are done, and how many failed.
#[derive(Default)]
struct Tally {
    /// Echo received and connection closed cleanly.
    done: Cell<usize>,
    /// Lost with an error, or the echo differed.
    failed: RefCell<Vec<String>>,
}

/// A client that writes `message` once connected, closes once the echo is back (at once for
/// an empty message), and counts itself in the tally when its connection is lost.
struct EchoOnce {
    message: Rc<Vec<u8>>,
    got: Vec<u8>,
    transport: Option<Transport>,
    tally: Rc<Tally>,
}

impl BaseProtocol for EchoOnce {
    fn connection_made(&mut self, transport: Transport) {
        transport.write(&self.message).unwrap();
        if self.message.is_empty() {
            transport.close();
        }
        self.transport = Some(transport);
    }
    fn connection_lost(&mut self, error: Option<Error>) {
        match error {
            None if self.got == *self.message => self.tally.done.set(self.tally.done.get() + 1),
            None => {
                self.tally.failed.borrow_mut().push(format!("echo of {} bytes", self.got.len()))
            }
            Some(error) => self.tally.failed.borrow_mut().push(error.to_string()),
        }
    }
}

impl Protocol for EchoOnce {
    fn data_received(&mut self, data: &[u8]) {
        self.got.extend_from_slice(data);
        if self.got.len() >= self.message.len() {
            self.transport.as_ref().unwrap().close();
        }
    }
}

/// Starts `count` TLS clients to `port` at once, each echoing `message` once.
fn start_clients(
    lp: &EventLoop,
    port: u16,
    count: usize,
    message: &Rc<Vec<u8>>,
    tally: &Rc<Tally>,
) {
    for _ in 0..count {
        let (lp2, message, tally) = (lp.clone(), message.clone(), tally.clone());
        lp.create_task(async move {
            let factory = {
                let tally = tally.clone();
                move || EchoOnce { message, got: Vec::new(), transport: None, tally }
            };
            let connected =
                lp2.create_connection(factory, ("127.0.0.1", port), client_options()).await;
            if let Err(error) = connected {
                tally.failed.borrow_mut().push(error.to_string());
            }
        })
        .unwrap();
    }
}

fn backlog_options() -> ServerOptions {
    ServerOptions::default().backlog(1024)
}

backend_tests! {
    /// 1,000 TLS connections open at once, each echoing 1 KiB, every one closed cleanly.
    fn thousand_connections_echo_at_once(lp) {
        let (server, port, served) = tls_server(lp, true, backlog_options());
        let (message, tally) = (Rc::new(pattern(1024)), Rc::new(Tally::default()));
        start_clients(lp, port, 1000, &message, &tally);
        let finished = run_until(lp, WAIT * 6.0, || tally.done.get() + tally.failed.borrow().len() == 1000);
        assert!(finished, "{} done, {:?}", tally.done.get(), tally.failed.borrow());
        assert!(tally.failed.borrow().is_empty(), "{:?}", tally.failed.borrow());
        assert!(run_until(lp, WAIT, || server.connection_count() == 0));
        assert_eq!(served.borrow().len(), 1000);
        assert!(served.borrow().iter().all(|s| s.borrow().lost_count() == 1));
        close_server(lp, server);
    }

    /// 10,000 handshakes, each connection closed with `close_notify` both ways, in batches
    /// of 200 at once: afterwards the process has exactly the fds it had before.
    fn ten_thousand_cycles_leave_no_fd(lp) {
        if !in_child(lp, "ten_thousand_cycles_leave_no_fd") {
            return;
        }
        settle(lp);
        let before = open_fds();
        let (server, port, served) = tls_server(lp, false, backlog_options());
        let (message, tally) = (Rc::new(Vec::new()), Rc::new(Tally::default()));
        for batch in 1..=50 {
            start_clients(lp, port, 200, &message, &tally);
            let finished = run_until(lp, WAIT * 3.0, || tally.done.get() + tally.failed.borrow().len() == batch * 200);
            assert!(finished, "batch {batch}: {} done, {:?}", tally.done.get(), tally.failed.borrow());
            assert!(run_until(lp, WAIT, || server.connection_count() == 0));
            served.borrow_mut().clear();
        }
        assert!(tally.failed.borrow().is_empty(), "{:?}", tally.failed.borrow());
        assert_eq!(tally.done.get(), 10_000);
        close_server(lp, server);
        settle(lp);
        assert_eq!(open_fds(), before, "fds left behind");
    }
}
