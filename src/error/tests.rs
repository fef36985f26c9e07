//! Unit tests of the error type: messages, kinds, `source()` and the `io::Error` conversion.

use std::io;

use super::*;

/// The text of `err` and of every `source()` below it, as an error-chain printer shows them.
fn chain(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut texts = vec![err.to_string()];
    let mut next = err.source();
    while let Some(cause) = next {
        texts.push(cause.to_string());
        next = cause.source();
    }
    texts
}

#[test]
fn io_display_says_what_and_why_and_source_does_not_repeat_it() {
    let err = Error::io("connect to /run/app.sock", io::Error::from_raw_os_error(libc::ENOENT));
    assert_eq!(
        chain(&err),
        ["connect to /run/app.sock: No such file or directory (os error 2)"],
        "the OS error is printed once"
    );
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    assert_eq!(err.io_error().map(io::Error::kind), Some(io::ErrorKind::NotFound));
}

#[test]
fn custom_display_is_the_wrapped_error_and_its_chain_follows_once() {
    let inner = io::Error::other(Error::Timeout("the cause".into()));
    let err = Error::custom(inner);
    assert_eq!(chain(&err), ["the cause"], "{err:?}");
}

#[test]
fn kinds_are_matchable_and_messages_kept() {
    let err = Error::runtime(RuntimeKind::LoopRunning, "This event loop is already running");
    assert!(matches!(err, Error::Runtime { kind: RuntimeKind::LoopRunning, .. }));
    assert_eq!(err.runtime_kind(), Some(RuntimeKind::LoopRunning));
    assert_eq!(err.to_string(), "This event loop is already running");
    let err = Error::invalid_state(StateKind::NotDone, "Result is not set.");
    assert_eq!((err.state_kind(), err.runtime_kind()), (Some(StateKind::NotDone), None));
    let err = Error::invalid_argument(ArgumentKind::NotANumber, "sleep: NaN");
    assert_eq!(err.argument_kind(), Some(ArgumentKind::NotANumber));
    assert_eq!(err.to_string(), "sleep: NaN");
    let err =
        Error::dns(libc::EAI_NONAME, "getaddrinfo(nowhere.invalid:80): Name or service not known");
    assert_eq!(err.dns_kind(), Some(DnsErrorKind::NoName));
    assert!(matches!(err, Error::Dns { code: libc::EAI_NONAME, .. }));
}

#[test]
fn dns_kinds_follow_the_eai_codes() {
    for (code, kind) in [
        (libc::EAI_NONAME, DnsErrorKind::NoName),
        (libc::EAI_NODATA, DnsErrorKind::NoName),
        (libc::EAI_AGAIN, DnsErrorKind::TemporaryFailure),
        (libc::EAI_FAIL, DnsErrorKind::Fail),
        (libc::EAI_FAMILY, DnsErrorKind::Family),
        (libc::EAI_SERVICE, DnsErrorKind::Service),
        (libc::EAI_MEMORY, DnsErrorKind::Memory),
        (libc::EAI_BADFLAGS, DnsErrorKind::Other),
    ] {
        assert_eq!(DnsErrorKind::from_code(code), kind, "code {code}");
    }
}

#[test]
fn into_io_error_keeps_the_kind_and_the_text() {
    // No context of its own: the very OS error comes back.
    let plain = io::Error::from(Error::from(io::Error::from_raw_os_error(libc::ECONNRESET)));
    assert_eq!(plain.raw_os_error(), Some(libc::ECONNRESET));
    // With a context: same kind, the text keeps the context, the errno is one downcast away.
    let err = Error::io("send to 127.0.0.1:80", io::Error::from_raw_os_error(libc::EPIPE));
    let converted = io::Error::from(err);
    assert_eq!(converted.kind(), io::ErrorKind::BrokenPipe);
    assert_eq!(converted.to_string(), "send to 127.0.0.1:80: Broken pipe (os error 32)");
    let inner = converted.get_ref().and_then(|e| e.downcast_ref::<Error>());
    assert_eq!(inner.and_then(Error::raw_os_error), Some(libc::EPIPE));
}

#[test]
fn into_io_error_maps_each_variant_to_a_kind() {
    let not_a_number = Error::invalid_argument(ArgumentKind::NotANumber, "NaN");
    let truncated = Error::tls(TlsErrorKind::Truncated, "no close_notify");
    let no_name = Error::dns(libc::EAI_NONAME, "getaddrinfo(x.invalid): Name or service not known");
    for (err, kind) in [
        (Error::Timeout("slow".into()), io::ErrorKind::TimedOut),
        (Error::Cancelled, io::ErrorKind::Other),
        (not_a_number, io::ErrorKind::InvalidInput),
        (Error::Closed, io::ErrorKind::NotConnected),
        (Error::Unsupported("no".into()), io::ErrorKind::Unsupported),
        (
            Error::IncompleteRead { partial: vec![1], expected: Some(2) },
            io::ErrorKind::UnexpectedEof,
        ),
        (truncated, io::ErrorKind::UnexpectedEof),
        (Error::tls(TlsErrorKind::PeerAlert, "alert"), io::ErrorKind::InvalidData),
        (no_name, io::ErrorKind::NotFound),
        (Error::runtime(RuntimeKind::Other, "x"), io::ErrorKind::Other),
    ] {
        let text = err.to_string();
        let converted = io::Error::from(err);
        assert_eq!((converted.kind(), converted.to_string()), (kind, text));
    }
}
