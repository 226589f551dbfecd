//! Stevedore side by side with the daemon's floor and docker-compose, on this machine's
//! daemons (after `hack/test-env.sh up`). Prints a markdown report; `hack/bench.sh` writes it
//! to BENCHMARKS.md. A benchmark, not a test: it never fails on a number.
//!
//! Sizes and repetitions: `BENCH_SIZES` (default `10,50,100`), `BENCH_REPS` (default 3).

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fixture::{Target, spec, unique};
use common::wait::connected;
use common::{TestEnv, hosts};
use futures::{StreamExt, stream};
use serde_json::json;
use stevedore::converge::engine::LoopOptions;
use stevedore::converge::env::{EnvOrigin, EnvValue, ResolvedEnv};
use stevedore::converge::model::DesiredInstance;
use stevedore::docker::{CallCounts, ContainerState, DockerHost};
use stevedore::labels::LABEL_MANAGER;

const CONCURRENCY: usize = 4;
const PORT_BASE: i32 = 32000;

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

fn percentile(mut samples: Vec<f64>, p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

/// Removes every container carrying `label=value` on `host`.
async fn clean(host: &DockerHost, label: &str, value: &str) {
    let list = host.list_labelled(label, value).await.unwrap_or_default();
    let removals = list.iter().map(|c| async move {
        let _ = host.remove(&c.id, &c.name).await;
    });
    futures::future::join_all(removals).await;
}

fn stevedore() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stevedore"))
}

/// Manifests: one target and `n` web containers, each publishing its own port.
fn write_manifests(dir: &Path, env: &TestEnv, n: usize, mode: &str) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("manifest dir");
    let mut text = format!(
        "apiVersion: stevedore.dev/v1alpha1\nkind: DockerTarget\nmetadata:\n  name: main\nspec:\n  endpoint: {}\n",
        env.get("MAIN_HOST")
    );
    for i in 0..n {
        let _ = write!(
            text,
            "---\napiVersion: stevedore.dev/v1alpha1\nkind: DockerContainer\nmetadata:\n  name: web-{i}\nspec:\n  image: {}\n  env: [{{name: MODE, value: \"{mode}\"}}]\n  ports: [{{containerPort: 8080, hostPort: {}, hostIP: 127.0.0.1}}]\n  stopTimeoutSeconds: 1\n  placement: {{target: main}}\n",
            env.get("IMAGE_V1"),
            PORT_BASE + i as i32
        );
    }
    std::fs::write(dir.join("all.yaml"), text).expect("write manifests");
}

fn write_compose(dir: &Path, env: &TestEnv, n: usize) -> PathBuf {
    std::fs::create_dir_all(dir).expect("compose dir");
    let mut text = String::from("version: \"2.4\"\nservices:\n");
    for i in 0..n {
        let _ = write!(
            text,
            "  web-{i}:\n    image: {}\n    network_mode: bridge\n    environment: [MODE=a]\n    ports: [\"127.0.0.1:{}:8080\"]\n",
            env.get("IMAGE_V1"),
            PORT_BASE + i as i32
        );
    }
    let path = dir.join("docker-compose.yml");
    std::fs::write(&path, text).expect("write compose file");
    path
}

fn timed(command: &mut Command) -> f64 {
    let started = Instant::now();
    let status = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run command");
    let elapsed = started.elapsed().as_secs_f64();
    if !status.success() {
        eprintln!("warning: {command:?} exited with {status}");
    }
    elapsed
}

