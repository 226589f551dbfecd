//! End-to-end checks of `stevedore controller` against a real Kubernetes API server and the
//! harness's daemons: the real binary runs with `KUBECONFIG` pointing at the cluster.
//!
//! Gated on `STEVEDORE_E2E_KUBECONFIG` like `tests/it/e2e_kube.rs`: `cargo test` lists these
//! as ignored with the reason; run them with
//! `STEVEDORE_E2E_KUBECONFIG=~/.kube/config cargo test --test it -- --ignored --test-threads=1 e2e_controller`.
//! The cluster only has to reach nothing: the controller runs on this machine and talks to
//! the harness's daemons through their unix sockets.

use crate::common;
use crate::common::tripwire;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestEnv;
use common::cluster::{
    FIELD_MANAGER, connect as cluster, delete_namespace, fresh_namespace, install_crds,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use stevedore::api::{DockerContainer, DockerTarget};
use stevedore::docker::{ConnectOptions, DockerHost, connect};
use stevedore::labels::LABEL_NAMESPACE;

/// The controller binary, watching `namespace`, as its own process.
pub(crate) struct ControllerProcess {
    child: Child,
    /// Where it serves `/metrics`.
    metrics_port: i32,
}

impl ControllerProcess {
    pub(crate) fn start(kubeconfig: &str, namespace: &str, extra: &[&str]) -> Self {
        let port = common::fixture::free_port();
        // The Leases live in the watched namespace, unless the test names another.
        let lease_namespace = if extra.contains(&"--lease-namespace") {
            &[][..]
        } else {
            &["--lease-namespace", namespace][..]
        };
        let child = Command::new(env!("CARGO_BIN_EXE_stevedore"))
            .args(["controller", "--namespace", namespace])
            .args(lease_namespace)
            .args([
                "--metrics-address",
                &format!("127.0.0.1:{port}"),
                "--manager",
                namespace,
            ])
            .args(["--heartbeat", "2s", "--log-format", "text"])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start stevedore controller");
        Self {
            child,
            metrics_port: port,
        }
    }

    /// Its process ID.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it as Kubernetes does, with SIGTERM, and waits until it exited.
    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "SIGTERM to the controller");
        let _ = self.child.wait();
    }

    /// Waits until it exited by itself; its exit code.
    async fn exited(&mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the controller") {
                return status.code();
            }
            assert!(
                started.elapsed() < limit,
                "the controller did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many reconciles of `kind` it has run, from its `/metrics`.
    pub(crate) async fn reconciles(&self, kind: &str) -> u64 {
        self.sum_of(&format!("stevedore_reconciles_total{{kind=\"{kind}\"}}"))
            .await
    }

    /// How many reconciles of `kind` failed, for any reason, from its `/metrics`.
    async fn reconcile_errors(&self, kind: &str) -> u64 {
        self.sum_of(&format!(
            "stevedore_reconcile_errors_total{{kind=\"{kind}\","
        ))
        .await
    }

    /// The sum of the `/metrics` series whose name and labels begin with `series`.
    async fn sum_of(&self, series: &str) -> u64 {
        let address = format!("127.0.0.1:{}", self.metrics_port);
        let mut stream = tokio::net::TcpStream::connect(&address)
            .await
            .expect("connect to /metrics");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("request /metrics");
        let mut text = String::new();
        stream
            .read_to_string(&mut text)
            .await
            .expect("read /metrics");
        text.lines()
            .filter(|line| line.starts_with(series))
            .filter_map(|line| line.rsplit(' ').next()?.trim().parse::<u64>().ok())
            .sum()
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until `identity` holds the controller's lease.
async fn wait_for_leader(leases: &Api<Lease>, identity: &str, limit: Duration) {
    wait_for(&format!("{identity} holds the lease"), limit, async || {
        let lease = leases.get_opt("stevedore-controller").await.ok()??;
        (lease.spec?.holder_identity.as_deref() == Some(identity)).then_some(())
    })
    .await;
}

/// A DockerTarget `local` for the machine's own daemon.
fn local_target(env: &TestEnv) -> Value {
    json!({"apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerTarget",
    "metadata": {"name": "local"}, "spec": {"endpoint": env.get("MAIN_HOST")}})
}

async fn main_daemon(env: &TestEnv) -> DockerHost {
    let (spec, material) = common::hosts::main(env);
    connect(&spec, &material, ConnectOptions::default())
        .await
        .expect("main daemon")
}

pub(crate) fn is_ready(container: &DockerContainer) -> bool {
    container.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

async fn event_note(
    client: &Client,
    namespace: &str,
    reason: &str,
    contains: &str,
) -> Option<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    events
        .list(&ListParams::default())
        .await
        .ok()?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .find(|n| n.contains(contains))
}

/// Applies the DockerContainer `web` (the harness image on `local`, plus the `extra` spec
/// fields) and waits until it is Ready.
async fn web_ready(client: &Client, ns: &str, env: &TestEnv, extra: Value) -> Api<DockerContainer> {
    let mut spec = json!({"image": env.get("IMAGE_V1"), "placement": {"target": "local"},
                          "stopTimeoutSeconds": 1});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    apply(
        client,
        ns,
        json!({"apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerContainer",
               "metadata": {"name": "web"}, "spec": spec}),
    )
    .await;
    let containers: Api<DockerContainer> = Api::namespaced(client.clone(), ns);
    wait_for("web Ready", Duration::from_secs(60), async || {
        containers.get("web").await.ok().filter(is_ready)
    })
    .await;
    containers
}

async fn apply(client: &Client, namespace: &str, object: Value) {
    let kind = object["kind"].as_str().unwrap_or_default().to_string();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let result = match kind.as_str() {
        "DockerTarget" => Api::<DockerTarget>::namespaced(client.clone(), namespace)
            .patch(&name, &params, &Patch::Apply(&object))
            .await
            .map(|_| ()),
        "DockerContainer" => Api::<DockerContainer>::namespaced(client.clone(), namespace)
            .patch(&name, &params, &Patch::Apply(&object))
            .await
            .map(|_| ()),
        _ => Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), namespace)
            .patch(&name, &params, &Patch::Apply(&object))
            .await
            .map(|_| ()),
    };
    result.unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: set STEVEDORE_E2E_KUBECONFIG and pass --ignored"]
async fn the_controller_converges_repairs_rolls_and_cleans_up() {
    let (client, kubeconfig) =
        cluster("the_controller_converges_repairs_rolls_and_cleans_up").await;
    let env = TestEnv::load();
    install_crds(&client).await;
    let ns = fresh_namespace(&client).await;
    let _controller = ControllerProcess::start(&kubeconfig, &ns, &["--leader-elect=false"]);
    let host = main_daemon(&env).await;
    let containers: Api<DockerContainer> = Api::namespaced(client.clone(), &ns);

    apply(&client, &ns, local_target(&env)).await;
    apply(
        &client,
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token"},
        "stringData": {"token": "first"}}),
    )
    .await;
    let web = |mode: &str| {
        json!({"apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerContainer",
        "metadata": {"name": "web"}, "spec": {"image": env.get("IMAGE_V1"),
        "placement": {"target": "local"}, "stopTimeoutSeconds": 1,
        "env": [{"name": "MODE", "value": mode},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "token", "key": "token"}}}]}})
    };
    apply(&client, &ns, web("blue")).await;
    wait_for("web Ready", Duration::from_secs(60), async || {
        containers.get("web").await.ok().filter(is_ready)
    })
    .await;
    let running = host
        .list_labelled(LABEL_NAMESPACE, &ns)
        .await
        .expect("list");
    assert_eq!(running.len(), 1);

    // Edit the spec: replaced, with an Event naming the field.
    apply(&client, &ns, web("green")).await;
    wait_for(
        "Replaced event naming env MODE",
        Duration::from_secs(60),
        async || event_note(&client, &ns, "Replaced", "env MODE").await,
    )
    .await;

    // Rotate the Secret: replaced again.
    apply(
        &client,
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token"},
        "stringData": {"token": "second"}}),
    )
    .await;
    wait_for(
        "Replaced event naming the Secret",
        Duration::from_secs(60),
        async || event_note(&client, &ns, "Replaced", "token").await,
    )
    .await;

    // Remove it by hand: repaired, with an Event. (The replaced ones are kept stopped as
    // the replica's previous container: not what serves.)
    let current = common::serving(
        host.list_labelled(LABEL_NAMESPACE, &ns)
            .await
            .expect("list"),
    );
    host.stop(&current[0].id, &current[0].name, Some(0))
        .await
        .expect("stop");
    host.remove(&current[0].id, &current[0].name)
        .await
        .expect("rm");
    wait_for("repair", Duration::from_secs(10), async || {
        let list = common::serving(host.list_labelled(LABEL_NAMESPACE, &ns).await.ok()?);
        (list.len() == 1 && list[0].id != current[0].id).then_some(())
    })
    .await;

    // Delete: containers gone, object gone.
    containers
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for(
        "containers removed and object gone",
        Duration::from_secs(60),
        async || {
            let list = host.list_labelled(LABEL_NAMESPACE, &ns).await.ok()?;
            (list.is_empty() && containers.get_opt("web").await.ok()?.is_none()).then_some(())
        },
    )
    .await;
    delete_namespace_while_the_controller_runs(&client, &ns).await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: set STEVEDORE_E2E_KUBECONFIG and pass --ignored"]
