//! Stopping `stevedore run` never stops a service: SIGINT or SIGTERM in the middle of a
//! replacement, a Recreate or a scale-down, at each of their steps, leaves every replica
//! running (the old container or the new one), with no duplicate and nothing renamed aside.
//!
//! The real binary runs against the machine's real daemon through a tripwire proxy that
//! signals the process exactly when a chosen Docker call goes by (and holds that call a
//! moment, so the signal lands while it is under way).

use crate::common;
use crate::common::tripwire;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fixture::free_port;
use common::wait::connected;
use common::workspace::{Workspace, containers, http_get, remove_all, target, wait_for};
use common::{TestEnv, hosts};
use stevedore::docker::{ContainerState, DockerHost, Health, HostContainer};
use tripwire::Tripwire;

/// How a container manifest for these tests is shaped.
struct Web {
    replicas: u32,
    /// The published host port, if any.
    port: Option<i32>,
    /// Seconds between health checks: the first verdict comes after one interval.
    health_interval: u32,
    stop_timeout: u32,
    strategy: &'static str,
}

impl Web {
    fn one_with_port(port: i32, health_interval: u32) -> Self {
        Self {
            replicas: 1,
            port: Some(port),
            health_interval,
            stop_timeout: 1,
            strategy: "RollingUpdate",
        }
    }

    fn manifest(&self, image: &str, mode: &str) -> String {
        let ports = self.port.map_or(String::new(), |port| {
            format!(
                "  ports:\n    - containerPort: 8080\n      hostPort: {port}\n      hostIP: 127.0.0.1\n"
            )
        });
        format!(
            r#"apiVersion: stevedore.dev/v1alpha1
kind: DockerContainer
metadata:
  name: web
spec:
  image: {image}
  env:
    - name: MODE
      value: "{mode}"
{ports}  healthCheck:
    command: ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]
    intervalSeconds: {interval}
    timeoutSeconds: 1
    retries: 3
  stopTimeoutSeconds: {stop}
  updateStrategy:
    type: {strategy}
  placement:
{placement}    replicas: {replicas}
"#,
            // Several replicas are spread by a selector (here: over the one target).
            placement = if self.replicas > 1 {
                "    targetSelector:\n      matchLabels:\n        site: here\n"
            } else {
                "    target: main\n"
            },
            replicas = self.replicas,
            interval = self.health_interval,
            stop = self.stop_timeout,
            strategy = self.strategy,
        )
    }
}

/// One test's run: its manifests, the tripwire in front of the daemon, and the process.
struct Scene {
    env: TestEnv,
    host: DockerHost,
    ws: Workspace,
    tripwire: Tripwire,
    web: Web,
}

impl Scene {
    async fn new(web: Web) -> Self {
        let env = TestEnv::load();
        let host = connected(hosts::main(&env)).await;
        let ws = Workspace::new();
        let tripwire = Tripwire::start(&ws.dir, Path::new("/var/run/docker.sock"));
        ws.write("target.yaml", &target("main", &tripwire.endpoint(), "here"));
        Self {
            env,
            host,
            ws,
            tripwire,
            web,
        }
    }

    fn write(&self, mode: &str) {
        self.ws.write(
            "web.yaml",
            &self.web.manifest(&self.env.get("IMAGE_V1"), mode),
        );
    }

