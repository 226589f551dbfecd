//! Stevedore (standalone mode) against fleets of simulated Docker daemons
//! (`tests/it/common/sim`): how time, Docker calls and memory grow with the number of
//! targets, each holding ten containers. Prints a markdown report; `hack/bench.sh` appends
//! it to BENCHMARKS.md. A benchmark, not a test: it never fails on a number.
//!
//! Sizes: `BENCH_FLEET_SIZES` (default `10,100,1000` targets). With `STEVEDORE_E2E_KUBECONFIG`
//! naming a real API server, the controller is measured too (`controller`), at
//! `BENCH_FLEET_CONTROLLER_SIZES` (default `10,100,1000` targets), and three sharded
//! replicas (`shards`) at `BENCH_FLEET_SHARDED_SIZES` (default `1000`).

#[path = "../tests/it/common/mod.rs"]
mod common;
#[path = "fleet/controller.rs"]
mod controller;
#[path = "fleet/shards.rs"]
mod shards;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestEnv;
use common::sim::{Profile, Simulator, harness_world};
use futures::future::join_all;
use futures::{StreamExt, stream};
use stevedore::converge::executor::DEFAULT_CONCURRENCY;
use stevedore::docker::DockerHost;

/// Containers per target.
const PER_TARGET: usize = 10;
/// The calls that change a daemon.
const WRITES: [&str; 8] = [
    "create", "start", "stop", "kill", "remove", "rename", "update", "pull",
];

fn sizes(variable: &str, default: &str) -> Vec<usize> {
    std::env::var(variable)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn stevedore() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stevedore"))
}

/// Every daemon's calls, summed per kind, and the list calls of each.
fn calls(sim: &Simulator) -> (BTreeMap<&'static str, u64>, Vec<u64>) {
    let mut total = BTreeMap::new();
    let mut lists = Vec::with_capacity(sim.len());
    for i in 0..sim.len() {
        let calls = sim.daemon(i).calls();
        lists.push(calls.get("list").copied().unwrap_or_default());
        for (call, count) in calls {
            *total.entry(call).or_default() += count;
        }
    }
    (total, lists)
}

