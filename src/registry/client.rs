//! Talking to a registry through the Registry API v2 (the `oci-client` crate does the
//! protocol: basic and bearer-token auth, pagination parameters, manifest HEADs). Errors
//! are classified for `Ready` conditions: Unreachable, Unauthorized, TLSError, NotFound.
//!
//! An `insecure` registry is spoken to as Docker speaks to one listed in
//! `insecure-registries`: HTTPS without verifying the certificate, and plain HTTP when
//! HTTPS cannot even connect (the usual lab registry on :5000).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::api::registry::RegistrySpec;
use crate::docker::PullCredentials;

/// The most repositories read from a catalog, however many pages it has: a registry with
/// millions must not exhaust the controller.
pub const MAX_CATALOG_REPOSITORIES: usize = 100_000;
/// Repositories or tags asked for per page.
const PAGE_SIZE: usize = 1000;

/// Why a registry call failed, as a condition reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryErrorKind {
    /// Nothing answered, or the connection broke.
    Unreachable,
    /// The credentials were refused (or are needed and missing).
    Unauthorized,
    /// The certificate could not be verified with the configured CA.
    TlsError,
    /// The repository, tag or manifest does not exist.
    NotFound,
    /// The Registry's settings cannot work (a CA that does not parse, say).
    InvalidConfig,
    /// The registry answered with an error of its own.
    ServerError,
}

impl RegistryErrorKind {
    /// The CamelCase reason for conditions and Events.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Unreachable => "Unreachable",
            Self::Unauthorized => "Unauthorized",
            Self::TlsError => "TLSError",
            Self::NotFound => "NotFound",
            Self::InvalidConfig => "InvalidConfig",
            Self::ServerError => "ServerError",
        }
    }
}

/// A failed registry call, with a message a person can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RegistryError {
    /// The classification.
    pub kind: RegistryErrorKind,
    /// What failed and what to do about it.
    pub message: String,
}

impl RegistryError {
    fn new(kind: RegistryErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    fn from_oci(server: &str, what: &str, error: OciDistributionError) -> Self {
        use RegistryErrorKind as K;
        let detail = crate::error_chain::error_chain(&error);
        let lower = detail.to_ascii_lowercase();
        let kind = match &error {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => K::Unauthorized,
            OciDistributionError::ImageManifestNotFoundError(_) => K::NotFound,
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes = format!("{envelope}").to_ascii_uppercase();
                if codes.contains("UNAUTHORIZED") || codes.contains("DENIED") {
                    K::Unauthorized
                } else if codes.contains("UNKNOWN") {
                    K::NotFound
                } else {
                    K::ServerError
                }
            }
            OciDistributionError::ServerError {
                code: 401 | 403, ..
            } => K::Unauthorized,
            OciDistributionError::ServerError { code: 404, .. } => K::NotFound,
            _ if lower.contains("certificate")
                || lower.contains("unknownissuer")
                || lower.contains("corrupt message") =>
            {
                K::TlsError
            }
            OciDistributionError::RequestError(_) => K::Unreachable,
            _ => K::ServerError,
        };
        let hint = match kind {
            K::Unauthorized => "; check the username and password in spec.credentials",
            // A plain-HTTP server answers a TLS handshake with bytes that are not TLS.
            K::TlsError if lower.contains("corrupt message") => {
                "; the registry does not speak TLS: set spec.insecure for a plain-HTTP registry"
            }
            K::TlsError => "; spec.ca must hold the CA that signed the registry's certificate",
            K::Unreachable => "; is the registry running, and is spec.server right?",
            _ => "",
        };
        Self::new(
            kind,
            format!("failed to {what} at {server}: {detail}{hint}"),
        )
    }
}

/// Runs `$call` (an expression over `$client`) with each protocol's client in turn, the
/// one that answered last first, until the registry answers: only a failure to talk at all
/// (no connection, no TLS) moves on to the next protocol.
macro_rules! each_protocol {
    ($registry:expr, |$client:ident| $call:expr) => {{
        let mut failed = None;
        let mut answer = None;
        for (index, $client) in $registry.in_order() {
            match $call.await {
                Err(OciDistributionError::RequestError(error)) => {
                    failed = Some(OciDistributionError::RequestError(error));
                }
                answered => {
                    $registry.answered.store(index, Ordering::Relaxed);
                    answer = Some(answered);
                    break;
                }
            }
        }
        answer.unwrap_or_else(|| Err(failed.unwrap_or(OciDistributionError::GenericError(None))))
    }};
}

