//! Day two without a cluster: `stevedore logs`, `exec` and `restart` on the replicas a
//! standalone run placed on the machine's daemon and the second one (real daemons, the
//! real binary).

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::TestEnv;
use common::wait::connected;
use common::workspace::{Watcher, Workspace, containers, remove_all, text, wait_for};
use stevedore::docker::{ContainerState, DockerHost, HostContainer};

/// A workspace with `edge-1` (the machine's daemon) and `edge-2` (the second one) and a
/// DockerContainer `talker` with one replica on each, converged.
struct Talkers {
    ws: Workspace,
    hosts: [DockerHost; 2],
}

impl Talkers {
    /// `command` is the replicas' shell script; `extra` more spec lines (2-space indented).
    async fn up(command: &str, extra: &str) -> Self {
        let env = TestEnv::load();
        let ws = Workspace::new();
        ws.write_edge_targets(&env);
        ws.write("talker.yaml", &talker(&env.get("IMAGE_V1"), command, extra));
        let output = ws.run_once();
        assert!(output.status.success(), "run --once: {}", text(&output));
        let hosts = [
            connected(common::hosts::main(&env)).await,
            connected(common::hosts::second(&env)).await,
        ];
        Self { ws, hosts }
    }

    /// `stevedore ARGS talker --filename DIR -n NS` (the day-two commands take the
    /// manifests with --filename only: -f is --follow).
    fn command(&self, args: &[&str]) -> Command {
        // The options go before a `--`: what follows it is the command `exec` runs.
        let split = args.iter().position(|a| *a == "--").unwrap_or(args.len());
        let mut command = Command::new(env!("CARGO_BIN_EXE_stevedore"));
        command
            .args(&args[..split])
            .arg("--filename")
            .arg(&self.ws.dir)
            .args(["-n", &self.ws.namespace, "--manager", &self.ws.manager])
            .args(&args[split..]);
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run stevedore")
    }

    /// Replica `index`'s current container (on edge-1 for 0, edge-2 for 1).
    async fn replica(&self, index: usize) -> HostContainer {
        let name = format!("{}_talker_{index}", self.ws.namespace);
        let list = containers(&self.hosts[index], &self.ws.namespace).await;
        let mut current = list.into_iter().filter(|c| c.name == name);
        let found = current.next().expect("the replica's container");
        assert!(current.next().is_none(), "one container named {name}");
        found
    }

    async fn clean(&self) {
        for host in &self.hosts {
            remove_all(host, &self.ws.namespace).await;
        }
    }
}

fn talker(image: &str, command: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: stevedore.dev/v1alpha1
kind: DockerContainer
metadata:
  name: talker
spec:
  image: {image}
  command: ["sh", "-c", {command:?}]
  stopTimeoutSeconds: 1
  placement:
    targetSelector:
      matchLabels:
        site: edge
    replicas: 2
{extra}"#
    )
}

