//! Unit tests of create_connection's internals: the connect race and how errors combine.

use std::future::Future;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::time::Duration;

use super::{combine_errors, connect_attempt, interleave_by_family, AttemptError, ConnectOptions};
use crate::error::{Error, Result, RuntimeKind};
use crate::net::dns::AddrInfo;
use crate::EventLoop;

fn loops() -> Vec<EventLoop> {
    crate::test_support::loops("connect")
}

fn info(addr: SocketAddr) -> AddrInfo {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let (socktype, protocol) = (libc::SOCK_STREAM, libc::IPPROTO_TCP);
    AddrInfo { family, socktype, protocol, canonname: None, addr }
}

/// `connect_any(addrs)` run to completion, with a 10 s watchdog.
fn connect_any(lp: &EventLoop, addrs: &[SocketAddr], options: ConnectOptions) -> Result<OwnedFd> {
    let infos = addrs.iter().copied().map(info).collect();
    let stopper = lp.clone();
    let watchdog = lp.call_later(10.0, move || stopper.stop()).unwrap();
    let lp2 = lp.clone();
    let out = lp.run_until_complete(async move { lp2.connect_any(infos, None, &options).await });
    watchdog.cancel();
    out.expect("the watchdog fired")
}

/// An address on loopback `ip` with nothing listening.
fn closed_port(ip: &str) -> SocketAddr {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
}

/// A listener whose backlog is full (a connect to it hangs), with what fills it.
fn full_listener() -> Option<(TcpListener, Vec<TcpStream>)> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // SAFETY: a valid listening socket; listen(2) only changes its backlog.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
    let addr = listener.local_addr().unwrap();
    let mut filling = Vec::new();
    for _ in 0..16 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => filling.push(stream),
            Err(_) => return Some((listener, filling)),
        }
    }
    None
}

fn settle(lp: &EventLoop) {
    for _ in 0..50 {
        if lp.ops_in_flight() == 0 {
            return;
        }
        let stopper = lp.clone();
        lp.call_later(0.005, move || stopper.stop()).unwrap();
        lp.run_forever().unwrap();
    }
    panic!("ops left in flight: {}", lp.ops_in_flight());
}

#[test]
fn every_address_failing_gives_one_error_or_a_group() {
    for lp in loops() {
        let (a, b) = (closed_port("127.0.0.1"), closed_port("127.0.0.1"));
        let err = connect_any(&lp, &[a, b], ConnectOptions::new()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("create_connection: every address failed: Connect call failed"),
            "{text}"
        );
        assert!(text.contains(&a.to_string()) && text.contains(&b.to_string()), "{text}");
        let err = connect_any(&lp, &[a, a], ConnectOptions::new()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED), "identical errors collapse");
        let err = connect_any(&lp, &[a, b], ConnectOptions::new().all_errors(true)).unwrap_err();
        assert!(matches!(&err, Error::Multiple(errors) if errors.len() == 2), "{err:?}");
        let delay = ConnectOptions::new().happy_eyeballs_delay(0.05);
        let err = connect_any(&lp, &[a, b], delay).unwrap_err();
        assert!(err.to_string().contains("every address failed"), "{err}");
        settle(&lp);
        lp.close().unwrap();
    }
}