    /// Starts `stevedore run` (watching) with `grace`, its stderr kept for the test.
    fn spawn_watching(&self, grace: &str) -> Child {
        self.ws
            .command(&[
                "run",
                "--no-progress",
                "--resync",
                "1h",
                "--shutdown-grace-period",
                grace,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start stevedore run")
    }

    fn name(&self, replica: u32) -> String {
        format!("{}_web_{replica}", self.ws.namespace)
    }

    async fn containers(&self) -> Vec<HostContainer> {
        containers(&self.host, &self.ws.namespace).await
    }

    /// Waits until every replica runs `mode` and is healthy; returns them by replica.
    async fn healthy(&self, mode: &str) -> Vec<HostContainer> {
        let wanted: Vec<String> = (0..self.web.replicas).map(|r| self.name(r)).collect();
        let (list, _) = wait_for(
            &format!("every replica running {mode}, healthy"),
            Duration::from_secs(60),
            async || {
                let list = common::serving(self.containers().await);
                let ready: Vec<HostContainer> = wanted
                    .iter()
                    .filter_map(|name| {
                        list.iter()
                            .find(|c| {
                                &c.name == name
                                    && c.state == ContainerState::Running
                                    && c.health == Some(Health::Healthy)
                            })
                            .cloned()
                    })
                    .collect();
                (ready.len() == wanted.len() && list.len() == wanted.len()).then_some(ready)
            },
        )
        .await;
        list
    }

    /// Arms the tripwire to send `signal` to `child` when the `nth` `call` goes by.
    fn interrupt_at(
        &self,
        child: &Child,
        signal: &'static str,
        call: (&'static str, &'static str),
        nth: usize,
    ) {
        let pid = child.id().to_string();
        self.tripwire
            .arm(call, nth, Duration::from_millis(500), move || {
                send(signal, &pid);
            });
    }

    /// What every replica looks like after the process exited: each is running under its
    /// own name, with nothing renamed aside and no duplicate.
    async fn assert_every_replica_runs(&self) -> Vec<HostContainer> {
        let list = common::serving(self.containers().await);
        for replica in 0..self.web.replicas {
            let name = self.name(replica);
            let found: Vec<&HostContainer> = list.iter().filter(|c| c.name == name).collect();
            assert_eq!(found.len(), 1, "replica {replica}: {list:#?}");
            assert_eq!(found[0].state, ContainerState::Running, "{list:#?}");
        }
        assert!(
            list.iter().all(|c| !c.name.contains("-replaced-")),
            "a container is left renamed aside: {list:#?}"
        );
        assert_eq!(list.len(), self.web.replicas as usize, "{list:#?}");
        list
    }

    /// Waits for `child` to exit (see [`exited`]) after the tripwire fired.
    async fn exited_after_the_interrupt(
        &self,
        child: Child,
        within: Duration,
    ) -> (Option<i32>, String) {
        let (code, stderr) = exited(child, within).await;
        assert!(
            self.tripwire.fired().is_some(),
            "the interrupt never came:\n{stderr}"
        );
        (code, stderr)
    }

    /// The next `run --once` repairs what an interrupted run left: every replica runs, and
    /// `port` serves.
    async fn assert_the_next_run_repairs(&self, port: i32) {
        let repair = self.ws.run_once();
        assert_eq!(
            repair.status.code(),
            Some(0),
            "{}",
            common::workspace::text(&repair)
        );
        self.assert_every_replica_runs().await;
        assert!(http_get(port).await.contains("stevedore test image"));
    }

    async fn cleanup(&self) {
        remove_all(&self.host, &self.ws.namespace).await;
    }
}

/// Sends `signal` (`-INT`, `-TERM`) to the process `pid`, as Ctrl-C or Kubernetes would.
fn send(signal: &str, pid: &str) {
    let _ = Command::new("kill").args([signal, pid]).status();
}

/// Waits for `child` to exit, then a moment more so that a call the tripwire held reaches
/// the daemon (what a process leaves includes the calls it already sent); returns its exit
/// code and stderr.
async fn exited(mut child: Child, within: Duration) -> (Option<i32>, String) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for stevedore") {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                use std::io::Read;
                let _ = pipe.read_to_string(&mut stderr);
            }
            return (status.code(), stderr);
        }
        if started.elapsed() > within {
            let _ = child.kill();
            panic!("stevedore did not exit within {within:?} of the interrupt");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Which container serves after the interrupt.
#[derive(Debug, PartialEq)]
enum Serving {
    Old,
    New,
}

/// Runs a one-replica, host-port, health-checked web, edits it, interrupts the replacement
/// when `method path` goes by, and checks what is left once the process exited.
async fn interrupt_a_replacement(
    signal: &'static str,
    call: (&'static str, &'static str),
    nth: usize,
    grace: &str,
    health_interval: u32,
    expected: Serving,
) {
    let port = free_port();
    let scene = Scene::new(Web::one_with_port(port, health_interval)).await;
    scene.write("one");
    let child = scene.spawn_watching(grace);
    let old = scene.healthy("one").await.remove(0);

    scene.interrupt_at(&child, signal, call, nth);
    scene.write("two");
    let (code, stderr) = scene
        .exited_after_the_interrupt(child, Duration::from_secs(60))
        .await;
    let fired = scene.tripwire.fired();
    assert_eq!(code, Some(0), "{stderr}");

    let left = scene.assert_every_replica_runs().await;
    let serving = if left[0].id == old.id {
        Serving::Old
    } else {
        Serving::New
    };
    assert_eq!(serving, expected, "interrupted at {fired:?}:\n{stderr}");
    let said = match expected {
        Serving::Old => "rolled back Replace",
        Serving::New => "finished Replace",
    };
    assert!(stderr.contains(said), "{stderr}");
    assert!(
        http_get(port).await.contains("stevedore test image"),
        "nothing serves port {port}"
    );
    scene.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_while_the_old_container_is_renamed_aside_puts_it_back() {
    interrupt_a_replacement("-INT", ("POST", "/rename"), 1, "25s", 1, Serving::Old).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_while_the_old_container_stops_starts_it_again() {
    interrupt_a_replacement("-INT", ("POST", "/stop"), 1, "25s", 1, Serving::Old).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_while_the_new_container_is_created_removes_it_and_restores_the_old() {
    interrupt_a_replacement(
        "-INT",
        ("POST", "/containers/create"),
        1,
        "25s",
        1,
        Serving::Old,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_while_the_new_container_starts_waits_for_its_health_and_finishes() {
    // The first health verdict comes after 4 s: the drain waits for it.
    interrupt_a_replacement("-INT", ("POST", "/start"), 1, "25s", 4, Serving::New).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_container_not_healthy_before_the_grace_period_ends_is_rolled_back() {
    // A 2 s grace period ends before the first health verdict (after 4 s).
    interrupt_a_replacement("-INT", ("POST", "/start"), 1, "2s", 4, Serving::Old).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_while_the_old_container_is_retired_finishes_the_replacement() {
    // The second rename: the old container, aside and stopped, becomes the previous one.
    interrupt_a_replacement("-INT", ("POST", "/rename"), 2, "25s", 1, Serving::New).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_behaves_as_sigint() {
    interrupt_a_replacement("-TERM", ("POST", "/stop"), 1, "25s", 1, Serving::Old).await;
}

/// Two replicas without host ports, updated by Recreate.
fn recreated() -> Web {
    Web {
        replicas: 2,
        port: None,
        health_interval: 1,
        stop_timeout: 1,
        strategy: "Recreate",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreate_interrupted_while_the_old_containers_stop_restores_them_all() {
    let scene = Scene::new(recreated()).await;
    scene.write("one");
    let child = scene.spawn_watching("25s");
    let old = scene.healthy("one").await;

    scene.interrupt_at(&child, "-INT", ("POST", "/stop"), 1);
    scene.write("two");
    let (code, stderr) = scene
        .exited_after_the_interrupt(child, Duration::from_secs(60))
        .await;
    assert_eq!(code, Some(0), "{stderr}");
    let left = scene.assert_every_replica_runs().await;
    let old_ids: Vec<&str> = old.iter().map(|c| c.id.as_str()).collect();
    assert!(
        left.iter().all(|c| old_ids.contains(&c.id.as_str())),
        "{left:#?}\n{stderr}"
    );
    assert!(stderr.contains("rolled back Recreate"), "{stderr}");
    // Both serve again: their health checks pass.
    scene.healthy("one").await;
    scene.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreate_interrupted_while_the_new_containers_start_finishes() {
    let mut web = recreated();
    web.health_interval = 3;
    let scene = Scene::new(web).await;
    scene.write("one");
    let child = scene.spawn_watching("25s");
    let old = scene.healthy("one").await;

    // The second start: every new container has started, both wait for their health.
    scene.interrupt_at(&child, "-INT", ("POST", "/start"), 2);
    scene.write("two");
    let (code, stderr) = scene
        .exited_after_the_interrupt(child, Duration::from_secs(60))
        .await;
    assert_eq!(code, Some(0), "{stderr}");
    let left = scene.assert_every_replica_runs().await;
    assert!(
        left.iter().all(|c| old.iter().all(|o| o.id != c.id)),
        "{left:#?}\n{stderr}"
    );
    assert!(stderr.contains("finished Recreate"), "{stderr}");
    scene.healthy("two").await;
    scene.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_down_interrupted_while_a_replica_stops_leaves_each_running_or_gone() {
    let scene = Scene::new(Web {
        replicas: 3,
        port: None,
        health_interval: 1,
        // A slow stop: busybox httpd as PID 1 ignores SIGTERM, so each stop takes 3 s.
        stop_timeout: 3,
        strategy: "RollingUpdate",
    })
    .await;
    scene.write("one");
    let child = scene.spawn_watching("25s");
    scene.healthy("one").await;

    scene.interrupt_at(&child, "-INT", ("POST", "/stop"), 1);
    let mut scaled = scene.web.manifest(&scene.env.get("IMAGE_V1"), "one");
    scaled = scaled.replace("replicas: 3", "replicas: 1");
    scene.ws.write("web.yaml", &scaled);
    let (code, stderr) = scene
        .exited_after_the_interrupt(child, Duration::from_secs(60))
        .await;
    assert_eq!(code, Some(0), "{stderr}");

    let left = scene.containers().await;
    assert!(
        left.iter().all(|c| c.state == ContainerState::Running),
        "a replica was left stopped instead of removed: {left:#?}\n{stderr}"
    );
    assert!(left.iter().any(|c| c.name == scene.name(0)), "{left:#?}");
    assert!(stderr.contains("finished Remove"), "{stderr}");
    scene.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_interrupt_exits_at_once_and_the_next_run_repairs() {
    let port = free_port();
    let scene = Scene::new(Web::one_with_port(port, 5)).await;
    scene.write("one");
    let child = scene.spawn_watching("25s");
    scene.healthy("one").await;

    // The first SIGINT lands as the new container starts (its health verdict is 5 s
    // away); the second one a moment later.
    let pid = child.id().to_string();
    scene
        .tripwire
        .arm(("POST", "/start"), 1, Duration::ZERO, move || {
            send("-INT", &pid);
            std::thread::sleep(Duration::from_millis(300));
            send("-INT", &pid);
        });
    scene.write("two");
    let interrupted = Instant::now();
    let (code, stderr) = scene
        .exited_after_the_interrupt(child, Duration::from_secs(60))
        .await;
    assert_eq!(code, Some(130), "{stderr}");
    assert!(
        interrupted.elapsed() < Duration::from_secs(4),
        "waited for the health verdict: {:?}",
        interrupted.elapsed()
    );
    assert!(
        stderr.contains("interrupted again: exiting now"),
        "{stderr}"
    );

    // The next run finds what the interrupted one left (from the labels) and repairs it.
    scene.assert_the_next_run_repairs(port).await;
    scene.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_interrupted_mid_replacement_rolls_back_and_exits_130() {
    let port = free_port();
    let scene = Scene::new(Web::one_with_port(port, 1)).await;
    scene.write("one");
    let first = scene.ws.run_once();
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        common::workspace::text(&first)
    );
    let old = scene.healthy("one").await.remove(0);

    scene.write("two");
    let child = scene
        .ws
        .command(&["run", "--once", "--no-progress"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start stevedore run --once");
    scene.interrupt_at(&child, "-TERM", ("POST", "/stop"), 1);
    let (code, stderr) = scene
        .exited_after_the_interrupt(child, Duration::from_secs(60))
        .await;
    assert_eq!(code, Some(130), "{stderr}");
    let left = scene.assert_every_replica_runs().await;
    assert_eq!(left[0].id, old.id, "{stderr}");
    assert!(stderr.contains("rolled back Replace"), "{stderr}");
    assert!(http_get(port).await.contains("stevedore test image"));
    scene.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_interrupted_starts_no_further_replacement() {
    // Three replicas, replaced one at a time: the interrupt lands as the first new one
    // starts; it finishes, and the other two keep their old containers.
    let mut web = recreated();
    web.replicas = 3;
    web.strategy = "RollingUpdate";
    web.health_interval = 3;
    let scene = Scene::new(web).await;
    scene.write("one");
    let child = scene.spawn_watching("25s");
    let old = scene.healthy("one").await;

    scene.interrupt_at(&child, "-INT", ("POST", "/start"), 1);
    scene.write("two");
    let (code, stderr) = scene
        .exited_after_the_interrupt(child, Duration::from_secs(60))
        .await;
    assert_eq!(code, Some(0), "{stderr}");
    let left = scene.assert_every_replica_runs().await;
    let replaced: Vec<&HostContainer> = left
        .iter()
        .filter(|c| old.iter().all(|o| o.id != c.id))
        .collect();
    assert_eq!(
        replaced.len(),
        1,
        "one replaced, two untouched: {left:#?}\n{stderr}"
    );
    assert!(stderr.contains("finished Replace"), "{stderr}");
    scene.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_stuck_on_the_daemon_exits_when_the_grace_period_is_over() {
    let port = free_port();
    let scene = Scene::new(Web::one_with_port(port, 1)).await;
    scene.write("one");
    let child = scene.spawn_watching("2s");
    scene.healthy("one").await;

    // The stop of the old container hangs (held 12 s by the tripwire) past the 2 s grace
    // period and the 3 s after it: the process gives up and exits.
    let pid = child.id().to_string();
    scene
        .tripwire
        .arm(("POST", "/stop"), 1, Duration::from_secs(12), move || {
            send("-INT", &pid);
        });
    scene.write("two");
    let interrupted = Instant::now();
    let (code, stderr) = scene
        .exited_after_the_interrupt(child, Duration::from_secs(30))
        .await;
    assert_eq!(code, Some(130), "{stderr}");
    assert!(
        interrupted.elapsed() < Duration::from_secs(10),
        "exited after {:?}",
        interrupted.elapsed()
    );
    assert!(stderr.contains("the grace period is over"), "{stderr}");

    // The held stop reaches the daemon after all; the next run repairs from the labels.
    tokio::time::sleep(Duration::from_secs(10)).await;
    scene.assert_the_next_run_repairs(port).await;
    scene.cleanup().await;
}