/// Counts to stdout and warns to stderr once a second, after saying which container it is.
const COUNTING: &str = "echo hello from $(hostname); i=0; while true; do i=$((i+1)); echo line $i; echo warn $i >&2; sleep 0.2; done";

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn logs_of_one_replica_of_every_replica_and_the_last_lines() {
    let t = Talkers::up(COUNTING, "").await;
    let second = t.replica(1).await;
    wait_for(
        "a few lines of output",
        Duration::from_secs(10),
        async || {
            let out = t.run(&["logs", "talker", "--replica", "1"]);
            stdout(&out).contains("line 3").then_some(())
        },
    )
    .await;

    let whole = t.run(&["logs", "talker", "--replica", "1"]);
    assert!(whole.status.success(), "{}", text(&whole));
    // The container's hostname is its short ID: the lines came from replica 1's container.
    let hostname = &second.id[..12];
    assert!(
        stdout(&whole).starts_with(&format!("hello from {hostname}\nline 1\n")),
        "{}",
        text(&whole)
    );
    assert!(
        stderr(&whole).starts_with("warn 1\n"),
        "stderr kept apart: {}",
        text(&whole)
    );

    let tail = t.run(&["logs", "talker", "--replica", "1", "--tail", "4"]);
    let lines = stdout(&tail).lines().count() + stderr(&tail).lines().count();
    assert_eq!(lines, 4, "--tail 4 counts both streams: {}", text(&tail));
    assert!(!stdout(&tail).contains("hello from"), "{}", text(&tail));

    let all = t.run(&["logs", "talker", "--all"]);
    assert!(all.status.success(), "{}", text(&all));
    let out = stdout(&all);
    assert!(
        out.contains("[replica 0 on edge-1] hello from"),
        "{}",
        text(&all)
    );
    assert!(
        out.contains("[replica 1 on edge-2] hello from"),
        "{}",
        text(&all)
    );
    assert!(
        out.lines().all(|l| l.starts_with("[replica ")),
        "every line prefixed: {}",
        text(&all)
    );

    let picked = t.run(&["logs", "talker"]);
    assert!(
        stderr(&picked).contains("Found 2 replicas, using replica 0"),
        "{}",
        text(&picked)
    );
    let missing = t.run(&["logs", "talker", "--replica", "7"]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(
        stderr(&missing).contains("has no replica 7 (running: 0, 1)"),
        "{}",
        text(&missing)
    );
    t.clean().await;
}

#[tokio::test]
async fn follow_prints_new_lines_and_stops_cleanly_on_ctrl_c() {
    let t = Talkers::up(COUNTING, "").await;
    // Interrupted on drop too, should a check fail first.
    let mut follower = Watcher(
        t.command(&["logs", "talker", "--replica", "0", "-f", "--tail", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn logs -f"),
    );
    let mut lines = BufReader::new(follower.0.stdout.take().expect("stdout")).lines();
    // Lines keep coming while it follows: five new ones, in order.
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let line = lines.next().expect("a line").expect("utf-8");
        seen.push(line);
    }
    let numbers: Vec<u32> = seen
        .iter()
        .map(|l| {
            l.trim_start_matches("line ")
                .parse()
                .expect("a counted line")
        })
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "in order: {seen:?}"
    );

    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-INT", &follower.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = loop {
        if let Some(exit) = follower.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(3),
            "logs -f still running 3 s after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(130), "exit code of an interrupted follow");
    let mut errors = String::new();
    std::io::Read::read_to_string(&mut follower.0.stderr.take().expect("stderr"), &mut errors)
        .expect("read stderr");
    assert!(
        errors.lines().all(|l| l.starts_with("warn ")),
        "no error on Ctrl-C: {errors}"
    );
    t.clean().await;
}

#[tokio::test]
async fn previous_shows_the_run_before_the_daemon_restarted_it() {
    // Each run says its own random name, lives two seconds and fails; restartPolicy
    // Always has the daemon restart it in place.
    let script = "echo run $(cat /proc/sys/kernel/random/uuid); sleep 4; exit 3";
    let t = Talkers::up(script, "  restartPolicy: Always\n").await;

    let runs = |out: &Output| -> Vec<String> {
        stdout(out)
            .lines()
            .filter_map(|l| l.strip_prefix("run ").map(str::to_string))
            .collect()
    };
    let logs = || runs(&t.run(&["logs", "talker", "--replica", "0"]));
    // Read the runs, then the previous one, then the runs again: when no restart came in
    // between, the previous output is every run but the current one.
    let (checked, _) = wait_for(
        "--previous between two restarts",
        Duration::from_secs(30),
        async || {
            let before = logs();
            let previous = t.run(&["logs", "talker", "--replica", "0", "--previous"]);
            let after = logs();
            (before.len() >= 2 && before == after).then_some((before, previous))
        },
    )
    .await;
    let (all_runs, previous) = checked;
    assert!(previous.status.success(), "{}", text(&previous));
    assert_eq!(
        runs(&previous)[..],
        all_runs[..all_runs.len() - 1],
        "{}",
        text(&previous)
    );

    let follow = t.run(&["logs", "talker", "--replica", "0", "-p", "-f"]);
    assert_eq!(follow.status.code(), Some(1));
    assert!(
        stderr(&follow).contains("--previous cannot be followed"),
        "{}",
        text(&follow)
    );
    t.clean().await;
}

#[tokio::test]
async fn exec_passes_output_input_and_the_exit_code() {
    let t = Talkers::up("sleep 3600", "").await;
    let second = t.replica(1).await;
    // Never restarted, never replaced: no previous run to show, and it says so.
    let never = t.run(&["logs", "talker", "--replica", "0", "-p"]);
    assert_eq!(never.status.code(), Some(1), "{}", text(&never));
    assert!(
        stderr(&never).contains("has not restarted since it was created"),
        "{}",
        text(&never)
    );
    let out = t.run(&[
        "exec",
        "talker",
        "--replica",
        "1",
        "--",
        "sh",
        "-c",
        "hostname; echo oops >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert_eq!(stdout(&out), format!("{}\n", &second.id[..12]));
    assert_eq!(stderr(&out), "oops\n");

    let mut piped = t
        .command(&[
            "exec",
            "-i",
            "talker",
            "--replica",
            "0",
            "--",
            "sh",
            "-c",
            "tr a-z A-Z; tty",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn exec -i");
    piped
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"hello\nworld\n")
        .expect("write stdin");
    let piped = piped.wait_with_output().expect("exec -i");
    // stdin closed at its end, so `tr` finished; no terminal without -t.
    assert_eq!(
        piped.status.code(),
        Some(1),
        "tty exits 1 without one: {}",
        text(&piped)
    );
    assert_eq!(
        stdout(&piped),
        "HELLO\nWORLD\nnot a tty\n",
        "{}",
        text(&piped)
    );

    let nothing = t.run(&["exec", "talker"]);
    assert_eq!(
        nothing.status.code(),
        Some(2),
        "clap refuses a missing command: {}",
        text(&nothing)
    );
    t.clean().await;
}

#[tokio::test]
async fn exec_with_a_terminal_under_a_real_pty() {
    let t = Talkers::up("sleep 3600", "").await;
    // `script` gives the command a pseudo-terminal of its own: stdin is a terminal, so
    // -t takes effect; what the test writes is typed into it.
    let stevedore = format!(
        "{} exec -it talker --replica 0 --filename {} -n {} --manager {} -- sh",
        env!("CARGO_BIN_EXE_stevedore"),
        t.ws.dir.display(),
        t.ws.namespace,
        t.ws.manager
    );
    let mut session = Command::new("script")
        .args(["-qefc", &stevedore, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script");
    let mut keys = session.stdin.take().expect("stdin");
    keys.write_all(b"tty; echo $((6 * 7))x; exit 5\n")
        .expect("type");
    let started = Instant::now();
    let out = loop {
        if session.try_wait().expect("wait").is_some() {
            break session.wait_with_output().expect("output");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "exec -it did not end"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(keys);
    let screen = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(5),
        "the shell's exit code: {screen}"
    );
    assert!(
        screen.contains("/dev/pts/"),
        "a terminal inside the container: {screen}"
    );
    assert!(screen.contains("42x"), "typed input ran: {screen}");
    assert!(!screen.contains("not a tty"), "{screen}");
    t.clean().await;
}

#[tokio::test]
async fn restart_replaces_one_replica_at_a_time_behind_the_health_gate() {
    let health = "  healthCheck:\n    command: [\"sh\", \"-c\", \"test -e /tmp/up\"]\n    intervalSeconds: 1\n    timeoutSeconds: 1\n    retries: 3\n";
    let t = Talkers::up(
        "echo up in $(hostname); sleep 1; touch /tmp/up; sleep 3600",
        health,
    )
    .await;
    let before = [t.replica(0).await.id, t.replica(1).await.id];
    let asked = SystemTime::now();
    let out = t.run(&["restart", "talker"]);
    assert!(out.status.success(), "{}", text(&out));
    let ns = &t.ws.namespace;
    assert_eq!(
        stdout(&out),
        format!(
            "replica 0 restarted on edge-1 ({ns}_talker_0)\nreplica 1 restarted on edge-2 ({ns}_talker_1)\n"
        )
    );
    let after = [t.replica(0).await, t.replica(1).await];
    for (old, new) in before.iter().zip(&after) {
        assert_ne!(old, &new.id, "replaced");
        assert_eq!(new.state, ContainerState::Running);
    }
    // The second replica's new container was made only once the first's was healthy: its
    // first health check runs a full interval (1 s) after it starts.
    let first = inspect(&t.hosts[0], &after[0].id).await;
    let second = inspect(&t.hosts[1], &after[1].id).await;
    assert!(first.healthy, "replica 0's new container is healthy");
    assert!(first.created > asked, "replica 0's container is new");
    let gate = first.started + Duration::from_secs(1);
    assert!(
        second.created >= gate,
        "replica 1 was replaced before replica 0 could be healthy: created {:?}, replica 0 started {:?}",
        second.created,
        first.started
    );
    // The container the restart ended is kept, stopped, with its log: `--previous`.
    let previous = t.run(&["logs", "talker", "--replica", "0", "--previous"]);
    assert!(previous.status.success(), "{}", text(&previous));
    assert_eq!(stdout(&previous), format!("up in {}\n", &before[0][..12]));
    let kept = common::workspace::containers(&t.hosts[0], &t.ws.namespace).await;
    let names: Vec<(&str, ContainerState)> =
        kept.iter().map(|c| (c.name.as_str(), c.state)).collect();
    assert_eq!(
        names,
        vec![
            (format!("{ns}_talker_0").as_str(), ContainerState::Running),
            (
                format!("{ns}_talker_0-previous").as_str(),
                ContainerState::Exited
            )
        ],
    );
    // A daemon restart will not bring it back: its restart policy is `no` now.
    let previous_id = &kept[1].id;
    let docker = bollard::Docker::connect_with_unix(
        t.hosts[0].endpoint().trim_start_matches("unix://"),
        30,
        bollard::API_DEFAULT_VERSION,
    )
    .expect("bollard");
    let policy = docker
        .inspect_container(
            previous_id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .expect("inspect")
        .host_config
        .and_then(|h| h.restart_policy)
        .and_then(|p| p.name);
    assert_eq!(policy, Some(bollard::models::RestartPolicyNameEnum::NO));
    // Nothing left to converge: the restart made what `run` would have made.
    let plan = t.run(&["plan"]);
    assert!(stdout(&plan).contains("no changes"), "{}", text(&plan));
    t.clean().await;
}

struct Inspected {
    created: SystemTime,
    started: SystemTime,
    healthy: bool,
}

/// What the daemon knows of a container's creation, start and health.
async fn inspect(host: &DockerHost, id: &str) -> Inspected {
    let endpoint = host.endpoint().trim_start_matches("unix://").to_string();
    let docker = bollard::Docker::connect_with_unix(&endpoint, 30, bollard::API_DEFAULT_VERSION)
        .expect("bollard");
    let details = docker
        .inspect_container(
            id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .expect("inspect");
    let time = |at: Option<&str>| {
        humantime::parse_rfc3339_weak(at.expect("a time")).expect("an RFC 3339 time")
    };
    let state = details.state.expect("state");
    Inspected {
        created: time(details.created.as_deref()),
        started: time(state.started_at.as_deref()),
        healthy: state
            .health
            .and_then(|h| h.status)
            .is_some_and(|s| s == bollard::models::HealthStatusEnum::HEALTHY),
    }
}
