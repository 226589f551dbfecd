//! The converge engine against the harness's real daemons: creating, no-op resyncs,
//! replacements with reasons, drift repair through events, orphans, isolation between
//! targets, failures that stay local, and every transport.

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::engines::Engine;
use common::fixture::{Target, free_port, spec, unique};
use common::wait::connected;
use common::{TestEnv, hosts};
use serde_json::json;
use stevedore::converge::engine::LoopOptions;
use stevedore::converge::env::{EnvOrigin, EnvValue, ResolvedEnv, resolve_env};
use stevedore::converge::plan::{Action, Verb};
use stevedore::docker::{Call, ConnectOptions, ContainerState, ErrorKind, connect};
use stevedore::labels::{LABEL_MANAGED, LABEL_TARGET};
use stevedore::sources::StaticSources;

fn no_env() -> ResolvedEnv {
    ResolvedEnv::new()
}

/// Runs the docker CLI against `host` (a `unix://` address), as a person would by hand.
fn docker_cli(host: &str, args: &[&str]) -> String {
    let output = std::process::Command::new("docker")
        .arg("-H")
        .arg(host)
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn running_names(containers: &[stevedore::docker::HostContainer]) -> Vec<String> {
    let mut names: Vec<String> = containers
        .iter()
        .filter(|c| c.state == ContainerState::Running)
        .map(|c| c.name.clone())
        .collect();
    names.sort();
    names
}

async fn from_empty_to_n_containers_then_a_resync_makes_one_list_call_and_no_change(
    engine: Engine,
) {
    let env = TestEnv::load();
    let mut target = Target::new(connected(engine.host(&env)).await);
    let web = spec(json!({"image": env.get("IMAGE_V1")}));
    let instances = target
        .instances("web", &web, &no_env(), &[0, 1, 2, 3, 4])
        .await;

    let report = target.converge(instances.clone()).await;
    assert_eq!(report.outcomes.len(), 5, "{:?}", report.plan);
    assert!(
        report.outcomes.iter().all(|o| o.result.is_ok()),
        "{:?}",
        report.outcomes
    );
    let expected: Vec<String> = (0..5)
        .map(|i| format!("{}_web_{i}", target.namespace))
        .collect();
    assert_eq!(running_names(&target.containers().await), expected);

    let before = target.host.calls();
    let report = target.converge(instances.clone()).await;
    let made = target.host.calls().since(&before);
    assert!(report.plan.is_empty(), "{:?}", report.plan);
    assert_eq!(made.mutating(), 0, "{made:?}");
    assert_eq!(made.get(Call::ListContainers), 1, "{made:?}");
    assert_eq!(
        made.0.values().sum::<u64>(),
        1,
        "a no-op costs one call: {made:?}"
    );

    // A list after the converge shows it reached (a `run --once` needs no other round);
    // with one instance fewer wanted, the container left over is work still to do.
    assert!(target.reached(instances.clone()).await);
    assert!(!target.reached(instances[..4].to_vec()).await);
    target.cleanup().await;
}

async fn each_changed_field_replaces_only_its_container_and_says_what_changed(engine: Engine) {
    let env = TestEnv::load();
    let mut target = Target::new(connected(engine.host(&env)).await);
    let image = env.get("IMAGE_V1");
    let (port_a, port_b) = (free_port(), free_port());
    let base = |extra: serde_json::Value| {
        let mut value = json!({"image": image});
        if let (Some(v), Some(e)) = (value.as_object_mut(), extra.as_object()) {
            v.extend(e.clone());
        }
        spec(value)
    };
    let mut sources = StaticSources::default();
    sources.secrets.insert(
        "creds".into(),
        BTreeMap::from([("token".into(), b"first-token".to_vec())]),
    );
    let secret_env = json!({"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}]});
    let before = [
        (
            "env",
            base(json!({"env": [{"name": "MODE", "value": "a"}]})),
        ),
        (
            "command",
            base(json!({"command": ["httpd"], "args": ["-f", "-p", "8080"]})),
        ),
        (
            "ports",
            base(
                json!({"ports": [{"containerPort": 8080, "hostPort": port_a, "hostIP": "127.0.0.1"}]}),
            ),
        ),
        (
            "volumes",
            base(json!({"volumes": [{"type": "tmpfs", "target": "/cache"}]})),
        ),
        ("image", base(json!({}))),
        ("secret", base(secret_env.clone())),
        ("unchanged", base(json!({}))),
    ];
    let mut after = before.clone();
    after[0].1 = base(json!({"env": [{"name": "MODE", "value": "b"}]}));
    after[1].1 = base(json!({"command": ["httpd"], "args": ["-f", "-p", "8081"]}));
    after[2].1 = base(
        json!({"ports": [{"containerPort": 8080, "hostPort": port_b, "hostIP": "127.0.0.1"}]}),
    );
    after[3].1 = base(json!({"volumes": [{"type": "tmpfs", "target": "/scratch"}]}));
    after[4].1.image = env.get("IMAGE_V2");

    let build = |specs: &[(&'static str, stevedore::api::DockerContainerSpec)],
                 sources: &StaticSources| {
        specs
            .iter()
            .map(|(name, s)| (*name, s.clone(), resolve_env(s, sources).expect("env")))
            .collect::<Vec<_>>()
    };
    let mut instances = Vec::new();
    for (name, s, e) in build(&before, &sources) {
        instances.extend(target.instances(name, &s, &e, &[0]).await);
    }
    let first = target.converge(instances).await;
    assert!(
        first.outcomes.iter().all(|o| o.result.is_ok()),
        "{:?}",
        first.outcomes
    );
    let ids_before: BTreeMap<String, String> = target
        .containers()
        .await
        .into_iter()
        .map(|c| (c.name, c.id))
        .collect();

    sources.secrets.insert(
        "creds".into(),
        BTreeMap::from([("token".into(), b"rotated-token".to_vec())]),
    );
    let mut instances = Vec::new();
    for (name, s, e) in build(&after, &sources) {
        instances.extend(target.instances(name, &s, &e, &[0]).await);
    }
    let second = target.converge(instances).await;
    let mut replaced: Vec<(String, String)> = second
        .plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Replace(r) => Some((r.old.name.clone(), r.reason.clone())),
            _ => None,
        })
        .collect();
    replaced.sort();
    let ns = &target.namespace;
    let expected = vec![
        (format!("{ns}_command_0"), "changed: args".to_string()),
        (format!("{ns}_env_0"), "changed: env MODE".to_string()),
        (format!("{ns}_image_0"), "changed: image".to_string()),
        (format!("{ns}_ports_0"), "changed: ports".to_string()),
        (
            format!("{ns}_secret_0"),
            "changed: env TOKEN (from Secret creds key token)".to_string(),
        ),
        (format!("{ns}_volumes_0"), "changed: volumes".to_string()),
    ];
    assert_eq!(replaced, expected);
    assert!(
        second.outcomes.iter().all(|o| o.result.is_ok()),
        "{:?}",
        second.outcomes
    );
    let all = target.containers().await;
    let now = common::serving(all.clone());
    assert_eq!(now.len(), 7, "no leftovers: {all:?}");
    // Podman 4 cannot set a retired container's restart policy to `no`, so a replaced
    // container whose policy is `always` (the default) is removed there, not kept.
    let kept = if engine.can_change_restart_policy() {
        6
    } else {
        0
    };
    assert_eq!(
        all.len() - now.len(),
        kept,
        "each replaced one kept as previous on {engine:?}: {all:?}"
    );
    for c in &now {
        assert_eq!(c.state, ContainerState::Running, "{}", c.name);
        let unchanged = c.name.ends_with("_unchanged_0");
        assert_eq!(
            ids_before.get(&c.name) == Some(&c.id),
            unchanged,
            "{}",
            c.name
        );
    }
    for text in [format!("{second:?}"), format!("{now:?}")] {
        assert!(
            !text.contains("rotated-token") && !text.contains("first-token"),
            "a secret leaked"
        );
    }
    // The new port answers on loopback.
    let body = http_get(port_b).await;
    assert!(body.contains("stevedore test image v1"), "{body}");
    target.cleanup().await;
}

/// A plain HTTP GET on 127.0.0.1, retried briefly while the server starts.
async fn http_get(port: i32) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port as u16)).await {
            let _ = stream
                .write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
                .await;
            let mut body = String::new();
            if stream.read_to_string(&mut body).await.is_ok() && body.contains("200") {
                return body;
            }
        }
        assert!(Instant::now() < deadline, "nothing answered on port {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn containers_removed_stopped_or_killed_by_hand_are_repaired_from_events(engine: Engine) {
    let env = TestEnv::load();
    let daemon = engine.address(&env);
    let target = Target::new(connected(engine.host(&env)).await);
    let sleeper = spec(json!({"image": env.get("IMAGE_V1")}));
    let instances = target.instances("drift", &sleeper, &no_env(), &[0]).await;
    let name = instances[0].name.clone();
    let options = LoopOptions {
        // Only events can repair within the test's bounds.
        resync_interval: Duration::from_secs(3600),
        ..LoopOptions::default()
    };
    let mut converging = target.spawn_loop(instances, options);
    let first = converging
        .reports
        .recv()
        .await
        .expect("report")
        .expect("converge");
    assert!(
        first.outcomes.iter().all(|o| o.result.is_ok()),
        "{:?}",
        first.outcomes
    );

    for how in [&["rm", "-f"][..], &["stop", "-t", "1"][..], &["kill"][..]] {
        let before = running_id(&target, &name).await.expect("running before");
        let mut args = how.to_vec();
        args.push(&name);
        // Timed from the command's return: Podman's `rm -f` stops the container gracefully
        // first (its stop timeout, 10 s for a process that ignores SIGTERM), and there is
        // nothing to repair before it is gone.
        docker_cli(&daemon, &args);
        let started = Instant::now();
        // How fast the repair comes is a benchmark figure (BENCHMARKS.md), not asserted here.
        loop {
            if let Some(id) = running_id(&target, &name).await
                && (how[0] != "rm" || id != before)
                && started.elapsed() > Duration::from_millis(50)
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "`docker {}` was not repaired",
                how[0]
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    converging.stop().await;
    target.cleanup().await;
}

async fn running_id(target: &Target, name: &str) -> Option<String> {
    target
        .containers()
        .await
        .into_iter()
        .find(|c| c.name == name && c.state == ContainerState::Running)
        .map(|c| c.id)
}

async fn unmanaged_containers_are_never_touched_and_orphans_are_removed(engine: Engine) {
    let env = TestEnv::load();
    let daemon = engine.address(&env);
    let mut target = Target::new(connected(engine.host(&env)).await);
    let hand_made = unique("hand-made");
    docker_cli(
        &daemon,
        &["run", "-d", "--name", &hand_made, &env.get("IMAGE_V1")],
    );
    // A container that claims Stevedore labels, but for another target.
    let other_target = unique("other-target");
    docker_cli(
        &daemon,
        &[
            "run",
            "-d",
            "--name",
            &other_target,
            "--label",
            &format!("{LABEL_MANAGED}=true"),
            "--label",
            &format!("{LABEL_TARGET}=someone-else"),
            &env.get("IMAGE_V1"),
        ],
    );
    let s = spec(json!({"image": env.get("IMAGE_V1")}));
    let mut both = target.instances("keep", &s, &no_env(), &[0]).await;
    both.extend(target.instances("drop", &s, &no_env(), &[0, 1]).await);
    let keep_only = target.instances("keep", &s, &no_env(), &[0]).await;
    target.converge(both).await;
    let report = target.converge(keep_only).await;
    let removed: Vec<String> = report
        .plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Remove {
                container, reason, ..
            } => {
                assert_eq!(
                    reason,
                    "its DockerContainer no longer wants it on this target"
                );
                Some(container.name.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(removed.len(), 2, "{:?}", report.plan);
    assert_eq!(
        running_names(&target.containers().await),
        vec![format!("{}_keep_0", target.namespace)]
    );
    for name in [&hand_made, &other_target] {
        let state = docker_cli(&daemon, &["inspect", "-f", "{{.State.Running}}", name]);
        assert_eq!(state, "true", "{name} was touched");
        docker_cli(&daemon, &["rm", "-f", name]);
    }
    target.cleanup().await;
}

async fn two_targets_on_one_daemon_converge_independently(engine: Engine) {
    let env = TestEnv::load();
    let mut one = Target::new(connected(engine.host(&env)).await);
    let mut two = Target::new(connected(engine.host(&env)).await);
    let s = spec(json!({"image": env.get("IMAGE_V1")}));
    let a = one.instances("a", &s, &no_env(), &[0]).await;
    let b = two.instances("b", &s, &no_env(), &[0]).await;
    one.converge(a).await;
    two.converge(b).await;
    // Target one now wants nothing: only its own container goes.
    let report = one.converge(Vec::new()).await;
    assert_eq!(report.plan.actions.len(), 1, "{:?}", report.plan);
    assert!(one.containers().await.is_empty());
    assert_eq!(running_names(&two.containers().await).len(), 1);
    let report = two
        .converge(two.instances("b", &s, &no_env(), &[0]).await)
        .await;
    assert!(report.plan.is_empty(), "{:?}", report.plan);
    two.cleanup().await;
}

async fn a_name_taken_by_a_container_of_someone_else_is_named_as_the_cause(engine: Engine) {
    let env = TestEnv::load();
    let daemon = engine.address(&env);
    let mut target = Target::new(connected(engine.host(&env)).await);
    let s = spec(json!({"image": env.get("IMAGE_V1")}));
    let instances = target.instances("web", &s, &no_env(), &[0]).await;
    // Made by hand (or by another manager) under the very name Stevedore would use.
    let name = format!("{}_web_0", target.namespace);
    docker_cli(
        &daemon,
        &["run", "-d", "--name", &name, &env.get("IMAGE_V1")],
    );

    let report = target.converge(instances).await;

    let create = report
        .outcomes
        .iter()
        .find(|o| o.verb == Verb::Create)
        .expect("a create");
    let error = create.result.as_ref().expect_err("the name is taken");
    assert_eq!(error.kind, ErrorKind::Conflict);
    assert!(
        error
            .message
            .starts_with(&format!("the name {name} is taken")),
        "{error}"
    );
    assert!(
        !report.outcomes.iter().any(|o| o.verb == Verb::Pull),
        "the image is on the host: nothing to pull"
    );
    let state = docker_cli(&daemon, &["inspect", "-f", "{{.State.Running}}", &name]);
    assert_eq!(state, "true", "the other container was touched");
    docker_cli(&daemon, &["rm", "-f", &name]);
    target.cleanup().await;
}

async fn bad_images_and_port_clashes_fail_alone_while_the_rest_converges(engine: Engine) {
    let env = TestEnv::load();
    let mut target = Target::new(connected(engine.host(&env)).await);
    let port = free_port();
    let good = spec(json!({"image": env.get("IMAGE_V1")}));
    // In the harness's registry (loopback): nothing leaves the machine.
    let missing =
        spec(json!({"image": format!("{}/stevedore/not-there:nope", env.get("REGISTRY"))}));
    let never =
        spec(json!({"image": "stevedore-test/not-there:never", "imagePullPolicy": "Never"}));
    // Past the schema (as if it came from an older CRD): the daemon must refuse it alone.
    let mut malformed = spec(json!({"image": env.get("IMAGE_V1")}));
    malformed.image = "Not A Valid::Reference".into();
    let clash = spec(json!({"image": env.get("IMAGE_V1"),
        "ports": [{"containerPort": 8080, "hostPort": port, "hostIP": "127.0.0.1"}]}));
    let mut instances = target.instances("good", &good, &no_env(), &[0]).await;
    instances.extend(target.instances("missing", &missing, &no_env(), &[0]).await);
    instances.extend(target.instances("never", &never, &no_env(), &[0]).await);
    instances.extend(
        target
            .instances("malformed", &malformed, &no_env(), &[0])
            .await,
    );
    instances.extend(target.instances("clash-a", &clash, &no_env(), &[0]).await);
    instances.extend(target.instances("clash-b", &clash, &no_env(), &[0]).await);
    let report = target.converge(instances).await;

    let failed_pull = report
        .outcomes
        .iter()
        .find(|o| o.verb == Verb::Pull && o.subject.contains("not-there"))
        .expect("a pull of the missing image");
    let error = failed_pull
        .result
        .as_ref()
        .expect_err("pull of a missing image succeeded");
    assert!(error.message.contains("stevedore/not-there"), "{error}");
    let malformed_pull = report
        .outcomes
        .iter()
        .find(|o| o.verb == Verb::Pull && o.subject.contains("Not A Valid"))
        .expect("a pull of the malformed reference");
    let error = malformed_pull
        .result
        .as_ref()
        .expect_err("a malformed reference pulled");
    assert!(
        error.message.contains("invalid reference format"),
        "{error}"
    );
    let missing_create = report
        .outcomes
        .iter()
        .find(|o| o.subject.ends_with("_missing_0"))
        .expect("missing instance outcome");
    assert!(missing_create.result.is_err());
    let blocked: Vec<&str> = report
        .plan
        .blocked
        .iter()
        .map(|f| f.reason.as_str())
        .collect();
    assert_eq!(blocked.len(), 2, "{blocked:?}");
    assert!(
        blocked
            .iter()
            .any(|r| r.contains("imagePullPolicy is Never"))
    );
    assert!(blocked.iter().any(|r| r.contains(&format!("{port}/tcp"))));
    let ns = &target.namespace;
    assert_eq!(
        running_names(&target.containers().await),
        vec![format!("{ns}_clash-a_0"), format!("{ns}_good_0")]
    );

    // An unreachable daemon fails on its own, classified; this host still converges.
    let (mut unreachable, material) = engine.host(&env);
    unreachable.endpoint = "tcp://127.0.0.1:1".into();
    let error = connect(&unreachable, &material, ConnectOptions::default())
        .await
        .expect_err("connected to nothing");
    assert_eq!(error.kind, ErrorKind::Unreachable);
    let again = target
        .converge(target.instances("good", &good, &no_env(), &[0]).await)
        .await;
    assert!(again.outcomes.iter().all(|o| o.result.is_ok()));
    target.cleanup().await;
}

async fn a_replacement_whose_image_cannot_be_pulled_leaves_the_old_container_running(
    engine: Engine,
) {
    let env = TestEnv::load();
    let mut target = Target::new(connected(engine.host(&env)).await);
    let v1 = spec(json!({"image": env.get("IMAGE_V1")}));
    target
        .converge(target.instances("web", &v1, &no_env(), &[0]).await)
        .await;
    let before = target.containers().await;

    let broken =
        spec(json!({"image": format!("{}/stevedore/busybox:no-such-tag", env.get("REGISTRY"))}));
    let report = target
        .converge(target.instances("web", &broken, &no_env(), &[0]).await)
        .await;
    let replace = report
        .outcomes
        .iter()
        .find(|o| o.verb == Verb::Replace)
        .expect("a replace was attempted");
    let error = replace
        .result
        .as_ref()
        .expect_err("replace succeeded without its image");
    assert!(
        error.message.contains("kept the old container running"),
        "{error}"
    );
    let after = target.containers().await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].id, before[0].id);
    assert_eq!(after[0].state, ContainerState::Running);
    target.cleanup().await;
}

async fn an_unhealthy_replacement_is_rolled_back_and_the_old_container_keeps_serving(
    engine: Engine,
) {
    let env = TestEnv::load();
    let mut target = Target::new(connected(engine.host(&env)).await);
    let port = free_port();
    let check = |command: serde_json::Value| {
        spec(json!({
            "image": env.get("IMAGE_V1"),
            "ports": [{"containerPort": 8080, "hostPort": port, "hostIP": "127.0.0.1"}],
            "healthCheck": {"command": command, "intervalSeconds": 1, "timeoutSeconds": 1, "retries": 1}
        }))
    };
    let healthy = check(json!([
        "wget",
        "-q",
        "-O",
        "/dev/null",
        "http://127.0.0.1:8080/"
    ]));
    let report = target
        .converge(target.instances("web", &healthy, &no_env(), &[0]).await)
        .await;
    assert!(
        report.outcomes.iter().all(|o| o.result.is_ok()),
        "{:?}",
        report.outcomes
    );
    let before = target.containers().await;

    let failing = check(json!(["false"]));
    let report = target
        .converge(target.instances("web", &failing, &no_env(), &[0]).await)
        .await;
    let replace = report
        .outcomes
        .iter()
        .find(|o| o.verb == Verb::Replace)
        .expect("replace");
    let error = replace
        .result
        .as_ref()
        .expect_err("an unhealthy replacement was kept");
    assert!(error.message.contains("rolled back"), "{error}");
    assert!(error.message.contains("unhealthy"), "{error}");
    let after = target.containers().await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].id, before[0].id);
    assert_eq!(after[0].name, before[0].name);
    assert_eq!(after[0].state, ContainerState::Running);
    assert!(http_get(port).await.contains("v1"));
    target.cleanup().await;
}

#[tokio::test]
async fn converges_over_unix_second_daemon_tls_and_ssh() {
    let env = TestEnv::load();
    for (transport, pair) in [
        ("unix", hosts::main(&env)),
        ("second", hosts::second(&env)),
        ("tls", hosts::tls(&env)),
        ("ssh", hosts::ssh(&env)),
    ] {
        let mut target = Target::new(connected(pair).await);
        let s = spec(json!({"image": env.get("IMAGE_V1"),
            "env": [{"name": "TRANSPORT", "value": transport}]}));
        let env_values = ResolvedEnv::from([(
            "TRANSPORT".to_string(),
            EnvValue {
                value: transport.into(),
                origin: EnvOrigin::Literal,
            },
        )]);
        let instances = target.instances("web", &s, &env_values, &[0, 1]).await;
        let report = target.converge(instances.clone()).await;
        assert!(
            report.outcomes.iter().all(|o| o.result.is_ok()),
            "{transport}: {:?}",
            report.outcomes
        );
        assert_eq!(
            running_names(&target.containers().await).len(),
            2,
            "{transport}"
        );
        let again = target.converge(instances).await;
        assert!(again.plan.is_empty(), "{transport}: {:?}", again.plan);
        target.cleanup().await;
    }
}

#[tokio::test]
async fn private_images_are_pulled_with_credentials_and_progress_is_reported() {
    let env = TestEnv::load();
    let host = connected(hosts::tls(&env)).await;
    let (progress_tx, mut progress) = tokio::sync::mpsc::unbounded_channel();
    let mut target = Target::new(host.clone());
    target.executor =
        stevedore::converge::executor::Executor::new(host, 4).with_progress(progress_tx);
    let image = env.get("REGISTRY_IMAGE_V1");
    let s = spec(json!({"image": image, "imagePullPolicy": "Always"}));
    let mut instances = target.instances("private", &s, &no_env(), &[0]).await;
    let credentials = stevedore::docker::PullCredentials {
        username: env.get("REGISTRY_USER"),
        password: env.get("REGISTRY_PASSWORD"),
        server: env.get("REGISTRY"),
    };
    for instance in &mut instances {
        instance.pull_credentials = Some(credentials.clone());
    }
    let report = target.converge(instances).await;
    assert!(
        report.outcomes.iter().all(|o| o.result.is_ok()),
        "{:?}",
        report.outcomes
    );
    let mut lines = Vec::new();
    while let Ok(p) = progress.try_recv() {
        lines.push(format!("{}: {}", p.subject, p.message));
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{image}: Pull:"))),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("created and started") && l.contains("not on this target yet")),
        "{lines:?}"
    );
    assert!(!lines.join("\n").contains(&env.get("REGISTRY_PASSWORD")));
    target.cleanup().await;
}

async fn instance_status_shows_addresses_ports_and_the_log_of_an_exited_container(engine: Engine) {
    let env = TestEnv::load();
    let mut target = Target::new(connected(engine.host(&env)).await);
    let port = free_port();
    let web = spec(json!({"image": env.get("IMAGE_V1"),
        "ports": [{"containerPort": 8080, "hostPort": port, "hostIP": "127.0.0.1"}]}));
    let failing = spec(
        json!({"image": env.get("IMAGE_V1"), "restartPolicy": "Never",
        "command": ["sh", "-c", "echo boom from the container; exit 3"]}),
    );
    let mut instances = target.instances("web", &web, &no_env(), &[0]).await;
    instances.extend(target.instances("failing", &failing, &no_env(), &[0]).await);
    instances.extend(
        target
            .instances(
                "absent",
                &spec(json!({"image": "stevedore-test/nope:x",
        "imagePullPolicy": "Never"})),
                &no_env(),
                &[0],
            )
            .await,
    );
    target.converge(instances.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let observed = loop {
        let observed = target.containers().await;
        if observed
            .iter()
            .any(|c| c.name.ends_with("_failing_0") && c.state == ContainerState::Exited)
        {
            break observed;
        }
        assert!(
            Instant::now() < deadline,
            "the failing container never exited"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let desired: Vec<_> = instances.iter().collect();
    let statuses =
        stevedore::converge::status::instance_statuses(&target.host, "main", &desired, &observed)
            .await;
    let web = &statuses[0];
    assert_eq!(web.state, "running");
    assert_eq!(web.target, "main");
    assert!(
        web.container_id.is_some() && web.started_at.is_some(),
        "{web:?}"
    );
    assert!(
        web.ips
            .iter()
            .any(|ip| ip.starts_with(&format!("{}=", engine.default_network()))),
        "{web:?}"
    );
    assert_eq!(web.ports, vec![format!("127.0.0.1:{port}->8080/tcp")]);
    assert!(
        web.image_digest
            .as_deref()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    let failing = &statuses[1];
    assert_eq!(failing.state, "exited");
    assert_eq!(failing.exit_code, Some(3));
    assert!(
        failing
            .message
            .as_deref()
            .is_some_and(|m| m.contains("boom from the container")),
        "{failing:?}"
    );
    assert_eq!(statuses[2].state, "missing");
    target.cleanup().await;
}

async fn an_image_a_listed_container_shows_is_not_looked_up_until_its_reference_goes(
    engine: Engine,
) {
    let env = TestEnv::load();
    let mut target = Target::new(connected(engine.host(&env)).await);
    let web = spec(json!({"image": env.get("IMAGE_V1")}));
    target
        .converge(target.instances("web", &web, &no_env(), &[0]).await)
        .await;

    // A second replica of the same image: Docker's list shows the first one's image by
    // its reference, so no image call is made; Podman's list always repeats the
    // reference given at create, so there the image is looked up.
    let two = target.instances("web", &web, &no_env(), &[0, 1]).await;
    let before = target.host.calls();
    let report = target.converge(two).await;
    let made = target.host.calls().since(&before);
    assert!(
        report.outcomes.iter().all(|o| o.result.is_ok()),
        "{:?}",
        report.outcomes
    );
    let expected_lookups = u64::from(engine == Engine::Podman);
    assert_eq!(made.get(Call::Images), expected_lookups, "{made:?}");
    assert_eq!(running_names(&target.containers().await).len(), 2);

    // Once the reference is gone from the host (its container keeps the image), the list
    // names the image by its ID and a new container's image is looked up again: under
    // `Never`, it is missing. The simulated daemon has no untag to try this with.
    if engine == Engine::Simulated {
        target.cleanup().await;
        return;
    }
    let address = engine.address(&env);
    let reference = format!("{}:v1", unique("stevedore-probe/untagged"));
    docker_cli(&address, &["tag", &env.get("IMAGE_V1"), &reference]);
    let kept = spec(json!({"image": reference, "imagePullPolicy": "Never"}));
    let report = target
        .converge(target.instances("kept", &kept, &no_env(), &[0]).await)
        .await;
    assert!(
        report.plan.blocked.is_empty() && report.outcomes.iter().all(|o| o.result.is_ok()),
        "{report:?}"
    );
    // The instances as they were while the reference named the image (afterwards, their
    // image identity would change and replace the first one as well).
    let two = target.instances("kept", &kept, &no_env(), &[0, 1]).await;
    docker_cli(&address, &["rmi", &reference]);
    let report = target.converge(two).await;
    let blocked: Vec<(&str, &str)> = report
        .plan
        .blocked
        .iter()
        .map(|f| (f.container.as_str(), f.reason.as_str()))
        .collect();
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert!(blocked[0].0.ends_with("_kept_1"), "{blocked:?}");
    assert!(
        blocked[0].1.contains("imagePullPolicy is Never"),
        "{blocked:?}"
    );
    target.cleanup().await;
}

crate::on_every_engine!(
    from_empty_to_n_containers_then_a_resync_makes_one_list_call_and_no_change,
    each_changed_field_replaces_only_its_container_and_says_what_changed,
    containers_removed_stopped_or_killed_by_hand_are_repaired_from_events,
    unmanaged_containers_are_never_touched_and_orphans_are_removed,
    two_targets_on_one_daemon_converge_independently,
    a_name_taken_by_a_container_of_someone_else_is_named_as_the_cause,
    bad_images_and_port_clashes_fail_alone_while_the_rest_converges,
    a_replacement_whose_image_cannot_be_pulled_leaves_the_old_container_running,
    an_unhealthy_replacement_is_rolled_back_and_the_old_container_keeps_serving,
    instance_status_shows_addresses_ports_and_the_log_of_an_exited_container,
    an_image_a_listed_container_shows_is_not_looked_up_until_its_reference_goes,
);
