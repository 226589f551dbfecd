//! Finding a DockerContainer's replicas and connecting to their hosts: in a cluster with
//! the user's own credentials (so their RBAC decides), or from a manifests directory.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use super::{OperateError, Replica};
use crate::api::{DockerContainer, DockerTarget};
use crate::controller::context::secret_bytes;
use crate::converge::model::{container_name, previous_name};
use crate::docker::material::target_material;
use crate::docker::{ConnectOptions, DockerHost, HostContainer, connect};
use crate::fleet::connections::{Attempt, observe};
use crate::labels::{LABEL_REPLICA, LABEL_UID};
use crate::sources::StaticSources;
use crate::standalone::commands::{Source, load_manifests};
use crate::standalone::world::{Memory, snapshot, uid_of};

/// A DockerContainer found, with its replicas.
#[derive(Debug)]
pub struct Located {
    /// The object, as `DockerContainer NAMESPACE/NAME`.
    pub object: String,
    /// The object itself.
    pub container: DockerContainer,
    /// Every replica found on its targets, in no particular order.
    pub replicas: Vec<Replica>,
}

/// A cluster reached with the user's kubeconfig, and the namespace to look in.
#[derive(Clone)]
pub struct Cluster {
    /// The client, authenticated as the user.
    pub client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
}

impl Cluster {
    /// Connects as kubectl would: `--kubeconfig` (else `KUBECONFIG`, else `~/.kube/config`,
    /// else the in-cluster service account), `--context`, `-n`.
    pub async fn connect(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<Self, OperateError> {
        let options = KubeConfigOptions {
            context: context.map(str::to_string),
            ..Default::default()
        };
        let config = match kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path).map_err(|e| {
                    OperateError::Invalid(format!("cannot read {}: {e}", path.display()))
                })?;
                Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|e| OperateError::Invalid(format!("kubeconfig: {e}")))?
            }
            None if context.is_some() => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| OperateError::Invalid(format!("kubeconfig: {e}")))?,
            None => Config::infer().await.map_err(|e| {
                OperateError::Invalid(format!(
                    "no cluster to talk to (without one, give the manifests with \
                         --filename): {e}"
                ))
            })?,
        };
        let namespace = namespace
            .map(str::to_string)
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|source| OperateError::Kube {
            what: "cannot build a Kubernetes client".into(),
            source,
        })?;
        Ok(Self { client, namespace })
    }

    /// The DockerContainer `name` and its replicas: the targets its `status.instances`
    /// names, each reached through its connection Secret.
    pub async fn locate(&self, name: &str) -> Result<Located, OperateError> {
        let ns = &self.namespace;
        let containers: Api<DockerContainer> = Api::namespaced(self.client.clone(), ns);
        let container = containers
            .get(name)
            .await
            .map_err(|e| refused(e, "get", "dockercontainers.stevedore.dev", name, ns, None))?;
        let object = format!("DockerContainer {ns}/{name}");
        let uid = container.metadata.uid.clone().unwrap_or_default();
        let targets: BTreeSet<String> = container
            .status
            .iter()
            .flat_map(|s| &s.instances)
            .map(|i| i.target.clone())
            .collect();
        if targets.is_empty() {
            return Err(OperateError::NotFound(format!(
                "{object} has no instances in its status yet (is the controller running, \
                 and the object placed?)"
            )));
        }
        let mut replicas = Vec::new();
        for target in &targets {
            let host = self.connect_target(target).await?;
            let listed = host.list_labelled(LABEL_UID, &uid).await?;
            replicas.extend(replicas_of(ns, name, target, &host, listed));
        }
        Ok(Located {
            object,
            container,
            replicas,
        })
    }

    /// Reads DockerTarget `name` and its connection Secrets, and connects.
    async fn connect_target(&self, name: &str) -> Result<DockerHost, OperateError> {
        let ns = &self.namespace;
        let targets: Api<DockerTarget> = Api::namespaced(self.client.clone(), ns);
        let target = targets
            .get(name)
            .await
            .map_err(|e| refused(e, "get", "dockertargets.stevedore.dev", name, ns, None))?;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let mut sources = StaticSources::default();
        let named = [
            target.spec.tls.as_ref().map(|t| &t.secret_ref.name),
            target.spec.ssh.as_ref().map(|s| &s.secret_ref.name),
        ];
        for secret in named.into_iter().flatten() {
            let why = format!("the connection Secret of DockerTarget {name}");
            let read = secrets
                .get(secret)
                .await
                .map_err(|e| refused(e, "get", "secrets", secret, ns, Some(&why)))?;
            sources.secrets.insert(secret.clone(), secret_bytes(&read));
        }
        let material = target_material(&target.spec, &sources)
            .map_err(|e| OperateError::Invalid(format!("DockerTarget {ns}/{name}: {e}")))?;
        Ok(connect(&target.spec, &material, ConnectOptions::default()).await?)
    }
}

