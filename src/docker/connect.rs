//! From a `DockerTarget` spec and its Secret material to a connected, version-negotiated
//! client.
//!
//! ```text
//!   unix:///path ──> the unix socket ──────────────────────────────────────────────┐
//!   tcp:// | http:// (loopback, or allowInsecure) ──> plain HTTP ────────────────────┤
//!   https:// | tcp:// + tls ──> rustls with only the target's CA + client cert ──────┤
//!   ssh://user@host:port ──> `ssh … docker system dial-stdio` per connection ────────┴> pooled transport
//! ```

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use bollard::ClientVersion;
use hyper_util::client::legacy::connect::HttpConnector;

use super::error::{DockerError, ErrorKind};
use super::transport::Transport;
use super::{DockerHost, ssh, tls};
use crate::api::DockerTargetSpec;

/// The oldest Engine API Stevedore speaks (Docker 20.10).
pub const MIN_API_VERSION: (u32, u32) = (1, 41);

/// Client certificate material from a target's `tls` Secret, as PEM bytes.
#[derive(Clone)]
pub struct TlsMaterial {
    /// `ca.crt`: the CA that signed the daemon's certificate; the only CA trusted.
    pub ca: Vec<u8>,
    /// `tls.crt`: the client certificate chain.
    pub cert: Vec<u8>,
    /// `tls.key`: the client certificate's private key.
    pub key: Vec<u8>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsMaterial { <redacted> }")
    }
}

/// ssh material from a target's `ssh` Secret.
#[derive(Clone)]
pub struct SshMaterial {
    /// `ssh-privatekey`: the private key the remote user authorizes.
    pub private_key: Vec<u8>,
    /// `known_hosts`: the host keys to trust; without it, the system's known hosts.
    pub known_hosts: Option<Vec<u8>>,
}

impl fmt::Debug for SshMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SshMaterial { <redacted> }")
    }
}

/// Secret material resolved for one target (fetched by the caller, not here).
#[derive(Clone, Debug, Default)]
pub struct ConnectionMaterial {
    /// From `spec.tls.secretRef`.
    pub tls: Option<TlsMaterial>,
    /// From `spec.ssh.secretRef`.
    pub ssh: Option<SshMaterial>,
}

/// How patient to be with a daemon.
#[derive(Clone, Copy, Debug)]
pub struct ConnectOptions {
    /// The limit for every single call (a pull's stream is read under it too, per read).
    pub request_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A parsed `spec.endpoint`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `unix:///path/to/docker.sock`.
    Unix {
        /// Socket path.
        path: String,
    },
    /// `tcp://`, `http://` or `https://host:port`.
    Tcp {
        /// Host name or IP (IPv6 without brackets).
        host: String,
        /// Port; 2375 by default, 2376 for `https://`.
        port: u16,
        /// Whether the scheme itself asks for TLS (`https://`).
        https: bool,
    },
    /// `ssh://[user@]host[:port]`.
    Ssh {
        /// Remote user, when given.
        user: Option<String>,
        /// Host name or IP.
        host: String,
        /// Port; 22 by default.
        port: u16,
    },
}

impl Endpoint {
    /// Parses an endpoint, naming what is wrong with it.
    pub fn parse(endpoint: &str) -> Result<Self, DockerError> {
        let invalid = |why: &str| {
            DockerError::new(
                ErrorKind::InvalidConfig,
                format!("spec.endpoint {endpoint:?}: {why}"),
            )
        };
        let (scheme, rest) = endpoint
            .split_once("://")
            .ok_or_else(|| invalid("missing scheme (unix://, tcp://, https://, ssh://)"))?;
        match scheme {
            "unix" if rest.starts_with('/') => Ok(Self::Unix {
                path: rest.to_string(),
            }),
            "unix" => Err(invalid("a unix socket path must be absolute")),
            "tcp" | "http" | "https" => {
                let https = scheme == "https";
                let authority = rest.trim_end_matches('/');
                let (host, port) = split_host_port(authority, if https { 2376 } else { 2375 })
                    .ok_or_else(|| invalid("expected host:port"))?;
                Ok(Self::Tcp { host, port, https })
            }
            "ssh" => {
                let authority = rest.trim_end_matches('/');
                let (user, host_port) = match authority.rsplit_once('@') {
                    Some((user, host)) if !user.is_empty() => (Some(user.to_string()), host),
                    Some(_) => return Err(invalid("empty ssh user")),
                    None => (None, authority),
                };
                let (host, port) = split_host_port(host_port, 22)
                    .ok_or_else(|| invalid("expected host[:port]"))?;
                Ok(Self::Ssh { user, host, port })
            }
            other => Err(invalid(&format!("unsupported scheme {other}://"))),
        }
    }
}