/// The floor: the same create bodies Stevedore sends, created and started directly, with
/// the same concurrency.
async fn floor(host: &DockerHost, instances: &[DesiredInstance]) -> f64 {
    let started = Instant::now();
    stream::iter(instances)
        .map(|d| async move {
            if let Ok(id) = host.create(&d.name, d.create_body()).await {
                let _ = host.start(&id, &d.name).await;
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    started.elapsed().as_secs_f64()
}

/// Instances equal to what the manifests of `write_manifests` make.
async fn floor_instances(target: &Target, env: &TestEnv, n: usize) -> Vec<DesiredInstance> {
    let mut all = Vec::new();
    let values = ResolvedEnv::from([(
        "MODE".to_string(),
        EnvValue {
            value: "a".into(),
            origin: EnvOrigin::Literal,
        },
    )]);
    for i in 0..n {
        let s = spec(
            json!({"image": env.get("IMAGE_V1"), "env": [{"name": "MODE", "value": "a"}],
            "ports": [{"containerPort": 8080, "hostPort": PORT_BASE + i as i32, "hostIP": "127.0.0.1"}],
            "stopTimeoutSeconds": 1}),
        );
        all.extend(
            target
                .instances(&format!("web-{i}"), &s, &values, &[0])
                .await,
        );
    }
    all
}

fn calls_line(calls: &CallCounts) -> String {
    if calls.0.is_empty() {
        return "none".into();
    }
    calls
        .0
        .iter()
        .map(|(call, n)| format!("{call:?} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let env = TestEnv::load();
    let sizes = env_list("BENCH_SIZES", "10,50,100");
    let reps = env_list("BENCH_REPS", "3")
        .first()
        .copied()
        .unwrap_or(3)
        .max(1);
    let main_host = connected(hosts::main(&env)).await;
    let info = main_host.server_info().await.expect("server info");
    let work = std::env::temp_dir().join(unique("stevedore-bench"));
    let mut report = String::new();
    let _ = writeln!(
        report,
        "# Benchmarks\n\nMachine: {} cores, Docker {} (API {}), storage as configured on this machine. \
         Medians of {reps} runs; ratios are Stevedore's time over the other's (lower is better). \
         Reproduce: `hack/test-env.sh up && hack/bench.sh`.\n",
        info.cpus, info.version, info.api_version
    );

    // 1. Cold converge.
    let _ = writeln!(
        report,
        "## 1. Cold converge of N containers (busybox httpd, one published port each)\n\n\
         | N | floor (create+start, {CONCURRENCY} at a time) | `stevedore run --once` | `docker-compose up -d` | stevedore / floor | stevedore / compose |\n|---|---|---|---|---|---|"
    );
    let floor_target = Target::new(main_host.clone());
    let mut targets = Vec::new();
    let manifests = work.join("manifests");
    let compose_dir = work.join("compose");
    for &n in &sizes {
        let (mut floors, mut runs, mut composes) = (Vec::new(), Vec::new(), Vec::new());
        let instances = floor_instances(&floor_target, &env, n).await;
        write_manifests(&manifests, &env, n, "a");
        let compose_file = write_compose(&compose_dir, &env, n);
        for _ in 0..reps {
            floors.push(floor(&main_host, &instances).await);
            clean(
                &main_host,
                "stevedore.dev/target",
                &floor_target.identity.uid,
            )
            .await;

            runs.push(timed(
                stevedore()
                    .args(["run", "--once", "--no-progress", "--manager", "bench", "-f"])
                    .arg(&manifests),
            ));
            clean(&main_host, LABEL_MANAGER, "bench").await;

            composes.push(timed(
                Command::new("docker-compose")
                    // docker-compose 1.29 nests its parallel calls (a slot per service, and
                    // more inside); a limit below about 2×N deadlocks it. Give it room: its
                    // own parallelism, without the deadlock.
                    .env("COMPOSE_PARALLEL_LIMIT", (2 * n + 16).max(64).to_string())
                    .env("COMPOSE_HTTP_TIMEOUT", "300")
                    .arg("-f")
                    .arg(&compose_file)
                    .args(["-p", "stevedorebench", "up", "-d"]),
            ));
            clean(&main_host, "com.docker.compose.project", "stevedorebench").await;
        }
        let (f, r, c) = (median(floors), median(runs), median(composes));
        let _ = writeln!(
            report,
            "| {n} | {f:.2} s | {r:.2} s | {c:.2} s | {:.2}× | {:.2}× |",
            r / f,
            r / c
        );
        eprintln!("cold converge n={n}: floor {f:.2}s stevedore {r:.2}s compose {c:.2}s");
        targets.push((n, r / f, r / c));
    }
    for (n, floor_ratio, compose_ratio) in &targets {
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        let _ = writeln!(
            report,
            "\nTargets at N = {n}: within 1.10× of the floor — {} ({floor_ratio:.2}×); no slower than docker-compose — {} ({compose_ratio:.2}×).",
            verdict(*floor_ratio <= 1.10),
            verdict(*compose_ratio <= 1.0)
        );
    }

    // 2 and 3. No-op converge and one change, through the engine with counted calls.
    let n = 100;
    let mut target = Target::new(main_host.clone());
    let instances = floor_instances(&target, &env, n).await;
    target.converge(instances.clone()).await;
    let before = target.host.calls();
    let started = Instant::now();
    let noop = target.converge(instances.clone()).await;
    let noop_time = started.elapsed().as_secs_f64();
    let noop_calls = target.host.calls().since(&before);
    let mut changed = instances.clone();
    let one = spec(
        json!({"image": env.get("IMAGE_V1"), "env": [{"name": "MODE", "value": "b"}],
        "ports": [{"containerPort": 8080, "hostPort": PORT_BASE + 7, "hostIP": "127.0.0.1"}],
        "stopTimeoutSeconds": 1}),
    );
    let values = ResolvedEnv::from([(
        "MODE".to_string(),
        EnvValue {
            value: "b".into(),
            origin: EnvOrigin::Literal,
        },
    )]);
    changed[7] = target
        .instances("web-7", &one, &values, &[0])
        .await
        .remove(0);
    let before = target.host.calls();
    let started = Instant::now();
    let change = target.converge(changed.clone()).await;
    let change_time = started.elapsed().as_secs_f64();
    let change_calls = target.host.calls().since(&before);
    let replaced = change.plan.actions.len();
    let _ = writeln!(
        report,
        "\n## 2. No-op converge of {n} containers\n\n{noop_time:.3} s; Docker calls: {} \
         (mutating: {}); actions planned: {}.\n\n## 3. One field of one container out of {n} changed\n\n\
         {change_time:.3} s; actions: {replaced} (`{}`); Docker calls: {}.",
        calls_line(&noop_calls),
        noop_calls.mutating(),
        noop.plan.actions.len(),
        change
            .plan
            .actions
            .first()
            .map(|a| a.reason().to_string())
            .unwrap_or_default(),
        calls_line(&change_calls)
    );

    // 4. Drift repair latency in watching mode.
    let mut converging = target.spawn_loop(
        changed.clone(),
        LoopOptions {
            resync_interval: Duration::from_secs(3600),
            ..LoopOptions::default()
        },
    );
    let _ = converging.reports.recv().await;
    let latency = |how: &'static str| {
        let host = target.host.clone();
        let uid = target.identity.uid.clone();
        let name = changed[3].name.clone();
        async move {
            let mut samples = Vec::new();
            for _ in 0..20 {
                let list = host
                    .list_labelled("stevedore.dev/target", &uid)
                    .await
                    .unwrap_or_default();
                let Some(c) = list
                    .iter()
                    .find(|c| c.name == name && c.state == ContainerState::Running)
                else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let started = Instant::now();
                let _ = Command::new("docker")
                    .args(["-H", "unix:///var/run/docker.sock", how])
                    .args(if how == "rm" { vec!["-f"] } else { vec![] })
                    .arg(&c.id)
                    .stdout(Stdio::null())
                    .status();
                loop {
                    let list = host
                        .list_labelled("stevedore.dev/target", &uid)
                        .await
                        .unwrap_or_default();
                    if list.iter().any(|x| {
                        x.name == name
                            && x.state == ContainerState::Running
                            && (how != "rm" || x.id != c.id)
                    }) && started.elapsed() > Duration::from_millis(20)
                    {
                        break;
                    }
                    if started.elapsed() > Duration::from_secs(30) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                samples.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            samples
        }
    };
    let removed = latency("rm").await;
    let killed = latency("kill").await;
    converging.stop().await;
    let _ = writeln!(
        report,
        "\n## 4. Drift repair latency (watching, {} trials each, until running again)\n\n\
         | by hand | p50 | p99 |\n|---|---|---|\n| `docker rm -f` | {:.0} ms | {:.0} ms |\n| `docker kill` | {:.0} ms | {:.0} ms |",
        removed.len(),
        percentile(removed.clone(), 0.5),
        percentile(removed, 0.99),
        percentile(killed.clone(), 0.5),
        percentile(killed, 0.99)
    );
    target.cleanup().await;

    // 5. Memory of `stevedore run` by managed containers.
    let _ = writeln!(
        report,
        "\n## 5. Memory of `stevedore run` (watching)\n\n| containers | peak RSS | steady RSS | KB per container (steady, over 0) |\n|---|---|---|---|"
    );
    let mut base = None;
    for count in [0usize, 100, 500] {
        let dir = work.join(format!("memory-{count}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        // Five targets on the same daemon, each with its own identity.
        let mut text = String::new();
        for t in 0..5 {
            let _ = write!(
                text,
                "---\napiVersion: stevedore.dev/v1alpha1\nkind: DockerTarget\nmetadata:\n  name: t{t}\n  labels: {{pool: bench}}\nspec:\n  endpoint: {}\n",
                env.get("MAIN_HOST")
            );
        }
        if count > 0 {
            let _ = write!(
                text,
                "---\napiVersion: stevedore.dev/v1alpha1\nkind: DockerContainer\nmetadata:\n  name: sleeper\nspec:\n  image: {}\n  stopTimeoutSeconds: 1\n  placement:\n    targetSelector: {{matchLabels: {{pool: bench}}}}\n    replicas: {count}\n",
                env.get("IMAGE_V1")
            );
        }
        std::fs::write(dir.join("all.yaml"), text).expect("write");
        let mut child = stevedore()
            .args(["run", "--no-progress", "--manager", "bench-memory", "-f"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stevedore run");
        let started = Instant::now();
        loop {
            let list = main_host
                .list_labelled(LABEL_MANAGER, "bench-memory")
                .await
                .unwrap_or_default();
            let running = list
                .iter()
                .filter(|c| c.state == ContainerState::Running)
                .count();
            if running >= count || started.elapsed() > Duration::from_secs(600) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let steady = rss_kb(child.id(), "VmRSS:");
        let peak = rss_kb(child.id(), "VmHWM:");
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let _ = child.wait();
        clean(&main_host, LABEL_MANAGER, "bench-memory").await;
        let per = match (count, base) {
            (0, _) => {
                base = Some(steady);
                "—".to_string()
            }
            (n, Some(b)) => format!("{:.1}", (steady.saturating_sub(b)) as f64 / n as f64),
            _ => "—".into(),
        };
        let _ = writeln!(report, "| {count} | {} KB | {steady} KB | {per} |", peak);
        eprintln!("memory {count}: peak {peak} KB steady {steady} KB");
    }

    // 6. Many targets.
    let dir = work.join("many");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let mut text = String::new();
    for t in 0..50 {
        let endpoint = if t % 2 == 0 {
            env.get("MAIN_HOST")
        } else {
            env.get("SECOND_HOST")
        };
        let _ = write!(
            text,
            "---\napiVersion: stevedore.dev/v1alpha1\nkind: DockerTarget\nmetadata:\n  name: t{t}\nspec:\n  endpoint: {endpoint}\n"
        );
    }
    // A pin places one replica, so ten pinned objects per target.
    for t in 0..50 {
        for k in 0..10 {
            let _ = write!(
                text,
                "---\napiVersion: stevedore.dev/v1alpha1\nkind: DockerContainer\nmetadata:\n  name: c{t}-{k}\nspec:\n  image: {}\n  stopTimeoutSeconds: 1\n  placement: {{target: t{t}}}\n",
                env.get("IMAGE_V1")
            );
        }
    }
    std::fs::write(dir.join("all.yaml"), text).expect("write");
    let second_host = connected(hosts::second(&env)).await;
    let cold = timed(
        stevedore()
            .args([
                "run",
                "--once",
                "--no-progress",
                "--timeout",
                "600s",
                "--manager",
                "bench-many",
                "-f",
            ])
            .arg(&dir),
    );
    let noop = timed(
        stevedore()
            .args([
                "run",
                "--once",
                "--no-progress",
                "--manager",
                "bench-many",
                "-f",
            ])
            .arg(&dir),
    );
    clean(&main_host, LABEL_MANAGER, "bench-many").await;
    clean(&second_host, LABEL_MANAGER, "bench-many").await;
    let _ = writeln!(
        report,
        "\n## 6. Many targets: 50 targets (alternating over two daemons), 10 containers each\n\n\
         Cold `run --once`: {cold:.2} s. No-op `run --once` afterwards (connect, list, plan, status): {noop:.2} s."
    );
    let _ = std::fs::remove_dir_all(&work);
    print!("{report}");
}
