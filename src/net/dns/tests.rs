//! Unit tests of name resolution: the numeric fast path against libc, and the errors.

use super::*;
use crate::error::DnsErrorKind;

/// The fast path equals libc wherever it answers, over a grid of hosts, ports and hints;
/// and it answers the common cases.
#[test]
fn fast_path_equals_libc() {
    let hosts = [
        "127.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "::1",
        "::",
        "::ffff:127.0.0.1",
        "::1.2.3.4",
        "1:2:3:4:5:6:7::",
        "1::2:3:4:5:6:7",
        "fe80::1%1",
        "fe80::1%lo",
        "fe80::1%01",
        "fe80::1%",
        "fe80::1%4294967295",
        "fe80::1%4294967296",
        "ff02::1%lo",
        "ff01::1%lo",
        "2001:db8::1%1",
        "2001:db8::1%lo",
        "FE80::A%1",
        "010.0.0.1",
        "127.1",
        "0x7f000001",
        "1.2.3.4.",
        " 127.0.0.1",
        "127.0.0.1%1",
        "[::1]",
        "localhost",
    ];
    let services = [
        Service::Any,
        Service::Port(0),
        Service::Port(80),
        Service::Port(65535),
        Service::Name("80"),
        Service::Name("080"),
        Service::Name("00080"),
        Service::Name("65536"),
        Service::Name(""),
        Service::Name("+80"),
        Service::Name("http"),
    ];
    let (tcp, udp) = (libc::IPPROTO_TCP, libc::IPPROTO_UDP);
    let kinds = [
        (0, 0),
        (libc::SOCK_STREAM, 0),
        (libc::SOCK_DGRAM, 0),
        (libc::SOCK_RAW, 0),
        (libc::SOCK_SEQPACKET, 0),
        (0, tcp),
        (0, udp),
        (0, 1),
        (libc::SOCK_STREAM, udp),
        (libc::SOCK_DGRAM, udp),
        (libc::SOCK_RAW, 1),
        (libc::SOCK_RAW, tcp),
    ];
    let flag_sets = [
        0,
        libc::AI_PASSIVE,
        libc::AI_CANONNAME,
        libc::AI_NUMERICHOST,
        libc::AI_NUMERICSERV,
        libc::AI_V4MAPPED,
        libc::AI_V4MAPPED | libc::AI_ALL,
        libc::AI_CANONNAME | libc::AI_NUMERICHOST | libc::AI_PASSIVE,
        libc::AI_ADDRCONFIG,
    ];
    let families = [libc::AF_UNSPEC, libc::AF_INET, libc::AF_INET6];
    let mut answered = 0;
    for host in hosts {
        for service in services {
            for (socktype, protocol) in kinds {
                for flags in flag_sets {
                    for family in families {
                        let hints = AddrInfoHints { family, socktype, protocol, flags };
                        let Some(fast) = numeric_lookup(host, service, &hints) else {
                            continue;
                        };
                        answered += 1;
                        let text = service.to_text();
                        let libc = blocking_getaddrinfo(Some(host), text.as_deref(), &hints);
                        let libc = libc.unwrap_or_else(|err| {
                            panic!("{host:?} {service} {hints:?}: libc failed: {err}")
                        });
                        assert_eq!(fast, libc, "{host:?} {service} {hints:?}");
                    }
                }
            }
        }
    }
    assert!(answered > 1000, "the fast path answered only {answered} cases");
    let hints = AddrInfoHints::default();
    for host in ["127.0.0.1", "::1", "fe80::1%lo", "fe80::1%2"] {
        assert!(numeric_lookup(host, Service::Port(80), &hints).is_some(), "{host}");
    }
}

/// Addresses survive the trip into C and back, port and scope id included: `getnameinfo`
/// turns them into numeric text, libc's `getaddrinfo` reads that text back into the same address.
#[test]
fn addresses_survive_getnameinfo_and_getaddrinfo() {
    let v6 = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 443, 0, 1));
    let numeric = libc::NI_NUMERICHOST | libc::NI_NUMERICSERV;
    let hints = AddrInfoHints::new().socktype(libc::SOCK_STREAM);
    for addr in ["10.1.2.3:65535".parse().unwrap(), v6] {
        let (host, port) = blocking_getnameinfo(addr, numeric).unwrap();
        let found = blocking_getaddrinfo(Some(&host), Some(&port), &hints).unwrap();
        assert_eq!(found.iter().map(|ai| ai.addr).collect::<Vec<_>>(), [addr], "{host} {port}");
    }
}

/// Asserts `result` failed with the `Error::Dns` of `code`, its message `question` and the
/// text glibc's `gai_strerror` gives for `code` (called directly).
fn assert_gai_error<T: fmt::Debug>(result: Result<T>, code: i32, question: &str) {
    let err = result.unwrap_err();
    let Error::Dns { kind, code: found, message } = err else { panic!("{err:?}") };
    assert_eq!((kind, found), (DnsErrorKind::from_code(code), code), "{message}");
    // SAFETY: `gai_strerror` returns a pointer to a static NUL-terminated string.
    let text = unsafe { std::ffi::CStr::from_ptr(libc::gai_strerror(code)) };
    assert_eq!(message, format!("{question}: {}", text.to_string_lossy()));
}

/// EAI codes become `Error::Dns` with their kind, the question and libc's text.
#[test]
fn gai_errors_name_the_question() {
    let service = Some("no-such-service-x");
    let err =
        blocking_getaddrinfo(Some("127.0.0.1"), service, &AddrInfoHints::default()).unwrap_err();
    let Error::Dns { kind, code, ref message } = err else { panic!("{err:?}") };
    assert_eq!((kind, code), (DnsErrorKind::Service, libc::EAI_SERVICE));
    assert!(message.starts_with("getaddrinfo(127.0.0.1:no-such-service-x): "), "{message}");
    assert!(!message.contains("Errno"), "{message}");
    let question = "getaddrinfo(127.0.0.1:no-such-service-x)";
    assert_gai_error(Err::<(), _>(err), libc::EAI_SERVICE, question);
    // Neither host nor port: libc's EAI_NONAME.
    let neither = blocking_getaddrinfo(None, None, &AddrInfoHints::default());
    assert_gai_error(neither, libc::EAI_NONAME, "getaddrinfo(no host, any port)");
    // getnameinfo with an unknown flag: glibc's EAI_BADFLAGS, before any lookup.
    let bad_flags = blocking_getnameinfo("127.0.0.1:80".parse().unwrap(), 0x4000_0000);
    assert_gai_error(bad_flags, libc::EAI_BADFLAGS, "getnameinfo(127.0.0.1:80, flags 0x40000000)");
    for (host, port) in [(Some("a\0b"), None), (None, Some("a\0b"))] {
        let err = blocking_getaddrinfo(host, port, &AddrInfoHints::default()).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    }
}

/// Lookups are named in Rust's address idiom, not as Python tuples or `Some(..)`.
#[test]
fn lookups_are_described_in_rusts_idiom() {
    assert_eq!(describe_lookup(Some("example.com"), 80), "example.com:80");
    assert_eq!(describe_lookup(Some("::1"), "http"), "[::1]:http");
    assert_eq!(describe_lookup(Some("example.com"), Service::Any), "example.com");
    assert_eq!(describe_lookup(None, 8080), "port 8080");
}