/// `host:port`, `[v6]:port`, or `host` with `default_port`.
fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if authority.is_empty() || authority.contains('/') {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            Some((host.to_string(), port.parse().ok().filter(|p| *p > 0)?))
        }
        Some(_) => None,
        None => Some((authority.to_string(), default_port)),
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Connects to the daemon a target describes and negotiates the API version. Refuses plain
/// TCP to a non-loopback address unless `allowInsecure`, and APIs older than 1.41.
pub async fn connect(
    spec: &DockerTargetSpec,
    material: &ConnectionMaterial,
    options: ConnectOptions,
) -> Result<DockerHost, DockerError> {
    let endpoint = Endpoint::parse(&spec.endpoint)?;
    let timeout = options.request_timeout.as_secs().max(1);
    let transport = match &endpoint {
        Endpoint::Unix { path } => Transport::new(
            hyperlocal::UnixConnector,
            &format!("unix://{}", hex::encode(path.as_bytes())),
            timeout,
        ),
        Endpoint::Tcp { host, port, https } => {
            match (&material.tls, spec.tls.is_some() || *https) {
                (Some(tls_material), _) => tls::connect(host, *port, tls_material, timeout)?,
                (None, true) => {
                    return Err(DockerError::new(
                        ErrorKind::InvalidConfig,
                        "a TLS endpoint needs spec.tls.secretRef with ca.crt, tls.crt and tls.key",
                    ));
                }
                (None, false) => {
                    if !is_loopback(host) && !spec.allow_insecure {
                        return Err(DockerError::new(
                            ErrorKind::InvalidConfig,
                            format!(
                                "refusing plain, unauthenticated TCP to {host}:{port}: anyone on \
                                 the network could run containers there; use TLS (https:// with \
                                 spec.tls) or set spec.allowInsecure: true"
                            ),
                        ));
                    }
                    Transport::new(
                        HttpConnector::new(),
                        &format!("http://{}:{port}", bracket_v6(host)),
                        timeout,
                    )
                }
            }
        }
        Endpoint::Ssh { user, host, port } => {
            let ssh_material = material.ssh.as_ref().ok_or_else(|| {
                DockerError::new(
                    ErrorKind::InvalidConfig,
                    "an ssh:// endpoint needs spec.ssh.secretRef with ssh-privatekey",
                )
            })?;
            let destination = ssh::Destination {
                user: user.clone(),
                host: host.clone(),
                port: *port,
            };
            ssh::connect(destination, ssh_material, options.request_timeout).await?
        }
    };
    negotiate(&transport, &spec.endpoint).await
}

fn bracket_v6(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Asks the daemon its version (one `/version` call, which also says which engine it is)
/// and speaks the older of its API and bollard's from then on.
async fn negotiate(transport: &Transport, endpoint: &str) -> Result<DockerHost, DockerError> {
    let newest = bollard::API_DEFAULT_VERSION;
    let host = DockerHost::new(transport.client(newest)?, endpoint.to_string());
    let answer = host.version().await?;
    let spoken = answer
        .api_version
        .as_deref()
        .and_then(api_version)
        .ok_or_else(|| {
            DockerError::new(
                ErrorKind::VersionUnsupported,
                format!(
                    "{endpoint} did not say which Engine API it speaks (ApiVersion {:?})",
                    answer.api_version
                ),
            )
        })?;
    if spoken < MIN_API_VERSION {
        return Err(DockerError::new(
            ErrorKind::VersionUnsupported,
            format!(
                "{endpoint} speaks Engine API {}.{}; Stevedore needs {}.{} (Docker 20.10) or newer",
                spoken.0, spoken.1, MIN_API_VERSION.0, MIN_API_VERSION.1
            ),
        ));
    }
    let spoken = ClientVersion {
        major_version: spoken.0 as usize,
        minor_version: spoken.1 as usize,
    };
    let host = if spoken < *newest {
        host.speaking(transport.client(&spoken)?)
    } else {
        host
    };
    Ok(host.identified(&answer))
}

/// `1.41` as `(1, 41)`.
fn api_version(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/docker.sock").ok(),
            Some(Endpoint::Unix {
                path: "/var/run/docker.sock".into()
            })
        );
        assert_eq!(
            Endpoint::parse("https://edge-1:2376").ok(),
            Some(Endpoint::Tcp {
                host: "edge-1".into(),
                port: 2376,
                https: true
            })
        );
        assert_eq!(
            Endpoint::parse("tcp://[::1]:2375").ok(),
            Some(Endpoint::Tcp {
                host: "::1".into(),
                port: 2375,
                https: false
            })
        );
        assert_eq!(
            Endpoint::parse("ssh://deploy@edge-2").ok(),
            Some(Endpoint::Ssh {
                user: Some("deploy".into()),
                host: "edge-2".into(),
                port: 22
            })
        );
    }

    #[test]
    fn bad_endpoints_name_the_problem() {
        for bad in [
            "edge-1:2375",
            "unix://docker.sock",
            "tcp://edge-1:notaport",
            "ftp://x",
            "tcp://",
        ] {
            let error = Endpoint::parse(bad).expect_err(bad);
            assert_eq!(error.kind, ErrorKind::InvalidConfig);
            assert!(error.message.contains("spec.endpoint"), "{}", error.message);
        }
    }

    #[test]
    fn loopback_is_recognised() {
        assert!(is_loopback("127.0.0.1"));
        assert!(is_loopback("::1"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("10.0.0.1"));
        assert!(!is_loopback("edge-1.example.com"));
    }

    #[tokio::test]
    async fn plain_tcp_to_a_remote_address_is_refused_without_allow_insecure() {
        let spec = DockerTargetSpec {
            endpoint: "tcp://192.0.2.10:2375".into(),
            tls: None,
            ssh: None,
            allow_insecure: false,
            unschedulable: false,
            max_containers: 0,
        };
        // Refused before any connection is attempted: nothing is sent to that address.
        let error = connect(
            &spec,
            &ConnectionMaterial::default(),
            ConnectOptions::default(),
        )
        .await
        .expect_err("insecure TCP accepted");
        assert_eq!(error.kind, ErrorKind::InvalidConfig);
        assert!(error.message.contains("allowInsecure"));
    }
}
