//! Bollard clients over connections Stevedore makes itself (a unix socket, plain TCP, TLS
//! with the target's own CA, ssh `dial-stdio`), each kept open between calls.
//!
//! Bollard's own unix and HTTP clients open a new connection for every call. A converge is
//! many calls in a row to one daemon (a create and a start per container), so a connection
//! per call is a socket, a registration with the reactor and a connection task on both sides
//! each time; in a cold converge of 1,000 targets that was about a quarter of the busiest
//! thread's CPU.

use std::time::Duration;

use bollard::{BollardRequest, ClientVersion, Docker};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::Connect;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::DockerError;

/// How long an unused connection to a daemon stays open. The calls of a converge follow
/// one another within milliseconds; past that, an open connection is tens of KB held per
/// daemon for nothing (a controller's heartbeats come every 15 s), so a settled fleet holds
/// none. Far below the idle limit of the daemons that have one (Podman's API service closes
/// idle connections after 10 s by default): Stevedore closes first, and never sends a call
/// down a connection the daemon is closing.
const IDLE_CONNECTION: Duration = Duration::from_secs(1);

/// Names the body type of bollard's requests, which bollard does not export by name; the
/// hyper client needs it.
trait HasBody {
    type Body;
}

impl<B> HasBody for http::Request<B> {
    type Body = B;
}

type RequestBody = <BollardRequest as HasBody>::Body;

/// Makes a bollard client for one daemon at a given Engine API version.
type MakeClient = dyn Fn(&ClientVersion) -> Result<Docker, DockerError> + Send + Sync;

/// One daemon's pool of connections, from which bollard clients are made: the client made
/// to ask the daemon its version and the one made at the negotiated version share it.
pub(super) struct Transport {
    make: Box<MakeClient>,
}

impl Transport {
    /// A pool whose connections come from `connector`; `address` only shapes the request
    /// URIs (for a unix socket, `unix://` and the hex-encoded path, as `hyperlocal` reads it).
    pub(super) fn new<C>(connector: C, address: &str, timeout_secs: u64) -> Self
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        let client: Client<C, RequestBody> = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_CONNECTION)
            .pool_timer(TokioTimer::new())
            .build(connector);
        let address = address.to_string();
        let make = move |version: &ClientVersion| {
            let client = client.clone();
            let transport = move |request: BollardRequest| {
                let client = client.clone();
                async move {
                    client
                        .request(request)
                        .await
                        .map_err(|err| bollard::errors::Error::HyperLegacyError { err })
                }
            };
            Docker::connect_with_custom_transport(transport, Some(&address), timeout_secs, version)
                .map_err(|e| {
                    DockerError::from_bollard(
                        &format!("failed to set up a client for {address}"),
                        e,
                    )
                })
        };
        Self {
            make: Box::new(make),
        }
    }

    /// A bollard client speaking Engine API `version` over this pool.
    pub(super) fn client(&self, version: &ClientVersion) -> Result<Docker, DockerError> {
        (self.make)(version)
    }
}