async fn with_two_replicas_only_the_leader_acts() {
    let (client, kubeconfig) = cluster("with_two_replicas_only_the_leader_acts").await;
    let env = TestEnv::load();
    install_crds(&client).await;
    let ns = fresh_namespace(&client).await;
    let first = ControllerProcess::start(&kubeconfig, &ns, &["--identity", "first"]);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    wait_for_leader(&leases, "first", Duration::from_secs(30)).await;
    let second = ControllerProcess::start(&kubeconfig, &ns, &["--identity", "second"]);
    apply(&client, &ns, local_target(&env)).await;
    let containers = web_ready(&client, &ns, &env, json!({})).await;
    // Every Event came from the leader.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    for event in events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
    {
        assert_ne!(
            event.reporting_instance.as_deref(),
            Some("second"),
            "{event:?}"
        );
    }
    // The leader is stopped as Kubernetes stops it (SIGTERM): it releases the lease, so
    // the standby takes over at once rather than after the lease duration (15 s).
    let stopped = Instant::now();
    first.terminate();
    wait_for_leader(&leases, "second", Duration::from_secs(5)).await;
    eprintln!("the standby leads {:?} after SIGTERM", stopped.elapsed());
    let host = main_daemon(&env).await;
    let list = host
        .list_labelled(LABEL_NAMESPACE, &ns)
        .await
        .expect("list");
    assert_eq!(list.len(), 1, "no duplicate after the hand-over");
    containers
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("containers removed", Duration::from_secs(60), async || {
        host.list_labelled(LABEL_NAMESPACE, &ns)
            .await
            .ok()?
            .is_empty()
            .then_some(())
    })
    .await;
    delete_namespace_while_the_controller_runs(&client, &ns).await;
    drop(second);
}