/// What each counter grew by between two readings (counters that did not grow left out).
fn since<K: Ord + Clone>(after: &BTreeMap<K, u64>, before: &BTreeMap<K, u64>) -> BTreeMap<K, u64> {
    after
        .iter()
        .map(|(key, n)| {
            let then = before.get(key).copied().unwrap_or_default();
            (key.clone(), n.saturating_sub(then))
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn writes(calls: &BTreeMap<&'static str, u64>) -> u64 {
    WRITES.iter().filter_map(|w| calls.get(w)).sum()
}

fn calls_line(calls: &BTreeMap<&'static str, u64>) -> String {
    calls
        .iter()
        .map(|(call, n)| format!("{call} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Creates and starts the floor's container `i` on the daemon `t` of `hosts`.
async fn create_and_start(hosts: &[DockerHost], (t, i): (usize, usize), image: &str) {
    let body = bollard::models::ContainerCreateBody {
        image: Some(image.to_string()),
        ..Default::default()
    };
    let name = format!("floor-{t}-{i}");
    let id = hosts[t].create(&name, body).await.expect("floor create");
    hosts[t].start(&id, &name).await.expect("floor start");
}

/// Removes every container a floor made on `hosts`, every daemon at once.
async fn remove_floor_containers(hosts: &[DockerHost]) {
    join_all(hosts.iter().enumerate().map(|(t, host)| async move {
        for i in 0..PER_TARGET {
            let name = format!("floor-{t}-{i}");
            host.remove(&name, &name).await.expect("floor remove");
        }
    }))
    .await;
}

/// The simulated daemons' own floor: on every daemon at once, create and start
/// `PER_TARGET` containers, `DEFAULT_CONCURRENCY` at a time (what Stevedore's executor
/// runs on one target), through the same client; then remove them.
async fn floor(hosts: &[DockerHost], image: &str) -> f64 {
    let started = Instant::now();
    join_all((0..hosts.len()).map(|t| {
        stream::iter(0..PER_TARGET)
            .map(move |i| create_and_start(hosts, (t, i), image))
            .buffer_unordered(DEFAULT_CONCURRENCY)
            .collect::<Vec<_>>()
    }))
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    remove_floor_containers(hosts).await;
    elapsed
}

/// The floor at a concurrency fixed for the whole fleet: `PER_TARGET` containers on every
/// daemon created and started, `at_once` of them at a time over all daemons (what the
/// controller's DockerContainers at work on their daemons at once allow it, one container
/// each); then removed.
async fn floor_fleet_wide(hosts: &[DockerHost], image: &str, at_once: usize) -> f64 {
    let started = Instant::now();
    stream::iter((0..hosts.len()).flat_map(|t| (0..PER_TARGET).map(move |i| (t, i))))
        .map(|container| create_and_start(hosts, container, image))
        .buffer_unordered(at_once)
        .collect::<Vec<_>>()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    remove_floor_containers(hosts).await;
    elapsed
}

/// The connections to every daemon of `sim`, made for a floor.
async fn connect_all(sim: &Simulator) -> Vec<DockerHost> {
    join_all(
        (0..sim.len()).map(|i| {
            let address = sim.address(i);
            async move {
                common::wait::connected((common::hosts::spec(&address), Default::default())).await
            }
        }),
    )
    .await
}

/// The floor of every daemon of `sim` (see [`floor`]), through connections made for it.
async fn fleet_floor(sim: &Simulator, image: &str) -> f64 {
    floor(&connect_all(sim).await, image).await
}

fn write_manifests(dir: &Path, sim: &Simulator, image: &str, with_containers: bool) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("manifest dir");
    let mut text = String::new();
    for t in 0..sim.len() {
        let _ = write!(
            text,
            "---\napiVersion: stevedore.dev/v1alpha1\nkind: DockerTarget\nmetadata:\n  name: t{t}\n  labels: {{pool: fleet}}\nspec:\n  endpoint: {}\n",
            sim.address(t)
        );
    }
    if with_containers {
        for app in 0..PER_TARGET {
            let _ = write!(
                text,
                "---\napiVersion: stevedore.dev/v1alpha1\nkind: DockerContainer\nmetadata:\n  name: app{app}\nspec:\n  image: {image}\n  stopTimeoutSeconds: 1\n  placement:\n    targetSelector: {{matchLabels: {{pool: fleet}}}}\n    replicas: {}\n",
                sim.len()
            );
        }
    }
    std::fs::write(dir.join("fleet.yaml"), text).expect("write manifests");
}

fn run_once(dir: &Path) -> (f64, bool) {
    let started = Instant::now();
    let status = stevedore()
        .args([
            "run",
            "--once",
            "--no-progress",
            "--timeout",
            "900s",
            "--manager",
            "bench-fleet",
            "-f",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run stevedore");
    (started.elapsed().as_secs_f64(), status.success())
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_default()
}

/// RSS of a watching `stevedore run` once it has settled (its daemons' list calls stopped
/// growing for three seconds after at least one list each).
fn watching_rss(dir: &Path, sim: &Simulator) -> u64 {
    let before = calls(sim).1;
    let mut child = stevedore()
        .args(["run", "--no-progress", "--manager", "bench-fleet", "-f"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start stevedore run");
    let started = Instant::now();
    let mut last = Vec::new();
    let mut quiet_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let lists = calls(sim).1;
        let all_listed = lists.iter().zip(&before).all(|(now, then)| now > then);
        if lists != last {
            last = lists;
            quiet_since = Instant::now();
        } else if all_listed && quiet_since.elapsed() >= Duration::from_secs(3) {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            break;
        }
    }
    let rss = rss_kb(child.id());
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
    rss
}

#[tokio::main]
async fn main() {
    let env = TestEnv::load();
    let (images, registry) = harness_world(&env);
    let image = env.get("IMAGE_V1");
    let work = std::env::temp_dir().join(format!("stevedore-bench-fleet-{}", std::process::id()));
    let profile = Profile::docker_floor();
    let mut report = String::new();
    let _ = writeln!(
        report,
        "\n## 7. Fleets of simulated daemons ({PER_TARGET} containers per target, standalone)\n\n\
         Simulated Docker daemons (`tests/it/common/sim`, which passes the engine scenarios \
         unchanged) with per-call latencies from Docker 20.10's floor here: {}. The floor \
         creates and starts {PER_TARGET} containers on every daemon at once, \
         {DEFAULT_CONCURRENCY} at a time per daemon (Stevedore's executor concurrency). \
         Memory is a watching `stevedore run` once settled, over the same process with the \
         targets and no containers.\n\n\
         | targets | containers | floor | cold `run --once` | / floor | no-op `run --once` | no-op list calls per target (min–max) | no-op writes | RSS idle | RSS managing | KB per container |\n\
         |---|---|---|---|---|---|---|---|---|---|---|",
        ["create", "start", "stop", "remove", "list", "inspect"]
            .iter()
            .map(|c| format!("{c} {} ms", profile.latency(c).as_millis()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let simulate = |name: String, n: usize| {
        Simulator::start(
            &work.join(name),
            n,
            &images,
            registry.clone(),
            profile.clone(),
        )
    };
    for n in sizes("BENCH_FLEET_SIZES", "10,100,1000") {
        let sim = simulate(format!("sim-{n}"), n);
        let floor = fleet_floor(&sim, &image).await;

        let dir = work.join(format!("manifests-{n}"));
        write_manifests(&dir, &sim, &image, false);
        let idle = watching_rss(&dir, &sim);

        write_manifests(&dir, &sim, &image, true);
        let (fresh, _) = calls(&sim);
        let (cold, cold_ok) = run_once(&dir);
        let cold_calls = since(&calls(&sim).0, &fresh);
        let made: usize = (0..n).map(|i| sim.daemon(i).container_count()).sum();
        let (before, lists_before) = calls(&sim);
        let (noop, noop_ok) = run_once(&dir);
        let (after, lists_after) = calls(&sim);
        let noop_calls = since(&after, &before);
        let per_target: Vec<u64> = lists_after
            .iter()
            .zip(&lists_before)
            .map(|(a, b)| a - b)
            .collect();
        let (min, max) = (
            per_target.iter().min().copied().unwrap_or_default(),
            per_target.iter().max().copied().unwrap_or_default(),
        );
        let managing = watching_rss(&dir, &sim);
        let per_container = managing.saturating_sub(idle) as f64 / made.max(1) as f64;
        let note = |ok: bool| if ok { "" } else { " (exit ≠ 0)" };
        let _ = writeln!(
            report,
            "| {n} | {made} | {floor:.2} s | {cold:.2} s{} | {:.2}× | {noop:.2} s{} | {min}–{max} | {} | {idle} KB | {managing} KB | {per_container:.1} |",
            note(cold_ok),
            cold / floor,
            note(noop_ok),
            writes(&noop_calls),
        );
        eprintln!(
            "fleet {n}: floor {floor:.2} s, cold {cold:.2} s ({cold_ok}), cold calls {}, no-op {noop:.2} s ({noop_ok}), calls {}, rss {idle}/{managing} KB",
            calls_line(&cold_calls),
            calls_line(&noop_calls)
        );
    }
    if let Ok(kubeconfig) = std::env::var("STEVEDORE_E2E_KUBECONFIG") {
        controller::header(&mut report);
        for n in sizes("BENCH_FLEET_CONTROLLER_SIZES", "10,100,1000") {
            let sim = simulate(format!("sim-controller-{n}"), n);
            // One set of connections serves both floors.
            let hosts = connect_all(&sim).await;
            let fleet_wide = floor(&hosts, &image).await;
            let at_once = usize::from(controller::reconciles());
            let floor_at_once = floor_fleet_wide(&hosts, &image, at_once).await;
            drop(hosts);
            let row = controller::measure(&kubeconfig, &sim, &image, &work).await;
            controller::row(&mut report, n, (fleet_wide, floor_at_once), &row);
        }
        shards::header(&mut report);
        for n in sizes("BENCH_FLEET_SHARDED_SIZES", "1000") {
            let sim = simulate(format!("sim-shards-{n}"), n);
            let row = shards::measure(&kubeconfig, &sim, &image, &work).await;
            shards::row(&mut report, n, &row);
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    print!("{report}");
}
