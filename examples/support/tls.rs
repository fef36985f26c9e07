//! The TLS examples' configs, from PEM files: a server's certificate chain and key, a client's
//! trusted certificates.

use ringloop::tls::pki_types::pem::PemObject;
use ringloop::tls::pki_types::{CertificateDer, PrivateKeyDer};
use ringloop::tls::RootCertStore;
use ringloop::TlsConfig;

/// The certificates in the PEM file `path`, in order; an error names the file.
fn certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("reading certificates from {path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path} holds no certificate"));
    }
    Ok(certs)
}

/// A server config from `--cert` (the chain, the server's certificate first) and `--key`.
pub fn server_config(cert: &str, key: &str) -> Result<TlsConfig, String> {
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("reading a private key from {key}: {e}"))?;
    TlsConfig::server(certificates(cert)?, key).map_err(|e| e.to_string())
}

/// A client config trusting the certificates in `--cafile`, or Mozilla's roots without it
/// (asyncio's `ssl=True`).
pub fn client_config(cafile: Option<&str>) -> Result<TlsConfig, String> {
    let Some(cafile) = cafile else { return Ok(TlsConfig::default_client()) };
    let mut roots = RootCertStore::empty();
    for cert in certificates(cafile)? {
        roots.add(cert).map_err(|e| format!("{cafile}: {e}"))?;
    }
    Ok(TlsConfig::client_trusting(roots))
}
