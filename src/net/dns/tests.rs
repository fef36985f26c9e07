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

/// Addresses survive the trip through C socket addresses, flow info and scope included.
#[test]
fn sockaddr_round_trip() {
    let v6 = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 443, 7, 3));
    for addr in ["10.1.2.3:65535".parse().unwrap(), v6] {
        let (storage, len) = to_sockaddr(&addr);
        // SAFETY: `storage` holds `len` bytes of a socket address.
        let back = unsafe { from_sockaddr(ptr::addr_of!(storage).cast(), len) };
        assert_eq!(back, Some(addr));
    }
}

/// EAI codes become `Error::Dns` with their kind, the question and libc's text.
#[test]
fn gai_errors_name_the_question() {
    let err = blocking_getaddrinfo(
        Some("127.0.0.1"),
        Some("no-such-service-x"),
        &AddrInfoHints::default(),
    )
    .unwrap_err();
    let Error::Dns { kind, code, message } = err else { panic!("{err:?}") };
    assert_eq!((kind, code), (DnsErrorKind::Service, libc::EAI_SERVICE));
    assert!(message.starts_with("getaddrinfo(127.0.0.1:no-such-service-x): "), "{message}");
    assert!(!message.contains("Errno"), "{message}");
    let err = blocking_getaddrinfo(Some("a\0b"), None, &AddrInfoHints::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}

/// Lookups are named in Rust's address idiom, not as Python tuples or `Some(..)`.
#[test]
fn lookups_are_described_in_rusts_idiom() {
    assert_eq!(describe_lookup(Some("example.com"), 80), "example.com:80");
    assert_eq!(describe_lookup(Some("::1"), "http"), "[::1]:http");
    assert_eq!(describe_lookup(Some("example.com"), Service::Any), "example.com");
    assert_eq!(describe_lookup(None, 8080), "port 8080");
}
