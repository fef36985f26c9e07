//! `start_tls` (asyncio's "TLS Upgrade"): a plain connection upgraded on both sides with data
//! before and after, the old transport refusing further use, a refused upgrade, and the
//! upgrades that are refused outright. On every backend built in.

use std::cell::RefCell;
use std::rc::Rc;

use ringloop::{
    BaseProtocol, ConnectOptions, Error, Protocol, ServerOptions, StartTlsOptions, TlsErrorKind,
    Transport,
};
use uring_tests::tls::{client_options, close_server, pki, tls_connect, tls_server, TlsRec, WAIT};
use uring_tests::{backend_tests, run_until, run_within, Ev};

/// A plain line server that upgrades when the client writes `STARTTLS\n`: it answers
/// `GO\n`, calls `start_tls` from inside `data_received`, and echoes lines over TLS.
#[derive(Default)]
struct Upgrading {
    transport: Option<Transport>,
    upgraded: Rc<RefCell<Option<Result<Transport, Error>>>>,
    seen: Rc<RefCell<Seen>>,
}

/// What the server side saw.
#[derive(Default)]
struct Seen {
    /// Bytes before the upgrade, then after.
    plain: Vec<u8>,
    secret: Vec<u8>,
    events: Vec<Ev>,
}

impl BaseProtocol for Upgrading {
    fn connection_made(&mut self, transport: Transport) {
        self.seen.borrow_mut().events.push(Ev::Made);
        self.transport = Some(transport);
    }
    fn connection_lost(&mut self, error: Option<Error>) {
        self.seen.borrow_mut().events.push(Ev::Lost(uring_tests::errno_of(&error)));
    }
}

impl Protocol for Upgrading {
    fn data_received(&mut self, data: &[u8]) {
        let transport = self.transport.clone().unwrap();
        if self.upgraded.borrow().is_some() {
            self.seen.borrow_mut().secret.extend_from_slice(data);
            let tls = self.upgraded.borrow().clone().unwrap().unwrap();
            tls.write(data).unwrap();
            return;
        }
        self.seen.borrow_mut().plain.extend_from_slice(data);
        if self.seen.borrow().plain.ends_with(b"STARTTLS\n") {
            transport.write(b"GO\n").unwrap();
            let me = transport.get_protocol::<Upgrading>().unwrap();
            let lp = ringloop::get_running_loop().unwrap();
            let options = StartTlsOptions::new().server_side(true);
            let upgrade = lp.start_tls(&transport, me, pki().server(), options);
            let slot = self.upgraded.clone();
            lp.create_task(async move {
                let result = upgrade.await;
                *slot.borrow_mut() = Some(result);
            })
            .unwrap();
        } else {
            transport.write(data).unwrap(); // plain echo
        }
    }
}

