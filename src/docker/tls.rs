//! Docker over TCP with TLS client certificates, trusting only the target's own CA (not the
//! machine's public roots: a daemon's certificate comes from the CA its owner runs).

use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::connect::TlsMaterial;
use super::error::{DockerError, ErrorKind};
use super::transport::Transport;

fn invalid(what: &str, detail: impl std::fmt::Display) -> DockerError {
    DockerError::new(
        ErrorKind::InvalidConfig,
        format!("the tls Secret's {what} is not usable: {detail}"),
    )
}

/// A rustls client configuration from PEM material.
pub fn client_config(material: &TlsMaterial) -> Result<rustls::ClientConfig, DockerError> {
    let mut roots = RootCertStore::empty();
    let mut any_ca = false;
    for cert in CertificateDer::pem_slice_iter(&material.ca) {
        let cert = cert.map_err(|e| invalid("ca.crt", e))?;
        roots.add(cert).map_err(|e| invalid("ca.crt", e))?;
        any_ca = true;
    }
    if !any_ca {
        return Err(invalid("ca.crt", "no PEM certificate found"));
    }
    let chain = CertificateDer::pem_slice_iter(&material.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("tls.crt", e))?;
    if chain.is_empty() {
        return Err(invalid("tls.crt", "no PEM certificate found"));
    }
    let key = PrivateKeyDer::from_pem_slice(&material.key).map_err(|e| invalid("tls.key", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("protocol setup", e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| invalid("tls.crt/tls.key pair", e))
}

/// Connections speaking HTTPS to `host:port` with the given material.
pub(super) fn connect(
    host: &str,
    port: u16,
    material: &TlsMaterial,
    timeout_secs: u64,
) -> Result<Transport, DockerError> {
    let config = client_config(material)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Ok(Transport::new(
        connector,
        &format!("https://{host}:{port}"),
        timeout_secs,
    ))
}

/// Makes ring the process's default rustls provider (for clients, such as the registry's,
/// that take the default); harmless when one is installed already.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
