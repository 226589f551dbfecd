//! Faults, for real: a daemon restarting mid-converge, Stevedore killed mid-rollout, a
//! container in a crash loop, and Secret values that must never show. Each test asserts the
//! no-loss, no-duplicate outcome, not only the absence of errors.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fixture::{Target, spec, unique};
use common::wait::{connected, no_duplicate_names, until};
use common::{TestEnv, hosts};
use serde_json::json;
use stevedore::converge::engine::LoopOptions;
use stevedore::converge::env::ResolvedEnv;
use stevedore::docker::{Call, ContainerState};
use stevedore::labels::{LABEL_NAMESPACE, LABEL_SPEC_HASH};

#[tokio::test]
async fn a_crash_looping_container_is_reported_and_backed_off_while_others_converge() {
    let env = TestEnv::load();
    let target = Target::new(connected(hosts::main(&env)).await);
    let crasher = spec(json!({"image": env.get("IMAGE_V1"),
        "command": ["sh", "-c", "echo crashed on purpose; exit 7"]}));
    let mut instances = target
        .instances("crasher", &crasher, &ResolvedEnv::new(), &[0])
        .await;
    let calm = spec(json!({"image": env.get("IMAGE_V1")}));
    let mut converging = target.spawn_loop(instances.clone(), LoopOptions::default());
    converging
        .reports
        .recv()
        .await
        .expect("first report")
        .expect("first converge");
    let calls_before = target.host.calls();

    // While it crashes, new work still goes through promptly.
    instances.extend(
        target
            .instances("calm", &calm, &ResolvedEnv::new(), &[0])
            .await,
    );
    let asked = Instant::now();
    converging.want(instances.clone());
    let uid = ("stevedore.dev/target", target.identity.uid.as_str());
    until(
        &target.host,
        uid,
        Duration::from_secs(10),
        "the calm container",
        |l| {
            l.iter()
                .any(|c| c.name.ends_with("_calm_0") && c.state == ContainerState::Running)
        },
    )
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "other work waited {:?}",
        asked.elapsed()
    );

    // Over a few seconds the crasher dies many times (the daemon restarts it), but
    // Stevedore's own starts are held back by its back-off.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let starts = target.host.calls().since(&calls_before).get(Call::Start);
    assert!(
        starts <= 3,
        "Stevedore started the crasher {starts} times in 4 s"
    );

    let observed = target.containers().await;
    let statuses = stevedore::converge::status::instance_statuses(
        &target.host,
        "main",
        &[&instances[0]],
        &observed,
    )
    .await;
    let crasher = &statuses[0];
    assert!(crasher.restart_count >= 1, "{crasher:?}");
    // Caught between runs (almost always), the last exit code and log lines are there.
    if crasher.state != "running" {
        assert_eq!(crasher.exit_code, Some(7), "{crasher:?}");
        assert!(
            crasher
                .message
                .as_deref()
                .is_some_and(|m| m.contains("crashed on purpose")),
            "{crasher:?}"
        );
    }
    converging.stop().await;
    target.cleanup().await;
}

fn manifests(dir: &std::path::Path, env: &TestEnv, mode: &str, replicas: u32) {
    std::fs::write(
        dir.join("target.yaml"),
        format!(
            "apiVersion: stevedore.dev/v1alpha1\nkind: DockerTarget\nmetadata:\n  name: edge\n  labels: {{site: edge}}\nspec:\n  endpoint: {}\n",
            env.get("SECOND_HOST")
        ),
    )
    .expect("write target");
    std::fs::write(
        dir.join("app.yaml"),
        format!(
            r#"apiVersion: v1
kind: Secret
metadata:
  name: app-secret
stringData:
  token: {mode}-very-secret-token-value
---
apiVersion: stevedore.dev/v1alpha1
kind: DockerContainer
metadata:
  name: app
spec:
  image: {image}
  env:
    - name: TOKEN
      valueFrom: {{secretKeyRef: {{name: app-secret, key: token}}}}
  healthCheck:
    command: ["true"]
    intervalSeconds: 1
    timeoutSeconds: 1
    retries: 1
  stopTimeoutSeconds: 1
  placement:
    targetSelector: {{matchLabels: {{site: edge}}}}
    replicas: {replicas}
"#,
            image = env.get("IMAGE_V1")
        ),
    )
    .expect("write app");
}

