//! rustls' errors as [`Error::Tls`]: a [`TlsErrorKind`] to match on and a message that names
//! the reason first ("certificate not trusted", "hostname mismatch", ...).

use rustls::CertificateError;

use crate::error::{Error, TlsErrorKind};

/// `err`, met while `doing` ("TLS handshake with 127.0.0.1:4433"), as an [`Error::Tls`].
pub(crate) fn tls_error(doing: &str, err: &rustls::Error) -> Error {
    let (kind, reason) = classify(err);
    Error::tls(kind, format!("{doing} failed: {reason}: {err}"))
}

/// What kind of failure `err` is, and its reason in words.
fn classify(err: &rustls::Error) -> (TlsErrorKind, &'static str) {
    use rustls::Error as E;
    match err {
        E::InvalidCertificate(cert) => classify_certificate(cert),
        E::AlertReceived(_) => (TlsErrorKind::PeerAlert, "the peer refused (fatal alert)"),
        E::NoCertificatesPresented => {
            (TlsErrorKind::BadCertificate, "the peer presented no certificate")
        }
        E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. }
        | E::PeerMisbehaved(_)
        | E::PeerSentOversizedRecord
        | E::DecryptError => (TlsErrorKind::Protocol, "the peer does not speak valid TLS"),
        E::PeerIncompatible(_) | E::NoApplicationProtocol => {
            (TlsErrorKind::Protocol, "no protocol in common with the peer")
        }
        _ => (TlsErrorKind::Other, "TLS error"),
    }
}

/// A certificate the verifier refused.
fn classify_certificate(err: &CertificateError) -> (TlsErrorKind, &'static str) {
    use CertificateError as C;
    match err {
        C::UnknownIssuer | C::BadSignature => {
            (TlsErrorKind::UntrustedCertificate, "certificate not trusted")
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            (TlsErrorKind::HostnameMismatch, "hostname mismatch")
        }
        C::Expired | C::ExpiredContext { .. } => {
            (TlsErrorKind::ExpiredCertificate, "certificate expired")
        }
        C::NotValidYet | C::NotValidYetContext { .. } => {
            (TlsErrorKind::ExpiredCertificate, "certificate not valid yet")
        }
        _ => (TlsErrorKind::BadCertificate, "certificate refused"),
    }
}

/// The error for a peer that closed the connection without `close_notify` after the
/// handshake.
pub(crate) fn truncated(peer: &str) -> Error {
    Error::tls(
        TlsErrorKind::Truncated,
        format!(
            "TLS connection with {peer} truncated: the peer closed it without close_notify, so \
             what it sent may have been cut short"
        ),
    )
}

/// The error for a peer that closed the connection during the handshake (asyncio's
/// `ConnectionResetError`).
pub(crate) fn closed_in_handshake(peer: &str) -> Error {
    let reset = std::io::Error::from_raw_os_error(libc::ECONNRESET);
    Error::io(format!("TLS handshake with {peer}: the peer closed the connection"), reset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_errors_name_their_reason() {
        let untrusted = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let error = tls_error("TLS handshake with 127.0.0.1:1", &untrusted);
        assert_eq!(error.tls_kind(), Some(TlsErrorKind::UntrustedCertificate));
        assert!(error
            .to_string()
            .starts_with("TLS handshake with 127.0.0.1:1 failed: certificate not trusted"));
        let name = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        assert!(tls_error("x", &name).to_string().contains("hostname mismatch"));
        let expired = rustls::Error::InvalidCertificate(CertificateError::Expired);
        assert_eq!(tls_error("x", &expired).tls_kind(), Some(TlsErrorKind::ExpiredCertificate));
    }
}