/// A client for one Registry.
pub struct RegistryClient {
    /// One client per protocol to try, in order: HTTPS, then (insecure only) plain HTTP.
    clients: Vec<Client>,
    /// The protocol that answered last: tried first next time.
    answered: AtomicUsize,
    server: String,
    auth: RegistryAuth,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client for `spec`'s server, trusting only `ca` (PEM) when given, with
    /// `credentials` when given; every call gives up after `timeout`.
    pub fn new(
        spec: &RegistrySpec,
        ca: Option<&[u8]>,
        credentials: Option<&PullCredentials>,
        timeout: Duration,
    ) -> Result<Self, RegistryError> {
        crate::docker::tls::install_crypto_provider();
        let config = |protocol| {
            let mut config = ClientConfig {
                protocol,
                read_timeout: Some(timeout),
                connect_timeout: Some(timeout),
                accept_invalid_certificates: spec.insecure,
                ..Default::default()
            };
            if let Some(ca) = ca {
                config.tls_certs_only = vec![Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: ca.to_vec(),
                }];
            }
            config
        };
        let mut configs = vec![config(ClientProtocol::Https)];
        if spec.insecure {
            configs.push(config(ClientProtocol::Http));
        }
        let clients = configs
            .into_iter()
            .map(|config| {
                Client::try_from(config).map_err(|e| {
                    RegistryError::new(
                        RegistryErrorKind::InvalidConfig,
                        format!(
                            "spec.ca: the CA certificate for {} cannot be used: {}",
                            spec.server,
                            crate::error_chain::error_chain(&e)
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let auth = match credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        Ok(Self {
            clients,
            answered: AtomicUsize::new(0),
            server: spec.server.clone(),
            auth,
        })
    }

    /// The clients to try, the one whose protocol answered last first.
    fn in_order(&self) -> impl Iterator<Item = (usize, &Client)> {
        let first = self.answered.load(Ordering::Relaxed);
        let count = self.clients.len();
        (0..count)
            .map(move |i| (first + i) % count)
            .filter_map(|index| Some((index, self.clients.get(index)?)))
    }

    fn reference(&self, repository: &str, tag: &str) -> Reference {
        Reference::with_tag(self.server.clone(), repository.to_string(), tag.to_string())
    }

    /// Every repository in the catalog (`/v2/_catalog`, page by page), at most
    /// [`MAX_CATALOG_REPOSITORIES`].
    pub async fn repositories(&self) -> Result<Vec<String>, RegistryError> {
        let probe = self.reference("catalog", "latest");
        let mut all: Vec<String> = Vec::new();
        loop {
            let last = all.last().cloned();
            let page = each_protocol!(self, |client| client.catalog(
                &probe,
                &self.auth,
                Some(PAGE_SIZE),
                last.as_deref()
            ))
            .map_err(|e| RegistryError::from_oci(&self.server, "list the catalog", e))?;
            let full = page.repositories.len() >= PAGE_SIZE;
            // A registry that repeats itself must not loop forever.
            let before = all.len();
            all.extend(
                page.repositories
                    .into_iter()
                    .filter(|r| last.as_deref().is_none_or(|l| r.as_str() > l)),
            );
            if !full || all.len() == before || all.len() >= MAX_CATALOG_REPOSITORIES {
                all.truncate(MAX_CATALOG_REPOSITORIES);
                return Ok(all);
            }
        }
    }

    /// Whether the registry answers with these credentials (one catalog page of one entry).
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let probe = self.reference("catalog", "latest");
        each_protocol!(self, |client| client.catalog(
            &probe,
            &self.auth,
            Some(1),
            None
        ))
        .map(|_| ())
        .map_err(|e| RegistryError::from_oci(&self.server, "reach the registry", e))
    }

    /// Every tag of `repository`, page by page.
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>, RegistryError> {
        let reference = self.reference(repository, "latest");
        let mut all: Vec<String> = Vec::new();
        loop {
            let last = all.last().cloned();
            let page = each_protocol!(self, |client| client.list_tags(
                &reference,
                &self.auth,
                Some(PAGE_SIZE),
                last.as_deref()
            ))
            .map_err(|e| {
                RegistryError::from_oci(&self.server, &format!("list the tags of {repository}"), e)
            })?;
            let full = page.tags.len() >= PAGE_SIZE;
            let before = all.len();
            all.extend(page.tags);
            if !full || all.len() == before || all.len() >= MAX_CATALOG_REPOSITORIES {
                return Ok(all);
            }
        }
    }

    /// The digest `repository:tag` points to, by a manifest HEAD (no pull, so no rate
    /// limit is spent). For a multi-platform image this is the index's digest — the one a
    /// daemon records in `RepoDigests` after pulling by that tag.
    pub async fn digest(&self, repository: &str, tag: &str) -> Result<String, RegistryError> {
        let reference = self.reference(repository, tag);
        each_protocol!(self, |client| client
            .fetch_manifest_digest(&reference, &self.auth))
        .map_err(|e| {
            RegistryError::from_oci(&self.server, &format!("resolve {repository}:{tag}"), e)
        })
    }
}
