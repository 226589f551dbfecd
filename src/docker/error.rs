//! Docker errors, classified into the reasons conditions and Events report.

use std::fmt;

/// Why talking to a daemon failed, as the `Ready` condition's reason says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The daemon could not be reached: connection refused, no such socket, timeout.
    Unreachable,
    /// The TLS handshake failed: unknown CA, bad certificate, plain HTTP to a TLS port.
    TlsError,
    /// The daemon or the ssh server refused our credentials.
    AuthError,
    /// The daemon's API is older than Stevedore supports (1.41).
    VersionUnsupported,
    /// The target's settings cannot work (bad endpoint, insecure TCP not allowed, bad key
    /// material); retrying will not help until the object changes.
    InvalidConfig,
    /// The object the call named does not exist on the daemon.
    NotFound,
    /// The call conflicts with the daemon's state (a name in use, a port taken).
    Conflict,
    /// The daemon answered with an error of its own.
    ServerError,
    /// A new container failed its health check (or never became healthy in time).
    Unhealthy,
    /// Stevedore was shutting down: the action was not started, or was rolled back.
    Interrupted,
}

impl ErrorKind {
    /// The CamelCase reason for conditions and Events.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Unreachable => "Unreachable",
            Self::TlsError => "TLSError",
            Self::AuthError => "AuthError",
            Self::VersionUnsupported => "VersionUnsupported",
            Self::InvalidConfig => "InvalidConfig",
            Self::NotFound => "NotFound",
            Self::Conflict => "Conflict",
            Self::ServerError => "ServerError",
            Self::Unhealthy => "Unhealthy",
            Self::Interrupted => "Interrupted",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// A failed Docker call, with its classification and a message a person can act on.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct DockerError {
    /// The classification.
    pub kind: ErrorKind,
    /// What failed and, where known, what to do about it.
    pub message: String,
}

impl DockerError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// Classifies a bollard error that happened while doing `what` (e.g. "failed to start
    /// container web"), keeping the daemon's own words.
    pub fn from_bollard(what: &str, error: bollard::errors::Error) -> Self {
        use bollard::errors::Error as E;
        let detail = crate::error_chain::error_chain(&error);
        let kind = match &error {
            E::DockerResponseServerError {
                status_code,
                message,
            } => {
                return Self::new(
                    match status_code {
                        401 | 403 => ErrorKind::AuthError,
                        404 => ErrorKind::NotFound,
                        409 => ErrorKind::Conflict,
                        400 if message.contains("HTTP request to an HTTPS server") => {
                            ErrorKind::TlsError
                        }
                        // Podman answers 500 where Docker answers 409: a name in use, or a
                        // container whose state refuses the request (stopping, being removed).
                        500 if message.contains("is already in use")
                            || message.contains("container state improper") =>
                        {
                            ErrorKind::Conflict
                        }
                        _ => ErrorKind::ServerError,
                    },
                    format!("{what}: {message}"),
                );
            }
            E::RequestTimeoutError => ErrorKind::Unreachable,
            E::CertParseError { .. } | E::NoNativeCertsError { .. } => ErrorKind::InvalidConfig,
            E::APIVersionParseError {} => ErrorKind::VersionUnsupported,
            // The daemon answered, with something this client cannot read: not a link problem.
            E::JsonDataError { .. } => ErrorKind::ServerError,
            E::SocketNotFoundError(_) | E::UnsupportedURISchemeError { .. } => {
                ErrorKind::Unreachable
            }
            _ => classify_transport(&detail),
        };
        Self::new(kind, format!("{what}: {detail}"))
    }
}

/// Transport failures carry their cause only in text (hyper, rustls, ssh all end up here).
fn classify_transport(detail: &str) -> ErrorKind {
    let lower = detail.to_ascii_lowercase();
    if lower.contains("permission denied") || lower.contains("host key verification failed") {
        ErrorKind::AuthError
    } else if lower.contains("close_notify") || lower.contains("unexpected eof") {
        // An established TLS connection that the peer (or the network) dropped: the link
        // is gone, the certificates were fine.
        ErrorKind::Unreachable
    } else if lower.contains("certificate")
        || lower.contains("tls")
        || lower.contains("handshake")
        || lower.contains("unknownissuer")
        || lower.contains("invalid http version")
        || lower.contains("received corrupt message")
    {
        ErrorKind::TlsError
    } else {
        ErrorKind::Unreachable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status_code: u16, message: &str) -> bollard::errors::Error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message: message.into(),
        }
    }

    #[test]
    fn daemon_status_codes_map_to_kinds() {
        let kind = |code, msg| DockerError::from_bollard("x", server(code, msg)).kind;
        assert_eq!(kind(404, "No such container: a"), ErrorKind::NotFound);
        assert_eq!(kind(409, "name in use"), ErrorKind::Conflict);
        assert_eq!(kind(401, "unauthorized"), ErrorKind::AuthError);
        assert_eq!(kind(500, "driver failed"), ErrorKind::ServerError);
        assert_eq!(
            kind(400, "Client sent an HTTP request to an HTTPS server."),
            ErrorKind::TlsError
        );
    }

    #[test]
    fn transport_text_is_classified() {
        assert_eq!(
            classify_transport("invalid peer certificate: UnknownIssuer"),
            ErrorKind::TlsError
        );
        assert_eq!(
            classify_transport("root@h: Permission denied (publickey)."),
            ErrorKind::AuthError
        );
        assert_eq!(
            classify_transport("Connection refused (os error 111)"),
            ErrorKind::Unreachable
        );
    }
}
