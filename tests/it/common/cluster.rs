//! The e2e tests' cluster: a client for the one `STEVEDORE_E2E_KUBECONFIG` names (a test
//! asked to run without one fails), the CRDs installed and established, and a namespace
//! per test.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};
use serde_json::json;

/// The field manager of what the tests apply.
pub const FIELD_MANAGER: &str = "stevedore-e2e";

/// A client for the cluster named by `STEVEDORE_E2E_KUBECONFIG` and that kubeconfig's path.
///
/// The e2e tests are `#[ignore]`d, so they run only when asked for (`--ignored`); asked
/// for without a cluster, `test` fails instead of passing without having checked anything.
pub async fn connect(test: &str) -> (Client, String) {
    let Ok(path) = std::env::var("STEVEDORE_E2E_KUBECONFIG") else {
        panic!(
            "{test} needs a Kubernetes API server: set STEVEDORE_E2E_KUBECONFIG to its kubeconfig"
        );
    };
    let kubeconfig = Kubeconfig::read_from(&path).expect("read STEVEDORE_E2E_KUBECONFIG");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig usable");
    (Client::try_from(config).expect("client"), path)
}

/// Applies Stevedore's CRDs and waits until the API server serves each of them.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in stevedore::api::crds() {
        let name = crd.metadata.name.clone().expect("CRD name");
        crds.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("the API server refused CRD {name}: {e}"));
        let established = await_condition(crds.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(std::time::Duration::from_secs(30), established)
            .await
            .unwrap_or_else(|_| panic!("CRD {name} not established within 30 s"))
            .expect("watch CRD");
    }
}

/// A new namespace for one test; [`delete_namespace`] removes it.
pub async fn fresh_namespace(client: &Client) -> String {
    // The time too: a namespace of an earlier run may still be terminating.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let name = format!("{}-{stamp}", super::fixture::unique("stevedore-e2e"));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
    namespaces
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&ns),
        )
        .await
        .expect("create namespace");
    name
}

/// Deletes a test's namespace (and so everything in it).
pub async fn delete_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(name, &DeleteParams::default()).await;
}

/// Each shard Lease's holder (`None`: free) among the Leases of `leases` named
/// `<prefix>-shard-<k>`: what a sharded controller's replicas hold.
pub async fn shard_holders(
    leases: &Api<k8s_openapi::api::coordination::v1::Lease>,
    prefix: &str,
) -> std::collections::BTreeMap<u32, Option<String>> {
    let listed = leases
        .list(&kube::api::ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let shard_prefix = format!("{prefix}-shard-");
    listed
        .into_iter()
        .filter_map(|lease| {
            let shard = lease
                .metadata
                .name
                .as_deref()?
                .strip_prefix(&shard_prefix)?
                .parse()
                .ok()?;
            let holder = lease.spec.and_then(|s| s.holder_identity);
            Some((shard, holder.filter(|h| !h.is_empty())))
        })
        .collect()
}
