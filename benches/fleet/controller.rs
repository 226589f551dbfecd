//! The controller against a fleet of simulated daemons and a real API server (the one
//! `STEVEDORE_E2E_KUBECONFIG` names): `n` DockerTargets, ten DockerContainers pinned to
//! each. Measures the cold converge of a started controller, a steady minute (Docker and
//! API server writes, list calls, watches), memory, the latency of one edit, and a restart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use stevedore::api::{DockerContainer, DockerTarget};
use stevedore::converge::executor::DEFAULT_CONCURRENCY;

use super::common::cluster;
use super::common::sim::Simulator;
use super::{PER_TARGET, calls, calls_line, rss_kb, since, stevedore, writes};

/// How long the steady state is watched.
const STEADY: Duration = Duration::from_secs(60);
/// Edits timed one after the other while the fleet is steady.
const EDITS: usize = 20;
/// Where the controller serves its metrics (not read; it must listen somewhere).
const LISTEN: &str = "127.0.0.1:18089";

/// One row of the controller table.
pub struct Row {
    pub cold: f64,
    pub cold_running: f64,
    pub converged: bool,
    pub steady_docker_writes: u64,
    pub steady_lists_per_target: f64,
    pub steady_api_writes: BTreeMap<String, u64>,
    pub watches: u64,
    pub rss_empty: u64,
    pub rss_idle: u64,
    pub rss_managing: u64,
    pub edit_p50: f64,
    pub edit_p99: f64,
    pub cold_api_writes: BTreeMap<String, u64>,
    pub reconciles: u16,
    pub restart_writes: u64,
    pub restart_first_action: Option<f64>,
}

/// The API server's request counters and long-running requests, from its `/metrics`.
struct ApiCounters {
    /// Writes (every verb but GET, LIST, WATCH and CONNECT) to the stevedore.dev kinds,
    /// Events and Leases, by `verb resource[/subresource]`.
    writes: BTreeMap<String, u64>,
    /// Open watches of stevedore.dev resources.
    watches: u64,
}

async fn api_counters(client: &Client) -> ApiCounters {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("metrics request");
    let text = client
        .request_text(request)
        .await
        .expect("read the API server's /metrics");
    let mut writes = BTreeMap::new();
    let mut watches = 0;
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or_default();
        let label = |name: &str| {
            let key = format!("{name}=\"");
            series
                .split_once(&key)
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(v, _)| v.to_string())
                .unwrap_or_default()
        };
        if series.starts_with("apiserver_request_total{") {
            let verb = label("verb");
            if ["GET", "LIST", "WATCH", "CONNECT"].contains(&verb.as_str()) {
                continue;
            }
            let resource = label("resource");
            if ![
                "dockertargets",
                "dockercontainers",
                "registries",
                "events",
                "leases",
            ]
            .contains(&resource.as_str())
            {
                continue;
            }
            let subresource = label("subresource");
            let key = if subresource.is_empty() {
                format!("{verb} {resource}")
            } else {
                format!("{verb} {resource}/{subresource}")
            };
            *writes.entry(key).or_default() += value as u64;
        } else if series.starts_with("apiserver_longrunning_requests{")
            && label("verb") == "WATCH"
            && label("group") == "stevedore.dev"
        {
            watches += value as u64;
        }
    }
    ApiCounters { writes, watches }
}