backend_tests! {
    /// Plain data, then `STARTTLS` on both sides, then data over TLS; nothing lost, the old
    /// transports refuse further use, and each protocol gets `connection_lost` once.
    fn upgrade_both_sides_with_data_before_and_after(lp) {
        let seen = Rc::new(RefCell::new(Seen::default()));
        let (lp2, sink) = (lp.clone(), seen.clone());
        let server = run_within(lp, WAIT, async move {
            let factory = move || Upgrading { seen: sink.clone(), ..Upgrading::default() };
            lp2.create_server(factory, "127.0.0.1:0", ServerOptions::default()).await
        })
        .unwrap();
        let port = server.sockets()[0].as_socket().unwrap().port();
        let lp2 = lp.clone();
        let (plain, client) = run_within(lp, WAIT, async move {
            lp2.create_connection(TlsRec::default, ("127.0.0.1", port), ConnectOptions::new()).await
        })
        .unwrap();
        plain.write(b"hello\n").unwrap();
        assert!(run_until(lp, WAIT, || client.borrow().data == b"hello\n"), "plain echo");
        plain.write(b"STARTTLS\n").unwrap();
        assert!(run_until(lp, WAIT, || client.borrow().data == b"hello\nGO\n"));
        let (old, rec) = (plain.clone(), client.clone());
        let options = StartTlsOptions::new().server_hostname("localhost");
        let upgrade = lp.start_tls(&old, rec, pki().client(), options);
        let refused = old.write(b"around the layer");
        assert!(matches!(&refused, Err(Error::Runtime { message: m, .. }) if m.contains("start_tls")), "{refused:?}");
        assert!(old.is_closing() && !old.is_reading());
        let tls = run_within(lp, WAIT, upgrade).expect("the upgrade");
        assert!(tls.get_extra_info("cipher").is_some());
        assert!(!tls.is_closing());
        tls.write(b"secret\n").unwrap();
        assert!(run_until(lp, WAIT, || client.borrow().data.ends_with(b"secret\n")), "TLS echo");
        assert_eq!(client.borrow().data, b"hello\nGO\nsecret\n");
        assert_eq!(client.borrow().events.iter().filter(|e| **e == Ev::Made).count(), 1, "no second connection_made");
        tls.close();
        assert!(run_until(lp, WAIT, || client.borrow().is_lost() && server.connection_count() == 0));
        assert_eq!(client.borrow().events.last(), Some(&Ev::Lost(None)), "{:?}", client.borrow().lost_error);
        assert_eq!(client.borrow().lost_count(), 1);
        let seen = seen.borrow();
        assert_eq!(seen.plain, b"hello\nSTARTTLS\n", "the plain protocol got the plain bytes");
        assert_eq!(seen.secret, b"secret\n", "and TLS the rest");
        assert_eq!(seen.events, vec![Ev::Made, Ev::Lost(None)], "made once, lost once");
        // Stale handles: every call is refused or does nothing.
        plain.close();
        plain.abort();
        assert!(plain.write(b"x").is_err());
        assert!(plain.set_write_buffer_limits(Some(10), None).is_err());
        close_server(lp, server);
    }

    /// An upgrade the server's certificate refuses: `start_tls` fails naming the reason, and
    /// the protocol, which had the connection, gets `connection_lost` exactly once, with it.
    fn refused_upgrade_loses_the_connection_once(lp) {
        let (server, port, _served) = tls_server(lp, false, ServerOptions::default());
        // A TCP connection to the TLS server, upgraded from plain.
        let lp2 = lp.clone();
        let (plain, client) = run_within(lp, WAIT, async move {
            lp2.create_connection(TlsRec::default, ("127.0.0.1", port), ConnectOptions::new()).await
        })
        .unwrap();
        let options = StartTlsOptions::new().server_hostname("wrong.example");
        let upgrade = lp.start_tls(&plain, client.clone(), pki().client(), options);
        let error = run_within(lp, WAIT, upgrade).expect_err("a wrong name");
        assert_eq!(error.tls_kind(), Some(TlsErrorKind::HostnameMismatch), "{error}");
        assert!(run_until(lp, WAIT, || client.borrow().is_lost()));
        let client = client.borrow();
        assert_eq!(client.lost_count(), 1, "{:?}", client.events);
        assert_eq!(client.lost_error.as_ref().and_then(Error::tls_kind), Some(TlsErrorKind::HostnameMismatch));
        close_server(lp, server);
    }

    /// Upgrades that cannot start: a TLS transport, a closing one, a client without a name,
    /// a config of the wrong side.
    fn refused_upgrades(lp) {
        let (server, port, _served) = tls_server(lp, false, ServerOptions::default());
        let (tls, rec) = tls_connect(lp, port, client_options()).unwrap();
        let again = lp.start_tls(&tls, rec.clone(), pki().client(), StartTlsOptions::new().server_hostname("localhost"));
        let again = run_within(lp, WAIT, again).err();
        assert!(matches!(&again, Some(Error::Runtime { message: m, .. }) if m.contains("already speaks TLS")), "{again:?}");
        let lp2 = lp.clone();
        let (plain, rec) = run_within(lp, WAIT, async move {
            lp2.create_connection(TlsRec::default, ("127.0.0.1", port), ConnectOptions::new()).await
        })
        .unwrap();
        let nameless = run_within(lp, WAIT, lp.start_tls(&plain, rec.clone(), pki().client(), StartTlsOptions::new())).err();
        assert!(matches!(&nameless, Some(Error::InvalidArgument { message: m, .. }) if m.contains("server_hostname")), "{nameless:?}");
        let wrong_side = StartTlsOptions::new().server_side(true);
        let wrong_side = run_within(lp, WAIT, lp.start_tls(&plain, rec.clone(), pki().client(), wrong_side)).err();
        assert!(matches!(&wrong_side, Some(Error::InvalidArgument { message: m, .. }) if m.contains("server config")), "{wrong_side:?}");
        plain.close();
        let closing = StartTlsOptions::new().server_hostname("localhost");
        let closing = run_within(lp, WAIT, lp.start_tls(&plain, rec, pki().client(), closing)).err();
        assert!(matches!(&closing, Some(Error::Runtime { message: m, .. }) if m.contains("closing")), "{closing:?}");
        tls.abort();
        close_server(lp, server);
    }
}
