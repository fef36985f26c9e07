//! TLS against real OpenSSL peers, TLS 1.2 and 1.3: a ringloop client against
//! `openssl s_server`, and `openssl s_client` against a ringloop server; data both ways and a
//! clean close. Certificates are made at test time (`rcgen`). Skipped, with a printed
//! `SKIPPED` line, only where `openssl` is not installed (`.ci/run` installs it). On every
//! backend built in.

use ringloop::{ExtraInfo, ServerOptions};
use uring_tests::tls::{
    client_options, close_server, have_openssl, pki, s_server, tls_connect, tls_server,
    OpensslPeer, WAIT,
};
use uring_tests::{backend_tests, run_until, Ev, TempDir};

/// A ringloop client against `openssl s_server -rev` speaking `version` (`-tls1_3`): a line
/// comes back reversed, the session is that version, and `close` ends cleanly.
fn client_against_s_server(lp: &ringloop::EventLoop, test: &str, version: &str, expect: &str) {
    if !have_openssl(test) {
        return;
    }
    let dir = TempDir::for_test(lp, test);
    let (server, port) = s_server(&dir.0, &pki().good, &[version]);
    let options = client_options().server_hostname("localhost").ssl_shutdown_timeout(10.0);
    let (transport, client) = tls_connect(lp, port, options).unwrap();
    let Some(ExtraInfo::Cipher { version: got, .. }) = transport.get_extra_info("cipher") else {
        panic!("no cipher")
    };
    assert_eq!(got, expect);
    transport.write(b"hello from ringloop\n").unwrap();
    assert!(run_until(lp, WAIT, || client.borrow().data.ends_with(b"\n")), "{:?}", server.drain());
    assert_eq!(client.borrow().data, b"poolgnir morf olleh\n");
    transport.close();
    assert!(run_until(lp, WAIT, || client.borrow().is_lost()), "{:?}", server.drain());
    let client = client.borrow();
    assert_eq!(client.events.last(), Some(&Ev::Lost(None)), "{:?}", client.lost_error);
    assert_eq!(client.lost_count(), 1);
}

/// `openssl s_client` speaking `version` against a ringloop echo server: its line comes
/// back, and its close (at the end of its input) reaches the server as `close_notify`.
fn s_client_against_server(lp: &ringloop::EventLoop, test: &str, version: &str, expect: &str) {
    if !have_openssl(test) {
        return;
    }
    let dir = TempDir::for_test(lp, test);
    let (ca, _, _) = pki().write_files(&dir.0, &pki().good);
    let (server, port, served) = tls_server(lp, true, ServerOptions::default());
    let connect = format!("127.0.0.1:{port}");
    let ca = ca.to_str().unwrap().to_owned();
    let args = ["s_client", "-connect", &connect, "-CAfile", &ca, "-servername", "localhost"];
    let mut client =
        OpensslPeer::spawn(&[&args[..], &["-brief", "-verify_return_error", version]].concat());
    client.send(b"hello from openssl\n");
    let lines = std::cell::RefCell::new(Vec::new());
    let protocol = format!("Protocol version: {expect}");
    // The echo comes on s_client's stdout, the protocol line on its stderr: wait for both.
    let both = run_until(lp, WAIT, || {
        lines.borrow_mut().extend(client.drain());
        let lines = lines.borrow();
        lines.iter().any(|l| l == "hello from openssl")
            && lines.iter().any(|l| l.contains(&protocol))
    });
    let lines = lines.into_inner();
    assert!(both, "the echo and {protocol:?}: {lines:?}");
    drop(client.child.stdin.take()); // s_client closes at the end of its input
    let server_side = served.borrow()[0].clone();
    assert!(run_until(lp, WAIT, || server_side.borrow().is_lost()), "{:?}", client.drain());
    let status = client.finish(20).expect("s_client exits");
    assert!(status.success(), "{status:?} {:?}", client.drain());
    let rec = server_side.borrow();
    assert_eq!(rec.data, b"hello from openssl\n");
    assert_eq!(rec.events.first(), Some(&Ev::Made));
    assert!(rec.events.contains(&Ev::Eof), "close_notify: {:?}", rec.events);
    assert_eq!(rec.events.last(), Some(&Ev::Lost(None)), "{:?}", rec.lost_error);
    drop(rec);
    close_server(lp, server);
}

backend_tests! {
    fn client_against_openssl_s_server_tls13(lp) {
        client_against_s_server(lp, "client_against_openssl_s_server_tls13", "-tls1_3", "TLSv1.3");
    }

    fn client_against_openssl_s_server_tls12(lp) {
        client_against_s_server(lp, "client_against_openssl_s_server_tls12", "-tls1_2", "TLSv1.2");
    }

    fn openssl_s_client_against_server_tls13(lp) {
        s_client_against_server(lp, "openssl_s_client_against_server_tls13", "-tls1_3", "TLSv1.3");
    }

    fn openssl_s_client_against_server_tls12(lp) {
        s_client_against_server(lp, "openssl_s_client_against_server_tls12", "-tls1_2", "TLSv1.2");
    }
}
