//! `getaddrinfo` and `getnameinfo`: BEHAVIOURS section 8 (items 59, 60).
//!
//! Results are compared with libc's own `getaddrinfo` / `getnameinfo`, called directly.
//! No network is needed: only loopback, `/etc/hosts` and `/etc/services` are used; the one
//! unknown name is under the reserved `.invalid` TLD.
//!
//! Not applicable in Rust: hosts and ports as `bytes` (a `&str` is the only text type the API
//! takes); `family=-1` is tested as the `i32` it is.

use std::ffi::{CStr, CString};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::{Duration, Instant};
use std::{mem, ptr};

use ringloop::net::dns::{AddrInfo, AddrInfoHints, Service};
use ringloop::{DnsErrorKind, Error, EventLoop, Executor};
use uring_tests::{backend_tests, run_until};

/// libc's `getaddrinfo` called directly: the list, or the `EAI_*` code.
fn libc_getaddrinfo(
    host: Option<&str>,
    port: Option<&str>,
    hints: AddrInfoHints,
) -> Result<Vec<AddrInfo>, i32> {
    let host = host.map(|h| CString::new(h).unwrap());
    let port = port.map(|p| CString::new(p).unwrap());
    // SAFETY: all-zero `addrinfo` is valid (null pointers).
    let mut c_hints: libc::addrinfo = unsafe { mem::zeroed() };
    c_hints.ai_family = hints.family;
    c_hints.ai_socktype = hints.socktype;
    c_hints.ai_protocol = hints.protocol;
    c_hints.ai_flags = hints.flags;
    let mut list = ptr::null_mut();
    // SAFETY: NUL-terminated strings and valid hints that outlive the call.
    let code = unsafe {
        libc::getaddrinfo(
            host.as_ref().map_or(ptr::null(), |h| h.as_ptr()),
            port.as_ref().map_or(ptr::null(), |p| p.as_ptr()),
            &c_hints,
            &mut list,
        )
    };
    if code != 0 {
        return Err(code);
    }
    let mut found = Vec::new();
    let mut node = list;
    while !node.is_null() {
        // SAFETY: `node` is an entry of the list libc returned, not yet freed.
        let ai = unsafe { &*node };
        let addr = match ai.ai_family {
            libc::AF_INET => {
                // SAFETY: an AF_INET entry's `ai_addr` is a `sockaddr_in`.
                let sin = unsafe { &*(ai.ai_addr as *const libc::sockaddr_in) };
                let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
                SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)))
            }
            libc::AF_INET6 => {
                // SAFETY: an AF_INET6 entry's `ai_addr` is a `sockaddr_in6`.
                let s = unsafe { &*(ai.ai_addr as *const libc::sockaddr_in6) };
                let ip = Ipv6Addr::from(s.sin6_addr.s6_addr);
                let port = u16::from_be(s.sin6_port);
                SocketAddr::V6(SocketAddrV6::new(ip, port, s.sin6_flowinfo, s.sin6_scope_id))
            }
            other => panic!("unexpected family {other}"),
        };
        // SAFETY: a non-null `ai_canonname` is a NUL-terminated string of the list.
        let canonname = (!ai.ai_canonname.is_null())
            .then(|| unsafe { CStr::from_ptr(ai.ai_canonname) }.to_string_lossy().into_owned());
        let (family, socktype, protocol) = (ai.ai_family, ai.ai_socktype, ai.ai_protocol);
        found.push(AddrInfo { family, socktype, protocol, canonname, addr });
        node = ai.ai_next;
    }
    // SAFETY: `list` came from a successful `getaddrinfo` and is freed once.
    unsafe { libc::freeaddrinfo(list) };
    Ok(found)
}