#[tokio::test]
async fn killing_stevedore_mid_rollout_is_finished_by_the_next_run_without_duplicates_or_orphans() {
    let env = TestEnv::load();
    let host = connected(hosts::second(&env)).await;
    let dir = std::env::temp_dir().join(unique("stevedore-crash"));
    std::fs::create_dir_all(&dir).expect("dir");
    let namespace = unique("crash");
    let manager = unique("manager");
    let stevedore = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stevedore"));
        command.args(args).arg("-f").arg(&dir).args([
            "--namespace",
            &namespace,
            "--manager",
            &manager,
        ]);
        command
    };
    manifests(&dir, &env, "first", 10);
    let first = stevedore(&["run", "--once", "--no-progress", "--timeout", "90s"])
        .output()
        .expect("first run");
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let label = (LABEL_NAMESPACE, namespace.as_str());
    let old = until(
        &host,
        label,
        Duration::from_secs(5),
        "ten containers",
        |l| l.len() == 10,
    )
    .await;
    let old_hash = old[0]
        .labels
        .get(LABEL_SPEC_HASH)
        .expect("a spec hash")
        .to_string();

    // Rotate the Secret and roll out one container at a time; kill Stevedore halfway.
    manifests(&dir, &env, "second", 10);
    // Stopped on drop too, so a failed check leaves no stray run converging behind it.
    let mut child = common::workspace::Watcher(
        stevedore(&["run", "--no-progress", "--concurrency", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the rollout"),
    );
    until(
        &host,
        label,
        Duration::from_secs(60),
        "part of the rollout",
        |l| {
            let new = l
                .iter()
                .filter(|c| c.labels.get(LABEL_SPEC_HASH) != Some(&old_hash))
                .count();
            (3..10).contains(&new)
        },
    )
    .await;
    child.0.kill().expect("SIGKILL stevedore");
    let _ = child.0.wait();

    let resumed = stevedore(&["run", "--once", "--no-progress", "--timeout", "90s"])
        .output()
        .expect("next run");
    assert_eq!(
        resumed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let now = until(
        &host,
        label,
        Duration::from_secs(10),
        "the finished rollout",
        |l| common::serving(l.to_vec()).len() == 10,
    )
    .await;
    let now = common::serving(now);
    assert!(no_duplicate_names(&now));
    let expected: HashSet<String> = (0..10).map(|i| format!("{namespace}_app_{i}")).collect();
    let names: HashSet<String> = now.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, expected, "leftovers or missing replicas");
    let hashes: HashSet<&str> = now
        .iter()
        .filter_map(|c| c.labels.get(LABEL_SPEC_HASH))
        .collect();
    assert_eq!(hashes.len(), 1, "the rollout is not complete");
    assert!(!hashes.contains(old_hash.as_str()));

    // The Secret's value never shows in what Stevedore prints or in container labels.
    let plan = stevedore(&["plan"]).output().expect("plan");
    let status = stevedore(&["status", "-o", "yaml"])
        .output()
        .expect("status");
    let printed: String = [&first, &resumed, &plan, &status]
        .iter()
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .collect();
    assert!(printed.contains("app"), "nothing was printed");
    assert!(
        !printed.contains("very-secret-token-value"),
        "a Secret value was printed"
    );
    let labels: BTreeMap<&str, &str> = now.iter().flat_map(|c| c.labels.iter()).collect();
    assert!(
        labels
            .values()
            .all(|v| !v.contains("very-secret-token-value")),
        "a Secret value is in a label"
    );

    // Every container of the namespace, the replicas' previous ones included.
    common::remove_labelled(&host, LABEL_NAMESPACE, &namespace).await;
    let _ = std::fs::remove_dir_all(&dir);
}
