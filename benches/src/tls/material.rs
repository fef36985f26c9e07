//! The certificate every TLS benchmark server presents and the client trusts: a CA and a
//! leaf for `localhost`/`127.0.0.1` (ECDSA P-256, valid to 2095), made once with OpenSSL and
//! kept here so every process of a run serves the very same config. A benchmark key, secret
//! to no one.

use std::sync::Arc;

use ringloop::tls::pki_types::pem::PemObject;
use ringloop::tls::pki_types::{CertificateDer, PrivateKeyDer};
use ringloop::tls::{ClientConfig, RootCertStore, ServerConfig};
use ringloop::TlsConfig;

/// The CA.
const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBoDCCAUWgAwIBAgIUHKUQV7Nm0vtZ5vtJN4J5EoMXECcwCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRcmluZ2xvb3AtYmVuY2ggQ0EwIBcNMjYxMjA2MDcxMDEzWhgP
MjA5NTA1MTgwNzEwMTNaMBwxGjAYBgNVBAMMEXJpbmdsb29wLWJlbmNoIENBMFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEL0JEgPJ/9CV1bE3T7YdSJpIKd8T4G+qu
bfJx70ndwhVDN1kMSCiBUQ+QANhGX6NkaV2DDZhJnl0usEVeJx4izaNjMGEwHQYD
VR0OBBYEFC0KeKlGWvr5/sdQ+C+YQMcgX/wlMB8GA1UdIwQYMBaAFC0KeKlGWvr5
/sdQ+C+YQMcgX/wlMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgIEMAoG
CCqGSM49BAMCA0kAMEYCIQCU+on1/eoCYh8+odfdn2nTC1S+P1vigpRjUI++g6YE
2wIhANec2/UItYuOcDggc+7M3LRmU0B4YI8o73f/FPvKm2+n
-----END CERTIFICATE-----
";

/// The server's certificate, signed by the CA.
const LEAF_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBsjCCAVigAwIBAgIUU1O+IERdYD5pdnz3NHgQqTKCUUAwCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRcmluZ2xvb3AtYmVuY2ggQ0EwIBcNMjYxMjA2MDcxMDEzWhgP
MjA5NTA1MTgwNzEwMTNaMBQxEjAQBgNVBAMMCWxvY2FsaG9zdDBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABMjB0pJmLUSZ3133oTbVxkch6BhtIYyqtLGHpJupvEb8
eVgJMg1lGKB/AsT6P9sJ3I1Q/V7X2WcWBTDbYn5Nsi+jfjB8MBoGA1UdEQQTMBGC
CWxvY2FsaG9zdIcEfwAAATAJBgNVHRMEAjAAMBMGA1UdJQQMMAoGCCsGAQUFBwMB
MB0GA1UdDgQWBBQdcxQtmnjaa5WaN/dIAD7QSwR6mDAfBgNVHSMEGDAWgBQtCnip
Rlr6+f7HUPgvmEDHIF/8JTAKBggqhkjOPQQDAgNIADBFAiEAt7BrKxfWB8kMZAir
6xUHnnsMo9CNLmMghd4usjME5VcCIExoHpcoAvrRlNbechZEYds/IH/L7GQxK8qN
LKp8+KfQ
-----END CERTIFICATE-----
";

/// The server's key (PKCS#8).
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg7YKLkZ3CVXZCv0YC
/IPzrUtHOSg+ZGz5Sqp+r1ztS3mhRANCAATIwdKSZi1Emd9d96E21cZHIegYbSGM
qrSxh6SbqbxG/HlYCTINZRigfwLE+j/bCdyNUP1e19lnFgUw22J+TbIv
-----END PRIVATE KEY-----
";

/// The servers' config: ringloop's `TlsConfig::server` (TLS 1.2 and 1.3 on `ring`, X25519
/// first), which the tokio server uses too, so both serve the same rustls configuration.
pub fn server_config() -> Result<Arc<ServerConfig>, String> {
    let leaf = CertificateDer::from_pem_slice(LEAF_PEM.as_bytes()).map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(KEY_PEM.as_bytes()).map_err(|e| e.to_string())?;
    match TlsConfig::server(vec![leaf], key).map_err(|e| e.to_string())? {
        TlsConfig::Server(config) => Ok(config),
        TlsConfig::Client(_) => Err("TlsConfig::server made a client config".into()),
    }
}

/// The client's config: trusts the CA.
pub fn client_config() -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(CA_PEM.as_bytes()).map_err(|e| e.to_string())?;
    roots.add(ca).map_err(|e| e.to_string())?;
    match TlsConfig::client_trusting(roots) {
        TlsConfig::Client(config) => Ok(config),
        TlsConfig::Server(_) => Err("client_trusting made a server config".into()),
    }
}