/// DockerContainers at work on their daemons at once (`--max-concurrent-reconciles`):
/// `BENCH_FLEET_RECONCILES`, or the controller's default.
pub(super) fn reconciles() -> u16 {
    std::env::var("BENCH_FLEET_RECONCILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(stevedore::controller::context::DEFAULT_MAX_CONCURRENT_RECONCILES)
}

/// Starts a controller command with its warnings appended to a log file.
pub(super) trait SpawnLogging {
    fn spawn_logging_to(&mut self, log: &Path) -> Child;
}

impl SpawnLogging for Command {
    fn spawn_logging_to(&mut self, log: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("controller log");
        self.env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start stevedore controller")
    }
}

fn start_controller(kubeconfig: &str, namespace: &str, log: &Path) -> Child {
    stevedore()
        .args([
            "controller",
            "--leader-elect=false",
            "--namespace",
            namespace,
            "--metrics-address",
            LISTEN,
            "--manager",
            "bench-controller",
            "--max-concurrent-reconciles",
            &reconciles().to_string(),
            // So that the steady minute holds one resync of every object.
            "--resync",
            "60s",
        ])
        .env("KUBECONFIG", kubeconfig)
        .spawn_logging_to(log)
}

/// Stops the benchmark when the controller exited by itself (its log says why).
fn exited(controller: &mut Child, log: &Path) {
    if let Ok(Some(status)) = controller.try_wait() {
        panic!("the controller exited ({status}); see {}", log.display());
    }
}

pub(super) fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn starts(sim: &Simulator) -> Vec<u64> {
    (0..sim.len())
        .map(|i| {
            sim.daemon(i)
                .calls()
                .get("start")
                .copied()
                .unwrap_or_default()
        })
        .collect()
}

pub(super) fn running(sim: &Simulator) -> usize {
    (0..sim.len())
        .map(|i| sim.daemon(i).container_count())
        .sum()
}

pub(super) async fn create_all(client: &Client, namespace: &str, sim: &Simulator, image: &str) {
    create_targets(client, namespace, sim).await;
    create_containers(client, namespace, sim, image).await;
}

/// One DockerTarget per simulated daemon: `t<i>`, labelled `pool: fleet`.
async fn create_targets(client: &Client, namespace: &str, sim: &Simulator) {
    let targets = (0..sim.len()).map(|t| {
        json!({
            "apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerTarget",
            "metadata": {"name": format!("t{t}"), "labels": {"pool": "fleet"}},
            "spec": {"endpoint": sim.address(t)},
        })
    });
    create_each::<DockerTarget>(Api::namespaced(client.clone(), namespace), targets).await;
}

/// [`PER_TARGET`] DockerContainers pinned to each target: `t<i>-app<j>`.
async fn create_containers(client: &Client, namespace: &str, sim: &Simulator, image: &str) {
    let containers = (0..sim.len())
        .flat_map(|t| (0..PER_TARGET).map(move |i| (t, i)))
        .map(|(t, i)| {
            json!({
                "apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerContainer",
                "metadata": {"name": format!("t{t}-app{i}")},
                "spec": {"image": image, "stopTimeoutSeconds": 1,
                         "placement": {"target": format!("t{t}")}},
            })
        });
    create_each::<DockerContainer>(Api::namespaced(client.clone(), namespace), containers).await;
}

/// Whether every DockerTarget of `targets` reports Ready.
async fn all_ready(targets: &Api<DockerTarget>) -> bool {
    let Ok(list) = targets.list(&Default::default()).await else {
        return false;
    };
    list.items.iter().all(|t| {
        t.status
            .iter()
            .flat_map(|s| &s.conditions)
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Creates every object, 16 at a time.
async fn create_each<K>(api: Api<K>, objects: impl Iterator<Item = serde_json::Value>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    stream::iter(objects)
        .map(|object| {
            let api = api.clone();
            async move {
                let object: K = serde_json::from_value(object).expect("a valid object");
                api.create(&PostParams::default(), &object)
                    .await
                    .expect("create an object");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

/// Waits until `done` resolves true (checked every `every`) or `limit` passes; the time it
/// took.
async fn until_every<F: std::future::Future<Output = bool>>(
    limit: Duration,
    every: Duration,
    mut done: impl FnMut() -> F,
) -> Option<f64> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done().await {
            return Some(started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(every).await;
    }
    None
}

/// Waits until `done` holds (checked every 250 ms) or `limit` passes; the time it took.
pub(super) async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<f64> {
    until_every(limit, Duration::from_millis(250), || {
        std::future::ready(done())
    })
    .await
}

async fn edit(client: &Client, namespace: &str, name: &str, value: &str) {
    let containers: Api<DockerContainer> = Api::namespaced(client.clone(), namespace);
    let patch = json!({"spec": {"env": [{"name": "BENCH_EDIT", "value": value}]}});
    containers
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("edit a DockerContainer");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Takes the finalizers off every object of `namespace`, so that it can go without a
/// controller (the simulated daemons go with the benchmark).
pub(super) async fn release(client: &Client, namespace: &str) {
    unfinalize::<DockerContainer>(Api::namespaced(client.clone(), namespace)).await;
    unfinalize::<DockerTarget>(Api::namespaced(client.clone(), namespace)).await;
}

async fn unfinalize<K>(api: Api<K>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let names: Vec<String> = api
        .list_metadata(&Default::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter_map(|o| o.metadata.name)
                .collect()
        })
        .unwrap_or_default();
    let patch = json!({"metadata": {"finalizers": null}});
    stream::iter(names)
        .map(|name| {
            let (api, patch) = (api.clone(), &patch);
            async move {
                let _ = api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await;
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

/// Creates the namespace `name`.
pub(super) async fn create_namespace(api: &Api<Namespace>, name: &str) {
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns"),
    )
    .await
    .expect("create a namespace");
}

/// Runs the controller against `sim` (whose daemons are empty) and measures it.
pub async fn measure(kubeconfig: &str, sim: &Simulator, image: &str, work: &Path) -> Row {
    let (client, _) = cluster::connect("the controller fleet benchmark").await;
    cluster::install_crds(&client).await;
    let namespace = format!("bench-fleet-{}-{}", sim.len(), std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    create_namespace(&namespaces, &namespace).await;
    let n = sim.len();
    let log = work.join(format!("controller-{n}.log"));

    // Empty: the controller watching an empty namespace.
    let empty = start_controller(kubeconfig, &namespace, &log);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_empty = rss_kb(empty.id());
    stop(empty);

    // Idle: the controller with its fleet of targets, connected, and no container to
    // manage (what the standalone table calls idle too).
    create_targets(&client, &namespace, sim).await;
    let idle = start_controller(kubeconfig, &namespace, &log);
    let targets: Api<DockerTarget> = Api::namespaced(client.clone(), &namespace);
    let connected = until_every(Duration::from_secs(600), Duration::from_secs(1), || {
        all_ready(&targets)
    })
    .await;
    if connected.is_none() {
        eprintln!("controller {n}: not every target was Ready within 600 s");
    }
    // The heartbeats that follow the first ones settle the caches and streams.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let rss_idle = rss_kb(idle.id());
    stop(idle);

    create_containers(&client, &namespace, sim, image).await;

    // Cold: every container running and every DockerContainer's status written.
    let api_before = api_counters(&client).await;
    let mut controller = start_controller(kubeconfig, &namespace, &log);
    let started = Instant::now();
    let wanted = n * PER_TARGET;
    let running_at = until(Duration::from_secs(1800), || {
        exited(&mut controller, &log);
        running(sim) >= wanted
    })
    .await;
    let mut converged = running_at.is_some();
    let cold_running = running_at.unwrap_or(f64::NAN);
    let status_key = "APPLY dockercontainers/status".to_string();
    while converged {
        let now = api_counters(&client).await;
        let written = since(&now.writes, &api_before.writes)
            .get(&status_key)
            .copied()
            .unwrap_or_default();
        if written as usize >= wanted {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            converged = false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cold = started.elapsed().as_secs_f64();
    let cold_api_writes = since(&api_counters(&client).await.writes, &api_before.writes);
    eprintln!(
        "controller {n}: cold {cold:.1} s (running after {cold_running:.1} s; converged: {converged}), api writes {cold_api_writes:?}"
    );

    // Steady: a minute of nothing to do, after the requeues of the converge settled and
    // the targets' container counts were written (once two heartbeats agree on one).
    tokio::time::sleep(Duration::from_secs(40)).await;
    let (docker_before, lists_before) = calls(sim);
    let api_steady = api_counters(&client).await;
    tokio::time::sleep(STEADY).await;
    let (docker_after, lists_after) = calls(sim);
    let api_after = api_counters(&client).await;
    let docker = since(&docker_after, &docker_before);
    let lists: u64 = lists_after.iter().sum::<u64>() - lists_before.iter().sum::<u64>();
    let steady_api_writes = since(&api_after.writes, &api_steady.writes);
    let rss_managing = rss_kb(controller.id());
    eprintln!(
        "controller {n}: steady docker calls {}, api writes {steady_api_writes:?}",
        calls_line(&docker),
    );

    // One edit at a time, each timed until its replacement starts on its daemon.
    let mut latencies = Vec::with_capacity(EDITS);
    for e in 0..EDITS {
        let t = (e * 7919) % n;
        let before = starts(sim)[t];
        let sent = Instant::now();
        edit(
            &client,
            &namespace,
            &format!("t{t}-app{}", e % PER_TARGET),
            &e.to_string(),
        )
        .await;
        if until(Duration::from_secs(60), || starts(sim)[t] > before)
            .await
            .is_some()
        {
            latencies.push(sent.elapsed().as_secs_f64());
        }
    }
    latencies.sort_by(f64::total_cmp);
    let missed = EDITS - latencies.len();
    if missed > 0 {
        eprintln!("controller {n}: {missed} edits were not acted on within 60 s");
    }

    // Restart: stopped, one object edited while it is down, started again. Its first
    // action is that edit's replacement; nothing else is written on the daemons.
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop(controller);
    // The controller's watches are the ones its exit closed: counting the others before
    // it started would take in those kube-controller-manager opens later, once its
    // discovery finds the kinds just installed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let watches = api_after
        .watches
        .saturating_sub(api_counters(&client).await.watches);
    let changed = n / 2;
    edit(&client, &namespace, &format!("t{changed}-app0"), "restart").await;
    let others = |sim: &Simulator| -> Vec<BTreeMap<&'static str, u64>> {
        (0..n)
            .filter(|t| *t != changed)
            .map(|t| sim.daemon(t).calls())
            .collect()
    };
    let (docker_before, others_before) = (calls(sim).0, others(sim));
    let before = starts(sim)[changed];
    let controller = start_controller(kubeconfig, &namespace, &log);
    let restart_first_action =
        until(Duration::from_secs(120), || starts(sim)[changed] > before).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let restart_docker = since(&calls(sim).0, &docker_before);
    // Every daemon but the edited object's: nothing there may be written.
    let restart_writes = others(sim)
        .iter()
        .zip(&others_before)
        .map(|(after, before)| writes(&since(after, before)))
        .sum();
    eprintln!(
        "controller {n}: after restart {}, first action {restart_first_action:?}",
        calls_line(&restart_docker)
    );
    stop(controller);
    release(&client, &namespace).await;
    let _ = namespaces
        .delete(&namespace, &DeleteParams::background())
        .await;
    Row {
        cold,
        cold_running,
        converged,
        steady_docker_writes: writes(&docker),
        steady_lists_per_target: lists as f64 / n as f64,
        steady_api_writes,
        watches,
        rss_empty,
        rss_idle,
        rss_managing,
        edit_p50: percentile(&latencies, 50.0),
        edit_p99: percentile(&latencies, 99.0),
        cold_api_writes,
        reconciles: reconciles(),
        restart_writes,
        restart_first_action,
    }
}

/// The table's header.
pub fn header(report: &mut String) {
    let _ = writeln!(
        report,
        "\n### Controller mode (real API server)\n\n\
         `stevedore controller` (one replica, leader election off) against a real \
         kube-apiserver on this machine and the same simulated daemons: `n` DockerTargets and \
         {PER_TARGET} DockerContainers pinned to each, created before the controller starts. \
         Cold: until every container runs (running) and until, besides, every \
         DockerContainer's status was written (statuses). \
         Steady: {} s after the converge's requeues settled, with `--resync 60s` so that it \
         holds one resync of every object besides the heartbeats (every 15 s); watches are the \
         controller's own (the ones that closed when it stopped). API writes are the \
         API server's counts for the stevedore.dev kinds, Events and Leases; the controller \
         runs without leader election here, so the `PUT leases` are the API server's and \
         kube-controller-manager's own renewals. Edits: {EDITS} one after the \
         other, each until its replacement starts. Restart: the controller stopped, one object \
         edited, started again: its first action, and the Docker writes in its first 30 s \
         on every other daemon. Floors: the table above's (every daemon at once, \
         {DEFAULT_CONCURRENCY} at a time on each), and the floor at the controller's own \
         concurrency (that many containers created and started at a time over the whole \
         fleet, since each reconcile converges one DockerContainer). Memory: RSS of the controller with an empty namespace \
         (empty), with its targets connected and no DockerContainer (idle, as in the \
         standalone table), and managing the fleet; KB per container is managing over \
         idle.\n\n\
         | targets | DockerContainers | converging at once | floor at that concurrency | cold: running | / floor | / floor at that concurrency | cold: statuses | / floor | cold API writes | steady Docker writes | steady list calls per target | steady API writes | stevedore.dev watches | RSS empty | RSS idle | RSS managing | KB per container | edit p50 | edit p99 | restart: other Docker writes | restart: first action |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        STEADY.as_secs()
    );
}

/// One row of the table.
pub fn row(report: &mut String, n: usize, (floor, floor_at_once): (f64, f64), row: &Row) {
    let listing = |writes: &BTreeMap<String, u64>| {
        if writes.is_empty() {
            return "0".to_string();
        }
        writes
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let api = listing(&row.steady_api_writes);
    let per_container =
        row.rss_managing.saturating_sub(row.rss_idle) as f64 / (n * PER_TARGET) as f64;
    let _ = writeln!(
        report,
        "| {n} | {} | {} | {floor_at_once:.1} s | {:.1} s | {:.2}× | {:.2}× | {:.1} s{} | {:.2}× | {} | {} | {:.2} | {api} | {} | {} KB | {} KB | {} KB | {per_container:.1} | {:.2} s | {:.2} s | {} | {} |",
        n * PER_TARGET,
        row.reconciles,
        row.cold_running,
        row.cold_running / floor,
        row.cold_running / floor_at_once,
        row.cold,
        if row.converged {
            ""
        } else {
            " (did not converge)"
        },
        row.cold / floor,
        listing(&row.cold_api_writes),
        row.steady_docker_writes,
        row.steady_lists_per_target,
        row.watches,
        row.rss_empty,
        row.rss_idle,
        row.rss_managing,
        row.edit_p50,
        row.edit_p99,
        row.restart_writes,
        row.restart_first_action
            .map_or("none within 120 s".to_string(), |s| format!("{s:.2} s")),
    );
}
