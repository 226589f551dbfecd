//! A daemon restarting in the middle of a converge. Alone in its test binary: the second
//! daemon is down for a moment, and no other test may be using it then.

// Shares the integration tests' helpers; a binary of its own because it restarts a daemon
// the other tests use (see tests/it/main.rs).
#[path = "it/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::fixture::{Target, spec};
use common::wait::{connected, no_duplicate_names, until};
use common::{TestEnv, hosts};
use serde_json::json;
use stevedore::converge::engine::LoopOptions;
use stevedore::converge::env::ResolvedEnv;
use stevedore::docker::ContainerState;

#[tokio::test]
async fn a_daemon_restart_mid_converge_loses_nothing_and_duplicates_nothing() {
    let env = TestEnv::load();
    let target = Target::new(connected(hosts::second(&env)).await);
    let s = spec(json!({"image": env.get("IMAGE_V1"), "stopTimeoutSeconds": 1}));
    let replicas: Vec<u32> = (0..50).collect();
    let instances = target
        .instances("fleet", &s, &ResolvedEnv::new(), &replicas)
        .await;
    let options = LoopOptions {
        retry_after_error: Duration::from_millis(500),
        ..LoopOptions::default()
    };
    let converging = target.spawn_loop(instances, options);
    let uid = ("stevedore.dev/target", target.identity.uid.as_str());

    // Restart the daemon once some, not all, containers exist.
    let before = until(
        &target.host,
        uid,
        Duration::from_secs(60),
        "a first container",
        |l| !l.is_empty(),
    )
    .await;
    let status = Command::new(common::repo_root().join("hack/test-env.sh"))
        .arg("restart-second")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("restart the second daemon");
    assert!(status.success());

    let after = until(
        &target.host,
        uid,
        Duration::from_secs(120),
        "convergence after the restart",
        |l| l.len() == 50 && l.iter().all(|c| c.state == ContainerState::Running),
    )
    .await;
    assert!(no_duplicate_names(&after));
    // Containers made before the restart came back with the daemon: none was replaced.
    let ids: HashSet<&str> = after.iter().map(|c| c.id.as_str()).collect();
    for c in &before {
        assert!(
            ids.contains(c.id.as_str()),
            "{} was lost or replaced",
            c.name
        );
    }
    converging.stop().await;
    target.cleanup().await;
}
