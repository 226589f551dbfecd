//! A bollard client over a connection Stevedore makes itself (TLS with the target's own
//! CA, ssh `dial-stdio`): bollard only needs a way to send one request.

use bollard::{BollardRequest, Docker};

use super::DockerError;

/// Names the body type of bollard's requests, which bollard does not export by name; custom
/// transports (TLS, ssh) need it for their hyper client.
trait HasBody {
    type Body;
}

impl<B> HasBody for http::Request<B> {
    type Body = B;
}

type RequestBody = <BollardRequest as HasBody>::Body;

/// A bollard client whose connections come from `connector` (TLS with the target's own CA,
/// or ssh dial-stdio); `address` only shapes the request URIs.
pub(super) fn client_through<C>(
    connector: C,
    address: &str,
    timeout_secs: u64,
) -> Result<Docker, DockerError>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let client: hyper_util::client::legacy::Client<C, RequestBody> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let transport = move |request: BollardRequest| {
        let client = client.clone();
        async move {
            client
                .request(request)
                .await
                .map_err(|err| bollard::errors::Error::HyperLegacyError { err })
        }
    };
    Docker::connect_with_custom_transport(
        transport,
        Some(address),
        timeout_secs,
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(|e| DockerError::from_bollard(&format!("failed to set up a client for {address}"), e))
}
