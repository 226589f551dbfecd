//! Connecting to the harness's real daemons over every transport, and the classified errors
//! when a connection cannot work.

use crate::common;

use common::{TestEnv, hosts, sim};
use stevedore::docker::{ConnectOptions, ConnectionMaterial, ErrorKind, connect};

#[tokio::test]
async fn every_transport_connects_and_reports_server_info() {
    let env = TestEnv::load();
    for (name, (spec, material)) in [
        ("unix", hosts::main(&env)),
        ("second unix", hosts::second(&env)),
        ("tls", hosts::tls(&env)),
        ("ssh", hosts::ssh(&env)),
    ] {
        let host = connect(&spec, &material, ConnectOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let info = host
            .server_info()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!info.version.is_empty(), "{name}: no version");
        assert!(
            info.api_version.as_str() >= "1.41",
            "{name}: api {}",
            info.api_version
        );
        assert_eq!(info.os, "linux", "{name}");
        assert!(info.cpus > 0 && info.memory_bytes > 0, "{name}: {info:?}");
        let images = host
            .list_images()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            images.iter().any(|i| i.reference == env.get("IMAGE_V1")),
            "{name}: test image missing from {images:?}"
        );
    }
}

#[tokio::test]
async fn a_daemon_certificate_from_another_ca_is_a_tls_error() {
    let env = TestEnv::load();
    let (spec, _) = hosts::tls(&env);
    let material = ConnectionMaterial {
        tls: Some(hosts::tls_material(&env, &env.get("OTHER_CA"))),
        ssh: None,
    };
    let error = connect(&spec, &material, ConnectOptions::default())
        .await
        .expect_err("a foreign CA was trusted");
    assert_eq!(error.kind, ErrorKind::TlsError, "{error}");
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_a_tls_error() {
    let env = TestEnv::load();
    let (mut spec, _) = hosts::tls(&env);
    spec.tls = None;
    let error = connect(
        &spec,
        &ConnectionMaterial::default(),
        ConnectOptions::default(),
    )
    .await
    .expect_err("plain HTTP answered");
    assert_eq!(error.kind, ErrorKind::TlsError, "{error}");
}

#[tokio::test]
async fn a_missing_socket_is_unreachable() {
    let env = TestEnv::load();
    let (mut spec, material) = hosts::main(&env);
    spec.endpoint = format!("unix://{}/no-such.sock", env.get("DIR"));
    let error = connect(&spec, &material, ConnectOptions::default())
        .await
        .expect_err("connected to nothing");
    assert_eq!(error.kind, ErrorKind::Unreachable, "{error}");
}

#[tokio::test]
async fn a_closed_loopback_port_is_unreachable() {
    let env = TestEnv::load();
    let (mut spec, material) = hosts::main(&env);
    // Port 1 on loopback: nothing listens there.
    spec.endpoint = "tcp://127.0.0.1:1".into();
    let error = connect(&spec, &material, ConnectOptions::default())
        .await
        .expect_err("connected to nothing");
    assert_eq!(error.kind, ErrorKind::Unreachable, "{error}");
}

#[tokio::test]
async fn an_unauthorized_ssh_key_is_an_auth_error() {
    let env = TestEnv::load();
    let (spec, mut material) = hosts::ssh(&env);
    let other_key = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(std::env::temp_dir().join(format!("stevedore-test-key-{}", std::process::id())))
        .status()
        .expect("ssh-keygen");
    assert!(other_key.success());
    let key_path = std::env::temp_dir().join(format!("stevedore-test-key-{}", std::process::id()));
    if let Some(ssh) = material.ssh.as_mut() {
        ssh.private_key = std::fs::read(&key_path).expect("read generated key");
    }
    let _ = std::fs::remove_file(&key_path);
    let _ = std::fs::remove_file(key_path.with_extension("pub"));
    let error = connect(&spec, &material, ConnectOptions::default())
        .await
        .expect_err("an unknown key was accepted");
    assert_eq!(error.kind, ErrorKind::AuthError, "{error}");
}

#[tokio::test]
async fn an_unknown_ssh_host_key_is_an_auth_error() {
    let env = TestEnv::load();
    let (spec, mut material) = hosts::ssh(&env);
    if let Some(ssh) = material.ssh.as_mut() {
        // A known_hosts naming a different key for the host (the client's own public key):
        // what a man in the middle would look like.
        let real = std::fs::read_to_string(env.get("SSH_KNOWN_HOSTS")).expect("known_hosts");
        let host = real.split_whitespace().next().expect("host field");
        let other =
            std::fs::read_to_string(format!("{}.pub", env.get("SSH_KEY"))).expect("pub key");
        let mut fields = other.split_whitespace();
        let (kind, key) = (fields.next().expect("type"), fields.next().expect("key"));
        ssh.known_hosts = Some(format!("{host} {kind} {key}\n").into_bytes());
    }
    let error = connect(&spec, &material, ConnectOptions::default())
        .await
        .expect_err("an unknown host key was accepted");
    assert_eq!(error.kind, ErrorKind::AuthError, "{error}");
}

/// Bollard's own clients open a connection per call; Stevedore's keep one open while calls
/// follow one another, and open more only for calls made at once.
#[tokio::test]
async fn calls_in_a_row_share_one_connection() {
    let env = TestEnv::load();
    let (images, registry) = sim::harness_world(&env);
    let dir = std::env::temp_dir().join(format!("stevedore-pool-{}", std::process::id()));
    let sim = sim::Simulator::start(&dir, 1, &images, registry, sim::Profile::instant());
    let daemon = sim.daemon(0);
    let host = connect(
        &hosts::spec(&sim.address(0)),
        &ConnectionMaterial::default(),
        ConnectOptions::default(),
    )
    .await
    .expect("connect to the simulated daemon");
    let list = || host.list_labelled("stevedore.dev/target", "nobody");
    for _ in 0..20 {
        list().await.expect("list");
    }
    // The connect's /version call and the twenty lists: one connection.
    assert_eq!(daemon.connections(), 1);
    let at_once = futures::future::join_all((0..4).map(|_| list())).await;
    assert!(at_once.iter().all(Result::is_ok), "{at_once:?}");
    let after_burst = daemon.connections();
    assert!(
        (2..=4).contains(&after_burst),
        "four calls at once, {after_burst} connections"
    );
    for _ in 0..20 {
        list().await.expect("list");
    }
    assert_eq!(
        daemon.connections(),
        after_burst,
        "the idle ones were reused"
    );
    assert_eq!(daemon.calls().get("list"), Some(&44));
}