/// Deletes the test's namespace and waits until it is gone: its DockerTargets and
/// DockerContainers carry finalizers only a running controller removes.
pub(crate) async fn delete_namespace_while_the_controller_runs(client: &Client, ns: &str) {
    delete_namespace(client, ns).await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    wait_for("the namespace gone", Duration::from_secs(120), async || {
        namespaces.get_opt(ns).await.ok()?.is_none().then_some(())
    })
    .await;
}

/// Containers of `namespace` on a daemon.
async fn in_namespace(host: &DockerHost, namespace: &str) -> usize {
    host.list_labelled(LABEL_NAMESPACE, namespace)
        .await
        .expect("list")
        .len()
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: set STEVEDORE_E2E_KUBECONFIG and pass --ignored"]
async fn deleting_the_namespace_removes_every_container_before_the_objects_go() {
    let (client, kubeconfig) =
        cluster("deleting_the_namespace_removes_every_container_before_the_objects_go").await;
    let env = TestEnv::load();
    install_crds(&client).await;
    let ns = fresh_namespace(&client).await;
    let _controller = ControllerProcess::start(&kubeconfig, &ns, &["--leader-elect=false"]);
    let local = main_daemon(&env).await;
    let (spec, material) = common::hosts::tls(&env);
    let edge = connect(&spec, &material, ConnectOptions::default())
        .await
        .expect("TLS daemon");
    let read = |key: &str| std::fs::read_to_string(env.get(key)).expect("harness file");

    // One target over the local socket, one over TLS whose Secret goes with the namespace.
    apply(&client, &ns, local_target(&env)).await;
    apply(
        &client,
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "edge-tls"},
        "stringData": {"ca.crt": read("CA"), "tls.crt": read("CLIENT_CERT"), "tls.key": read("CLIENT_KEY")}}),
    )
    .await;
    apply(
        &client,
        &ns,
        json!({"apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerTarget",
        "metadata": {"name": "edge"},
        "spec": {"endpoint": env.get("TLS_HOST"), "tls": {"secretRef": {"name": "edge-tls"}}}}),
    )
    .await;
    for (name, target) in [("web", "local"), ("api", "edge")] {
        apply(
            &client,
            &ns,
            json!({"apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerContainer",
            "metadata": {"name": name}, "spec": {"image": env.get("IMAGE_V1"),
            "placement": {"target": target}, "stopTimeoutSeconds": 1}}),
        )
        .await;
    }
    let containers: Api<DockerContainer> = Api::namespaced(client.clone(), &ns);
    for name in ["web", "api"] {
        wait_for(
            &format!("{name} Ready"),
            Duration::from_secs(60),
            async || containers.get(name).await.ok().filter(is_ready),
        )
        .await;
    }
    assert_eq!(in_namespace(&local, &ns).await, 1);
    assert_eq!(in_namespace(&edge, &ns).await, 1);

    delete_namespace_while_the_controller_runs(&client, &ns).await;
    assert_eq!(
        in_namespace(&local, &ns).await,
        0,
        "a container of the deleted namespace still runs on the local daemon"
    );
    assert_eq!(
        in_namespace(&edge, &ns).await,
        0,
        "a container of the deleted namespace still runs on the TLS daemon"
    );
}