#[test]
fn happy_eyeballs_moves_on_from_a_hanging_address() {
    for lp in loops() {
        let Some((hanging, filling)) = full_listener() else {
            let _ = writeln!(std::io::stderr(), "SKIPPED happy eyeballs: no connect hangs");
            return;
        };
        let working = TcpListener::bind("127.0.0.1:0").unwrap();
        let addrs = [hanging.local_addr().unwrap(), working.local_addr().unwrap()];
        let started = lp.time();
        let options = ConnectOptions::new().happy_eyeballs_delay(0.05);
        let fd = connect_any(&lp, &addrs, options).unwrap();
        assert!(lp.time() - started < 1.0, "waited for the hanging attempt");
        let peer = socket2::SockRef::from(&fd).peer_addr().unwrap().as_socket();
        assert_eq!(peer, Some(addrs[1]));
        // The losing connect is cancelled and its socket closed: once the backlog frees up,
        // no connection from it ever arrives (an open socket would, on its SYN retransmit
        // after ~1 s).
        settle(&lp);
        hanging.set_nonblocking(true).unwrap();
        let mut accepted = 0;
        let deadline = std::time::Instant::now() + Duration::from_millis(1500);
        while std::time::Instant::now() < deadline {
            if hanging.accept().is_ok() {
                accepted += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(accepted, filling.len(), "the losing connect went on");
        lp.close().unwrap();
    }
}

#[test]
fn interleave_alternates_families_starting_with_the_first() {
    let v6v6v4v4 = vec![(6, 'a'), (6, 'b'), (4, 'c'), (4, 'd')];
    let once = interleave_by_family(v6v6v4v4.clone(), 1, |x| x.0);
    assert_eq!(once, [(6, 'a'), (4, 'c'), (6, 'b'), (4, 'd')]);
    let twice = interleave_by_family(v6v6v4v4.clone(), 2, |x| x.0);
    assert_eq!(twice, [(6, 'a'), (6, 'b'), (4, 'c'), (4, 'd')]);
    let uneven = interleave_by_family(vec![(4, 'a'), (6, 'b'), (6, 'c'), (6, 'd')], 1, |x| x.0);
    assert_eq!(uneven, [(4, 'a'), (6, 'b'), (6, 'c'), (6, 'd')]);
    let many = interleave_by_family(vec![(4, 'a'), (4, 'b')], 5, |x| x.0);
    assert_eq!(many, [(4, 'a'), (4, 'b')]);
    assert!(interleave_by_family(Vec::<(i32, char)>::new(), 1, |x| x.0).is_empty());
}

/// Item 71 through `connect_any`: addresses are interleaved by family when Happy Eyeballs is
/// on (interleave defaults to 1), in libc's order otherwise or with `interleave(0)`; the
/// attempts' errors come in the order they were tried.
#[test]
fn happy_eyeballs_interleaves_families_by_default() {
    if TcpListener::bind("[::1]:0").is_err() {
        let _ = writeln!(std::io::stderr(), "SKIPPED interleave: no IPv6 loopback");
        return;
    }
    for lp in loops() {
        let (v4, v6) = (|| closed_port("127.0.0.1"), || closed_port("::1"));
        let addrs = [v6(), v6(), v4(), v4()];
        let tried = |options: ConnectOptions| -> Vec<String> {
            let err = connect_any(&lp, &addrs, options.all_errors(true)).unwrap_err();
            let Error::Multiple(errors) = err else { panic!("not a group: {err:?}") };
            errors.iter().map(ToString::to_string).collect()
        };
        let named = |order: [usize; 4]| -> Vec<String> {
            order.iter().map(|&i| format!("Connect call failed {}", addrs[i])).collect()
        };
        let check = |got: Vec<String>, want: Vec<String>| {
            assert_eq!(got.len(), want.len(), "{got:?}");
            for (g, w) in got.iter().zip(&want) {
                assert!(g.starts_with(&format!("{w}:")), "{got:?} is not in the order {want:?}");
            }
        };
        check(tried(ConnectOptions::new()), named([0, 1, 2, 3]));
        check(tried(ConnectOptions::new().happy_eyeballs_delay(0.05)), named([0, 2, 1, 3]));
        let off = ConnectOptions::new().happy_eyeballs_delay(0.05).interleave(0);
        check(tried(off), named([0, 1, 2, 3]));
        check(tried(ConnectOptions::new().interleave(1)), named([0, 2, 1, 3]));
        settle(&lp);
        lp.close().unwrap();
    }
}

fn refused(addr: &str) -> Error {
    Error::io(format!("Connect call failed {addr}"), std::io::Error::from_raw_os_error(111))
}

#[test]
fn errors_combine_as_asyncio_does() {
    let one = combine_errors(vec![refused("a")], false);
    assert_eq!(one.raw_os_error(), Some(111));
    let same = combine_errors(vec![refused("a"), refused("a")], false);
    assert_eq!(same.raw_os_error(), Some(111));
    let two = combine_errors(vec![refused("a"), refused("b")], false);
    let text = two.to_string();
    assert!(text.contains("every address failed: Connect call failed a"), "{text}");
    assert!(two.io_error().is_some() && two.raw_os_error().is_none());
    let all = combine_errors(vec![refused("a")], true);
    assert!(matches!(&all, Error::Multiple(errors) if errors.len() == 1), "{all:?}");
    let none = combine_errors(vec![], true);
    assert!(matches!(&none, Error::Timeout(m) if m == "create_connection failed"));
}

/// One attempt of a [`race`], boxed so that real and scripted attempts mix.
type Attempting = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Attempted>>>>;
/// What an attempt gives.
type Attempted = std::result::Result<OwnedFd, AttemptError>;

/// A real attempt: `connect_attempt` to `addr`.
fn real(lp: &EventLoop, addr: SocketAddr) -> Attempting {
    let lp = lp.clone();
    Box::new(move || Box::pin(connect_attempt(lp, info(addr), None)))
}

/// An attempt that fails with `error` (a non-OS one) after `secs`.
fn failing(lp: &EventLoop, secs: f64, error: Error) -> Attempting {
    let lp = lp.clone();
    Box::new(move || {
        Box::pin(async move {
            crate::toolbox::sleep_on(&lp, secs).unwrap().await.unwrap();
            Err(AttemptError::from(error))
        })
    })
}

/// An attempt whose code panics after `secs` (as user code inside an attempt would).
fn panicking(lp: &EventLoop, secs: f64) -> Attempting {
    let lp = lp.clone();
    Box::new(move || {
        Box::pin(async move {
            crate::toolbox::sleep_on(&lp, secs).unwrap().await.unwrap();
            std::panic::resume_unwind(Box::new("boom in an attempt"))
        })
    })
}

/// `race_attempts(attempts)` run to completion in a task, with a 10 s watchdog.
fn race(
    lp: &EventLoop,
    attempts: Vec<Attempting>,
    delay: Option<f64>,
    all_errors: bool,
) -> Result<OwnedFd> {
    let stopper = lp.clone();
    let watchdog = lp.call_later(10.0, move || stopper.stop()).unwrap();
    let lp2 = lp.clone();
    let out =
        lp.run_until_complete(async move { lp2.race_attempts(attempts, delay, all_errors).await });
    watchdog.cancel();
    out.unwrap_or_else(Err)
}

/// BEHAVIOURS 64 in Rust terms. asyncio: a non-`OSError` raised by a connect attempt
/// propagates unwrapped, even with `all_errors=True`, and an `OSError` from `sock.close()` in
/// cleanup does not hide it. Here: an attempt error that is not [`Error::Io`] (asyncio's
/// `OSError`) — e.g. `Error::Closed` from submitting the connect on a loop being torn down,
/// or any other variant — ends the race at once and is returned as it is, never inside
/// `Error::Multiple` or "every address failed"; the attempts still running are cancelled and
/// their sockets closed (no op left in flight), and no further address is tried. Closing a
/// socket in cleanup is a drop, whose `close(2)` result is ignored, so it cannot replace the
/// error. A panic in code inside an attempt unwinds through the race (dropping, and so
/// closing, every attempt) and ends the task as `Error::Panic` with its message, unwrapped.
#[test]
fn a_non_os_error_from_an_attempt_propagates_unwrapped() {
    for lp in loops() {
        // One after another: the fatal error stops create_connection before the next address.
        let working = TcpListener::bind("127.0.0.1:0").unwrap();
        working.set_nonblocking(true).unwrap();
        let attempts =
            vec![failing(&lp, 0.0, Error::Closed), real(&lp, working.local_addr().unwrap())];
        let err = race(&lp, attempts, None, true).unwrap_err();
        assert!(matches!(err, Error::Closed), "{err:?}");
        let not_tried = working.accept().map(|_| ()).unwrap_err().kind();
        assert_eq!(not_tried, std::io::ErrorKind::WouldBlock, "the next address was tried");

        // Raced, with an OS error recorded before it: still unwrapped, even with all_errors.
        let refused = closed_port("127.0.0.1");
        let Some((hanging, _filling)) = full_listener() else {
            let _ = writeln!(std::io::stderr(), "SKIPPED non-OS error race: no connect hangs");
            return;
        };
        let attempts = vec![
            real(&lp, refused),
            real(&lp, hanging.local_addr().unwrap()),
            failing(&lp, 0.1, Error::runtime(RuntimeKind::Other, "not an OS error")),
        ];
        let err = race(&lp, attempts, Some(0.02), true).unwrap_err();
        assert!(
            matches!(&err, Error::Runtime { message: m, .. } if m == "not an OS error"),
            "{err:?}"
        );
        settle(&lp); // the hanging connect was cancelled, its socket closed

        // A panic inside an attempt: the task ends with it, the other attempt is cancelled.
        let attempts = vec![real(&lp, hanging.local_addr().unwrap()), panicking(&lp, 0.05)];
        let err = race(&lp, attempts, Some(0.01), true).unwrap_err();
        assert!(matches!(&err, Error::Panic(m) if m.contains("boom in an attempt")), "{err:?}");
        settle(&lp);
        lp.close().unwrap();
    }
}

/// OS errors alone still combine as before (item 63) through `race_attempts`.
#[test]
fn os_errors_from_attempts_still_combine() {
    for lp in loops() {
        let (a, b) = (closed_port("127.0.0.1"), closed_port("127.0.0.1"));
        let err = race(&lp, vec![real(&lp, a), real(&lp, b)], None, true).unwrap_err();
        assert!(matches!(&err, Error::Multiple(errors) if errors.len() == 2), "{err:?}");
        settle(&lp);
        lp.close().unwrap();
    }
}