/// The DockerContainer `name` of the manifests under `source` and its replicas, found on
/// every target of its namespace.
pub async fn in_manifests(source: &Source, name: &str) -> Result<Located, OperateError> {
    let manifests = load_manifests(source).map_err(OperateError::Invalid)?;
    let ns = &source.namespace;
    let (key, sourced) = manifests
        .containers
        .iter()
        .find(|(key, _)| key.name == name && &key.namespace == ns)
        .ok_or_else(|| {
            let broken = manifests
                .broken
                .iter()
                .any(|key| key.name == name && &key.namespace == ns);
            OperateError::NotFound(if broken {
                format!("DockerContainer {ns}/{name} cannot be read (the warning above says why)")
            } else {
                format!(
                    "no DockerContainer {ns}/{name} in the manifests (choose the namespace with -n)"
                )
            })
        })?;
    let uid = uid_of(key);
    let memory = Memory::new(&source.options);
    let snapshot = snapshot(&manifests, ns, &memory.pins);
    let observed = observe(
        &memory.connections,
        &snapshot,
        Attempt::Fresh,
        Instant::now(),
    )
    .await;
    let mut replicas = Vec::new();
    for (target, observed) in snapshot.targets.iter().zip(observed) {
        // An unreachable target may hold none of this object's replicas: only a replica
        // asked for and not found says so.
        let Ok((host, listed)) = observed.listed else {
            continue;
        };
        let listed = listed
            .iter()
            .filter(|c| c.labels.get(LABEL_UID) == Some(&uid))
            .cloned()
            .collect();
        replicas.extend(replicas_of(ns, name, &target.name, &host, listed));
    }
    Ok(Located {
        object: format!("DockerContainer {ns}/{name}"),
        container: sourced.object.as_ref().clone(),
        replicas,
    })
}

/// The replicas among a target's containers of one owner: those under the replica's own
/// name (a `-replaced-` leftover of an interrupted replacement is not one), each with the
/// previous container its last replacement kept.
fn replicas_of(
    namespace: &str,
    name: &str,
    target: &str,
    host: &DockerHost,
    listed: Vec<HostContainer>,
) -> Vec<Replica> {
    let index_of = |c: &HostContainer| c.labels.get(LABEL_REPLICA)?.parse::<u32>().ok();
    let (current, rest): (Vec<HostContainer>, Vec<HostContainer>) = listed
        .into_iter()
        .partition(|c| index_of(c).is_some_and(|i| c.name == container_name(namespace, name, i)));
    current
        .into_iter()
        .filter_map(|container| {
            let index = index_of(&container)?;
            let previous_name = previous_name(&container.name);
            let previous = rest.iter().find(|c| c.name == previous_name).cloned();
            Some(Replica {
                index,
                target: target.to_string(),
                container,
                previous,
                host: host.clone(),
            })
        })
        .collect()
}

/// An API error as the user needs it: a 403 names the permission that is missing (and,
/// with `why`, what it is for), a 404 the object.
pub(super) fn refused(
    error: kube::Error,
    verb: &str,
    resource: &str,
    name: &str,
    namespace: &str,
    why: Option<&str>,
) -> OperateError {
    let kind = resource.split('.').next().unwrap_or(resource);
    match &error {
        kube::Error::Api(status) if status.code == 403 => {
            let purpose = why.map(|w| format!(" ({w})")).unwrap_or_default();
            OperateError::Forbidden(format!(
                "forbidden: you cannot {verb} {kind} \"{name}\" in namespace \"{namespace}\"{purpose}; \
                 this needs RBAC permission \"{verb}\" on \"{resource}\" in \"{namespace}\""
            ))
        }
        kube::Error::Api(status) if status.code == 404 => OperateError::NotFound(format!(
            "{kind} \"{name}\" not found in namespace \"{namespace}\""
        )),
        _ => OperateError::Kube {
            what: format!("cannot {verb} {kind} {namespace}/{name}"),
            source: error,
        },
    }
}