/// A fresh namespace watched by one controller (no leader election), holding the harness's
/// local target: the client, its kubeconfig, the harness, the namespace, the controller and
/// the local target's daemon.
async fn one_controller_and_the_local_target(
    test: &str,
) -> (
    Client,
    String,
    TestEnv,
    String,
    ControllerProcess,
    DockerHost,
) {
    let (client, kubeconfig) = cluster(test).await;
    let env = TestEnv::load();
    install_crds(&client).await;
    let ns = fresh_namespace(&client).await;
    let controller = ControllerProcess::start(&kubeconfig, &ns, &["--leader-elect=false"]);
    let host = main_daemon(&env).await;
    apply(&client, &ns, local_target(&env)).await;
    (client, kubeconfig, env, ns, controller, host)
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: set STEVEDORE_E2E_KUBECONFIG and pass --ignored"]
async fn a_restart_touches_no_container_and_rewrites_no_status() {
    let (client, kubeconfig, env, ns, controller, host) = one_controller_and_the_local_target(
        "a_restart_touches_no_container_and_rewrites_no_status",
    )
    .await;
    apply(
        &client,
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token"},
        "stringData": {"token": "t0ken"}}),
    )
    .await;
    let containers = web_ready(
        &client,
        &ns,
        &env,
        json!({"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "token", "key": "token"}}}]}),
    )
    .await;
    // Let the look-again after the change pass.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = containers.get("web").await.expect("web");
    let running = host
        .list_labelled(LABEL_NAMESPACE, &ns)
        .await
        .expect("list");

    controller.terminate();
    let _restarted = ControllerProcess::start(&kubeconfig, &ns, &["--leader-elect=false"]);
    tokio::time::sleep(Duration::from_secs(10)).await;

    let after = containers.get("web").await.expect("web");
    let still = host
        .list_labelled(LABEL_NAMESPACE, &ns)
        .await
        .expect("list");
    assert_eq!(
        running.iter().map(|c| &c.id).collect::<Vec<_>>(),
        still.iter().map(|c| &c.id).collect::<Vec<_>>(),
        "the restart replaced or added a container"
    );
    assert_eq!(
        before.metadata.resource_version,
        after.metadata.resource_version,
        "the restart rewrote the status: {:?} then {:?}",
        before.status.map(|s| s.conditions),
        after.status.map(|s| s.conditions)
    );
    delete_namespace_while_the_controller_runs(&client, &ns).await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: set STEVEDORE_E2E_KUBECONFIG and pass --ignored"]
async fn objects_applied_at_once_each_get_the_finalizer_once_and_converge_without_errors() {
    let (client, _, env, ns, controller, host) = one_controller_and_the_local_target(
        "objects_applied_at_once_each_get_the_finalizer_once_and_converge_without_errors",
    )
    .await;

    // Objects applied in a burst are reconciled side by side, each adding its finalizer
    // in the pass that converges it: none twice, and no reconcile fails.
    let names: Vec<String> = (0..12).map(|i| format!("burst-{i}")).collect();
    futures::future::join_all(names.iter().map(|name| {
        apply(
            &client,
            &ns,
            json!({"apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerContainer",
                   "metadata": {"name": name},
                   "spec": {"image": env.get("IMAGE_V1"), "placement": {"target": "local"},
                            "stopTimeoutSeconds": 1}}),
        )
    }))
    .await;
    let containers: Api<DockerContainer> = Api::namespaced(client.clone(), &ns);
    for name in &names {
        let ready = wait_for(
            &format!("{name} Ready"),
            Duration::from_secs(90),
            async || containers.get(name).await.ok().filter(is_ready),
        )
        .await;
        assert_eq!(
            ready.metadata.finalizers.as_deref(),
            Some(&["stevedore.dev/cleanup".to_string()][..]),
            "{name} carries the cleanup finalizer, once"
        );
        // The API server records who added it: Stevedore, by name.
        let finalizer_writers: Vec<_> = ready
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|entry| {
                entry
                    .fields_v1
                    .as_ref()
                    .is_some_and(|fields| fields.0.to_string().contains("stevedore.dev/cleanup"))
            })
            .map(|entry| entry.manager.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            finalizer_writers,
            ["stevedore"],
            "{name}'s finalizer is in the managedFields of the stevedore field manager"
        );
    }
    assert_eq!(
        in_namespace(&host, &ns).await,
        names.len(),
        "one container per object"
    );
    assert_eq!(
        controller.reconcile_errors("DockerContainer").await,
        0,
        "no reconcile failed"
    );
    delete_namespace_while_the_controller_runs(&client, &ns).await;
    assert_eq!(in_namespace(&host, &ns).await, 0, "every container removed");
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: set STEVEDORE_E2E_KUBECONFIG and pass --ignored"]
async fn a_targets_status_alone_wakes_no_container_but_its_labels_do() {
    let (client, kubeconfig) =
        cluster("a_targets_status_alone_wakes_no_container_but_its_labels_do").await;
    let env = TestEnv::load();
    install_crds(&client).await;
    let ns = fresh_namespace(&client).await;
    let controller = ControllerProcess::start(&kubeconfig, &ns, &["--leader-elect=false"]);
    apply(&client, &ns, local_target(&env)).await;
    web_ready(&client, &ns, &env, json!({})).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let targets: Api<DockerTarget> = Api::namespaced(client.clone(), &ns);
    let settled = controller.reconciles("DockerContainer").await;

    // What a heartbeat writes: the images and the time the daemon was last seen.
    let status_only = json!({"status": {"lastSeenTime": "2026-01-01T00:00:00Z", "images": []}});
    targets
        .patch_status(
            "local",
            &PatchParams::default(),
            &Patch::Merge(&status_only),
        )
        .await
        .expect("patch the target's status");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        controller.reconciles("DockerContainer").await,
        settled,
        "a status-only change of the target reconciled its DockerContainers"
    );

    // A label (placement selects by labels) does wake them.
    let labelled = json!({"metadata": {"labels": {"pool": "a"}}});
    targets
        .patch("local", &PatchParams::default(), &Patch::Merge(&labelled))
        .await
        .expect("label the target");
    wait_for(
        "a reconcile after the label",
        Duration::from_secs(10),
        async || (controller.reconciles("DockerContainer").await > settled).then_some(()),
    )
    .await;
    delete_namespace_while_the_controller_runs(&client, &ns).await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: set STEVEDORE_E2E_KUBECONFIG and pass --ignored"]
async fn a_target_deleted_before_its_containers_waits_for_their_cleanup() {
    // `kubectl delete -f dir/` or a GitOps prune may delete the target first.
    let (client, _, env, ns, _controller, host) = one_controller_and_the_local_target(
        "a_target_deleted_before_its_containers_waits_for_their_cleanup",
    )
    .await;
    let containers = web_ready(&client, &ns, &env, json!({})).await;
    assert_eq!(in_namespace(&host, &ns).await, 1);

    let targets: Api<DockerTarget> = Api::namespaced(client.clone(), &ns);
    targets
        .delete("local", &DeleteParams::default())
        .await
        .expect("delete the target");
    containers
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete the container");
    wait_for("both objects gone", Duration::from_secs(60), async || {
        let target = targets.get_opt("local").await.ok()?;
        let web = containers.get_opt("web").await.ok()?;
        (target.is_none() && web.is_none()).then_some(())
    })
    .await;
    assert_eq!(
        in_namespace(&host, &ns).await,
        0,
        "the container outlived its objects"
    );
    delete_namespace_while_the_controller_runs(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: set STEVEDORE_E2E_KUBECONFIG and pass --ignored"]
async fn sigterm_in_the_middle_of_a_replacement_rolls_it_back_and_the_next_leader_finishes() {
    let (client, kubeconfig) = cluster(
        "sigterm_in_the_middle_of_a_replacement_rolls_it_back_and_the_next_leader_finishes",
    )
    .await;
    let env = TestEnv::load();
    install_crds(&client).await;
    let ns = fresh_namespace(&client).await;
    // The daemon is reached through a tripwire that sends SIGTERM to the leader as it
    // stops the old container of a host-port replacement.
    let dir = std::env::temp_dir().join(common::fixture::unique("tripwire"));
    std::fs::create_dir_all(&dir).expect("dir");
    let wire = tripwire::Tripwire::start(&dir, std::path::Path::new("/var/run/docker.sock"));
    let mut first = ControllerProcess::start(&kubeconfig, &ns, &["--identity", "first"]);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    wait_for_leader(&leases, "first", Duration::from_secs(30)).await;
    apply(
        &client,
        &ns,
        json!({"apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerTarget",
               "metadata": {"name": "local"}, "spec": {"endpoint": wire.endpoint()}}),
    )
    .await;
    let port = common::fixture::free_port();
    let spec = |mode: &str| {
        json!({"env": [{"name": "MODE", "value": mode}],
               "ports": [{"containerPort": 8080, "hostPort": port, "hostIP": "127.0.0.1"}],
               "healthCheck": {"command": ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"],
                               "intervalSeconds": 1, "timeoutSeconds": 1, "retries": 3}})
    };
    web_ready(&client, &ns, &env, spec("one")).await;
    let host = main_daemon(&env).await;
    let old = host
        .list_labelled(LABEL_NAMESPACE, &ns)
        .await
        .expect("list");
    assert_eq!(old.len(), 1);

    let pid = first.child.id().to_string();
    wire.arm(
        ("POST", "/stop"),
        1,
        Duration::from_millis(500),
        move || {
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
        },
    );
    let mut edited = json!({"apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerContainer",
        "metadata": {"name": "web"}, "spec": {"image": env.get("IMAGE_V1"),
        "placement": {"target": "local"}, "stopTimeoutSeconds": 1}});
    if let (Some(spec), Some(extra)) = (edited["spec"].as_object_mut(), spec("two").as_object()) {
        spec.extend(extra.clone());
    }
    apply(&client, &ns, edited).await;
    let code = first.exited(Duration::from_secs(40)).await;
    assert!(
        wire.fired().is_some(),
        "the replacement never stopped the old container"
    );
    assert_eq!(code, Some(0), "the drained controller exits cleanly");

    // Rolled back: the old container runs again under its own name, nothing renamed aside.
    let left = host
        .list_labelled(LABEL_NAMESPACE, &ns)
        .await
        .expect("list");
    assert_eq!(left.len(), 1, "{left:#?}");
    assert_eq!(left[0].id, old[0].id, "{left:#?}");
    assert_eq!(left[0].name, old[0].name);
    assert_eq!(left[0].state, stevedore::docker::ContainerState::Running);
    let note = event_note(&client, &ns, "RolledBack", "_web_0")
        .await
        .expect("a RolledBack Event");
    assert!(note.contains("shutting down"), "{note}");
    // It gave the Lease up on its way out.
    let lease = leases.get("stevedore-controller").await.expect("the lease");
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(holder.is_empty(), "the Lease is still held by {holder}");

    // The next leader finishes the rollout: one container, the new spec, serving.
    let _second = ControllerProcess::start(&kubeconfig, &ns, &["--identity", "second"]);
    wait_for_leader(&leases, "second", Duration::from_secs(30)).await;
    wait_for(
        "the replacement by the next leader",
        Duration::from_secs(60),
        async || {
            let list = common::serving(host.list_labelled(LABEL_NAMESPACE, &ns).await.ok()?);
            (list.len() == 1
                && list[0].id != old[0].id
                && list[0].health == Some(stevedore::docker::Health::Healthy))
            .then_some(())
        },
    )
    .await;
    delete_namespace_while_the_controller_runs(&client, &ns).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kubectl stevedore` as kubectl runs it: this binary under the plugin's name.
fn plugin(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("kubectl-stevedore");
    if !path.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_stevedore"), &path).expect("symlink");
    }
    path
}

/// A copy of the e2e kubeconfig that acts as `user` (impersonation, as `kubectl --as`).
fn kubeconfig_as(kubeconfig: &str, user: &str, dir: &std::path::Path) -> String {
    let text = std::fs::read_to_string(kubeconfig).expect("read kubeconfig");
    let mut config: Value = serde_yaml_ng::from_str(&text).expect("kubeconfig YAML");
    for entry in config["users"].as_array_mut().expect("users") {
        entry["user"]["as"] = json!(user);
    }
    let path = dir.join(format!("{user}.kubeconfig"));
    std::fs::write(&path, serde_yaml_ng::to_string(&config).expect("YAML")).expect("write");
    path.display().to_string()
}

/// A Role allowing `verbs` on `resources`, bound to `user`.
async fn grant(client: &Client, ns: &str, user: &str, rules: Value) {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let role: Role = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": user, "namespace": ns}, "rules": rules}))
    .expect("role");
    Api::<Role>::namespaced(client.clone(), ns)
        .patch(user, &params, &Patch::Apply(&role))
        .await
        .expect("apply Role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": user, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}))
    .expect("binding");
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .patch(user, &params, &Patch::Apply(&binding))
        .await
        .expect("apply RoleBinding");
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: set STEVEDORE_E2E_KUBECONFIG and pass --ignored"]
async fn kubectl_stevedore_reaches_replicas_with_the_users_own_rbac() {
    let (client, kubeconfig) =
        cluster("kubectl_stevedore_reaches_replicas_with_the_users_own_rbac").await;
    let env = TestEnv::load();
    install_crds(&client).await;
    let ns = fresh_namespace(&client).await;
    let _controller = ControllerProcess::start(&kubeconfig, &ns, &["--leader-elect=false"]);
    let read = |var: &str| std::fs::read_to_string(env.get(var)).expect("read PEM");
    apply(
        &client,
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "remote-tls"},
               "stringData": {"ca.crt": read("CA"), "tls.crt": read("CLIENT_CERT"),
                              "tls.key": read("CLIENT_KEY")}}),
    )
    .await;
    apply(
        &client,
        &ns,
        json!({"apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerTarget",
               "metadata": {"name": "remote"},
               "spec": {"endpoint": env.get("TLS_HOST"), "tls": {"secretRef": {"name": "remote-tls"}}}}),
    )
    .await;
    let containers: Api<DockerContainer> = Api::namespaced(client.clone(), &ns);
    apply(
        &client,
        &ns,
        json!({"apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerContainer",
               "metadata": {"name": "web"},
               "spec": {"image": env.get("IMAGE_V1"), "placement": {"target": "remote"},
                        "command": ["sh", "-c", "echo hello from web; sleep 3600"],
                        "stopTimeoutSeconds": 1}}),
    )
    .await;
    let ready = wait_for("web Ready", Duration::from_secs(60), async || {
        containers.get("web").await.ok().filter(is_ready)
    })
    .await;
    let first_id = ready.status.as_ref().expect("status").instances[0]
        .container_id
        .clone()
        .expect("container ID");

    let reach = json!([
        {"apiGroups": ["stevedore.dev"], "resources": ["dockercontainers"], "verbs": ["get", "patch"]},
        {"apiGroups": ["stevedore.dev"], "resources": ["dockertargets"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]);
    let look = json!([
        {"apiGroups": ["stevedore.dev"], "resources": ["dockercontainers", "dockertargets"], "verbs": ["get"]}]);
    grant(&client, &ns, "alice", reach).await;
    grant(&client, &ns, "bob", look).await;
    let dir = std::env::temp_dir().join(common::fixture::unique("plugin"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubectl_stevedore = plugin(&dir);
    let alice = kubeconfig_as(&kubeconfig, "alice", &dir);
    let bob = kubeconfig_as(&kubeconfig, "bob", &dir);
    let as_user = |config: &str, args: &[&str]| {
        // The subcommand, then kubectl's options, then the rest (an exec's command last).
        Command::new(&kubectl_stevedore)
            .arg(args[0])
            .args(["-n", &ns, "--kubeconfig", config])
            .args(&args[1..])
            .output()
            .expect("run kubectl-stevedore")
    };
    let said = |out: &std::process::Output| {
        format!(
            "exit {:?}\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    // Allowed to read the target's Secret: the logs and a command, through TLS.
    let logs = as_user(&alice, &["logs", "web"]);
    assert!(logs.status.success(), "{}", said(&logs));
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "hello from web\n");
    let exec = as_user(&alice, &["exec", "web", "--", "hostname"]);
    assert!(exec.status.success(), "{}", said(&exec));
    assert_eq!(
        String::from_utf8_lossy(&exec.stdout).trim(),
        &first_id[..12]
    );

    // Not allowed: the error names the permission that is missing, and what it is for.
    for args in [&["logs", "web"][..], &["exec", "web", "--", "hostname"][..]] {
        let refused = as_user(&bob, args);
        assert_eq!(refused.status.code(), Some(1), "{}", said(&refused));
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains(&format!(
                "you cannot get secrets \"remote-tls\" in namespace \"{ns}\" (the connection Secret of DockerTarget remote)"
            )) && stderr.contains("\"get\" on \"secrets\""),
            "{}",
            said(&refused)
        );
    }
    let refused = as_user(&bob, &["restart", "web"]);
    assert_eq!(refused.status.code(), Some(1), "{}", said(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("\"patch\" on \"dockercontainers.stevedore.dev\""),
        "{}",
        said(&refused)
    );

    // Restart: the annotation, then the controller's own rollout replaces the container.
    let restart = as_user(&alice, &["restart", "web"]);
    assert!(restart.status.success(), "{}", said(&restart));
    assert_eq!(
        String::from_utf8_lossy(&restart.stdout),
        "dockercontainer.stevedore.dev/web restarted\n"
    );
    wait_for(
        "a Replaced event saying restart requested",
        Duration::from_secs(60),
        async || event_note(&client, &ns, "Replaced", "restart requested").await,
    )
    .await;
    let replaced = wait_for("web Ready again", Duration::from_secs(60), async || {
        let web = containers.get("web").await.ok().filter(is_ready)?;
        let id = web
            .status
            .as_ref()?
            .instances
            .first()?
            .container_id
            .clone()?;
        (id != first_id).then_some(id)
    })
    .await;
    let logs = as_user(&alice, &["logs", "web"]);
    assert_eq!(
        String::from_utf8_lossy(&logs.stdout),
        "hello from web\n",
        "{}",
        said(&logs)
    );
    assert_ne!(replaced, first_id);
    let _ = std::fs::remove_dir_all(&dir);
    delete_namespace_while_the_controller_runs(&client, &ns).await;
}