/// libc's `getnameinfo` on an IPv4 address, called directly.
fn libc_getnameinfo(addr: SocketAddrV4, flags: i32) -> Result<(String, String), i32> {
    // SAFETY: all-zero `sockaddr_in` is valid.
    let mut sin: libc::sockaddr_in = unsafe { mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_port = addr.port().to_be();
    sin.sin_addr.s_addr = u32::from_ne_bytes(addr.ip().octets());
    let (mut host, mut serv) = ([0 as libc::c_char; 1025], [0 as libc::c_char; 32]);
    // SAFETY: a valid `sockaddr_in` and writable buffers of the lengths given.
    let code = unsafe {
        libc::getnameinfo(
            ptr::addr_of!(sin).cast(),
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            serv.as_mut_ptr(),
            serv.len() as libc::socklen_t,
            flags,
        )
    };
    if code != 0 {
        return Err(code);
    }
    // SAFETY: on success both buffers are NUL-terminated.
    let text =
        |b: &[libc::c_char]| unsafe { CStr::from_ptr(b.as_ptr()) }.to_string_lossy().into_owned();
    Ok((text(&host), text(&serv)))
}

/// `lp.getaddrinfo(host, port, hints)` run to completion, errors as their `EAI_*` code.
fn loop_getaddrinfo(
    lp: &EventLoop,
    host: Option<&str>,
    port: Option<&str>,
    hints: AddrInfoHints,
) -> Result<Vec<AddrInfo>, Error> {
    let (host, port) = (host.map(str::to_owned), port.map(str::to_owned));
    let event_loop = lp.clone();
    lp.run_until_complete(async move {
        event_loop.getaddrinfo(host.as_deref(), port.as_deref(), hints).await
    })
    .expect("run_until_complete")
}

/// The `EAI_*` code of an `Error::Dns`, panicking on anything else.
fn dns_code(err: &Error) -> i32 {
    match err {
        Error::Dns { code, .. } => *code,
        other => panic!("expected Error::Dns, got {other:?}"),
    }
}

/// Asserts the loop's answer equals libc's, results or error code.
fn assert_matches_libc(
    lp: &EventLoop,
    host: Option<&str>,
    port: Option<&str>,
    hints: AddrInfoHints,
) {
    let ours = loop_getaddrinfo(lp, host, port, hints).map_err(|e| dns_code(&e));
    let theirs = libc_getaddrinfo(host, port, hints);
    assert_eq!(ours, theirs, "getaddrinfo({host:?}, {port:?}, {hints:?})");
}

/// A host under the reserved `.invalid` TLD (RFC 6761): never resolves.
const INVALID_HOST: &str = "no-such-host.ringloop.invalid";

backend_tests! {
    /// Item 59: the same list as libc (or the same error) over the cases of uvloop's test_dns.
    fn getaddrinfo_matches_libc(lp) {
        let any = AddrInfoHints::new();
        let long_ones = "1".repeat(300);
        let long_hex = format!("0x{:0>298}", "7f000001");
        let cases: Vec<(Option<&str>, Option<&str>, AddrInfoHints)> = vec![
            (Some("localhost"), None, any),
            (Some("localhost"), Some("80"), any),
            (Some("127.0.0.1"), Some("80"), any),
            (Some("127.0.0.1"), None, any),
            (Some("::1"), Some("80"), any),
            (Some("fe80::1%lo"), Some("80"), any),
            (None, Some("80"), any.flags(libc::AI_PASSIVE)),
            (None, Some("80"), any),
            (None, None, any),
            (Some(""), Some("80"), any),
            (Some("127.0.0.1"), Some("8080"), any.socktype(libc::SOCK_STREAM)),
            (Some("localhost"), Some("http"), any),
            (Some("localhost"), Some("no-such-service-ringloop"), any),
            (Some("localhost"), Some("80"), any.family(libc::AF_INET)),
            (Some("localhost"), Some("80"), any.flags(libc::AI_CANONNAME)),
            (Some("127.0.0.1"), Some("80"), any.flags(libc::AI_CANONNAME)),
            (Some("localhost"), Some("80"), any.family(-1)),
            (Some("<broadcast>"), Some("80"), any),
            (Some(long_ones.as_str()), Some("80"), any),
            (Some(long_hex.as_str()), Some("80"), any),
            (Some("127.0.0.1"), Some("80"), any.family(libc::AF_INET6)),
            (Some("::1"), Some("80"), any.family(libc::AF_INET6).flags(libc::AI_V4MAPPED)),
            (Some("127.0.0.1"), Some("80"), any.family(libc::AF_INET6).flags(libc::AI_V4MAPPED)),
        ];
        for (host, port, hints) in cases {
            assert_matches_libc(lp, host, port, hints);
        }
    }

    /// Item 59: a service name is looked up, an unknown one is `Error::Dns` naming it.
    fn getaddrinfo_services(lp) {
        let found = loop_getaddrinfo(lp, Some("127.0.0.1"), Some("http"), AddrInfoHints::new()).unwrap();
        assert!(!found.is_empty() && found.iter().all(|ai| ai.addr.port() == 80), "{found:?}");
        let err = loop_getaddrinfo(lp, Some("127.0.0.1"), Some("no-such-service-ringloop"), AddrInfoHints::new())
            .unwrap_err();
        assert_eq!(dns_code(&err), libc::EAI_SERVICE);
        assert_eq!(err.dns_kind(), Some(DnsErrorKind::Service));
        assert!(err.to_string().starts_with("getaddrinfo(127.0.0.1:no-such-service-ringloop): "), "{err}");
        // A `u16` port is the same as its text.
        let event_loop = lp.clone();
        let by_number = lp
            .run_until_complete(async move {
                event_loop.getaddrinfo(Some("localhost"), 8080, AddrInfoHints::new()).await
            })
            .unwrap()
            .unwrap();
        assert_eq!(Ok(by_number), libc_getaddrinfo(Some("localhost"), Some("8080"), AddrInfoHints::new()));
        assert_eq!(Service::from(None::<&str>), Service::Any);
    }

    /// Item 59: an unknown host is `Error::Dns` with the host named, and fails fast.
    fn getaddrinfo_unknown_host(lp) {
        let started = Instant::now();
        let err = loop_getaddrinfo(lp, Some(INVALID_HOST), Some("80"), AddrInfoHints::new()).unwrap_err();
        let code = dns_code(&err);
        assert!([libc::EAI_NONAME, libc::EAI_AGAIN, libc::EAI_NODATA].contains(&code), "{err}");
        let kind = err.dns_kind().unwrap();
        assert!([DnsErrorKind::NoName, DnsErrorKind::TemporaryFailure].contains(&kind), "{err}");
        let text = err.to_string();
        assert!(text.starts_with(&format!("getaddrinfo({INVALID_HOST}:80): ")), "{text}");
        assert!(!text.contains("Errno"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    }

    /// Item 59: `getnameinfo` equals libc's, with and without the numeric flags.
    fn getnameinfo_matches_libc(lp) {
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80);
        for flags in [libc::NI_NUMERICHOST | libc::NI_NUMERICSERV, 0, libc::NI_DGRAM, libc::NI_NAMEREQD] {
            let event_loop = lp.clone();
            let ours = lp
                .run_until_complete(async move { event_loop.getnameinfo(addr.into(), flags).await })
                .unwrap()
                .map_err(|e| dns_code(&e));
            assert_eq!(ours, libc_getnameinfo(addr, flags), "flags {flags:#x}");
        }
        let event_loop = lp.clone();
        let numeric = lp.run_until_complete(async move {
            event_loop.getnameinfo(addr.into(), libc::NI_NUMERICHOST | libc::NI_NUMERICSERV).await
        });
        assert_eq!(numeric.unwrap().unwrap(), ("127.0.0.1".to_string(), "80".to_string()));
    }

    /// Item 60: a lookup still running on the executor when its task is cancelled and the loop
    /// closes: no hang, no panic, and the late result is dropped quietly.
    fn close_loop_with_getaddrinfo_in_flight(lp) {
        // One worker, kept busy, so the lookup is queued behind it when the loop closes.
        lp.set_default_executor(Executor::new(1).unwrap());
        let _busy = lp.run_in_executor(None, || std::thread::sleep(Duration::from_millis(200))).unwrap();
        let event_loop = lp.clone();
        let task = lp
            .create_task(async move {
                event_loop.getaddrinfo(Some("localhost"), Some("80"), AddrInfoHints::new()).await
            })
            .unwrap();
        run_until(lp, 0.05, || false); // the task starts and waits on the executor
        assert!(!task.done());
        task.cancel();
        assert!(run_until(lp, 1.0, || task.done()));
        assert!(task.cancelled());
        let started = Instant::now();
        lp.close().unwrap();
        assert!(started.elapsed() < Duration::from_secs(1), "close took {:?}", started.elapsed());
        std::thread::sleep(Duration::from_millis(400)); // the lookup finishes after the close
    }

    /// A numeric host needs no executor: after `shutdown_default_executor` it still resolves,
    /// while a name lookup gets the executor's error.
    fn numeric_host_skips_the_executor(lp) {
        let event_loop = lp.clone();
        lp.run_until_complete(async move { event_loop.shutdown_default_executor(None).await })
            .unwrap()
            .unwrap();
        for host in ["127.0.0.1", "::1"] {
            let found = loop_getaddrinfo(lp, Some(host), Some("80"), AddrInfoHints::new()).unwrap();
            assert_eq!(Ok(found), libc_getaddrinfo(Some(host), Some("80"), AddrInfoHints::new()));
        }
        let err = loop_getaddrinfo(lp, Some("localhost"), Some("80"), AddrInfoHints::new()).unwrap_err();
        assert!(matches!(&err, Error::Runtime { message: msg, .. } if msg == "Executor shutdown has been called"), "{err:?}");
    }
}
