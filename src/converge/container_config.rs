//! Maps a `DockerContainer` spec onto the Engine API's container-create body, field by
//! field, so that what the spec says is exactly what the daemon is asked to run.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, Mount, MountType,
    NetworkingConfig, PortBinding, RestartPolicy as DockerRestartPolicy, RestartPolicyNameEnum,
};

use super::env::ResolvedEnv;
use super::quantity::{QuantityError, parse_quantity};
use crate::api::container::{
    DockerContainerSpec, PortMapping, Protocol, RestartPolicy, VolumeMount, VolumeType,
};

const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// A spec value that cannot be expressed to Docker.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The spec field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    fn quantity(field: &str, error: QuantityError) -> Self {
        Self {
            field: field.to_string(),
            message: error.to_string(),
        }
    }
}

/// `8080/tcp`: Docker's key for a container port.
pub fn port_key(port: &PortMapping) -> String {
    let protocol = match port.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    format!("{}/{protocol}", port.container_port)
}

/// Networks Docker knows by these names; any other mode is a user-defined network.
pub fn is_builtin_network(mode: &str) -> bool {
    matches!(mode, "bridge" | "host" | "none" | "default") || mode.starts_with("container:")
}

/// The create body for `spec` running `image` with the resolved `env` and `labels`.
pub fn create_body(
    spec: &DockerContainerSpec,
    image: &str,
    env: &ResolvedEnv,
    labels: HashMap<String, String>,
) -> Result<ContainerCreateBody, ConfigError> {
    let mut exposed_ports = Vec::new();
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for port in &spec.ports {
        let key = port_key(port);
        if !exposed_ports.contains(&key) {
            exposed_ports.push(key.clone());
        }
        if let Some(host_port) = port.host_port {
            port_bindings
                .entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: port.host_ip.clone(),
                    host_port: Some(host_port.to_string()),
                });
        }
    }

    let network = spec.network.clone().unwrap_or_default();
    let networking_config = (!is_builtin_network(&network.mode) && !network.aliases.is_empty())
        .then(|| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.mode.clone(),
                EndpointSettings {
                    aliases: Some(network.aliases.clone()),
                    ..Default::default()
                },
            )])),
        });

    let resources = spec.resources.clone().unwrap_or_default();
    let nano_cpus = resources
        .cpus
        .as_deref()
        .map(|cpus| {
            parse_quantity(cpus)
                .map(|q| (q * NANOS_PER_SECOND as f64).round() as i64)
                .map_err(|e| ConfigError::quantity("spec.resources.cpus", e))
        })
        .transpose()?;
    let memory = resources
        .memory
        .as_deref()
        .map(|memory| {
            parse_quantity(memory)
                .map(|q| q.round() as i64)
                .map_err(|e| ConfigError::quantity("spec.resources.memory", e))
        })
        .transpose()?;

    let host_config = HostConfig {
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        mounts: (!spec.volumes.is_empty()).then(|| spec.volumes.iter().map(mount).collect()),
        network_mode: Some(network.mode.clone()),
        nano_cpus,
        memory,
        restart_policy: Some(restart_policy(spec.restart_policy)),
        cap_add: (!spec.cap_add.is_empty()).then(|| spec.cap_add.clone()),
        cap_drop: (!spec.cap_drop.is_empty()).then(|| spec.cap_drop.clone()),
        privileged: Some(spec.privileged),
        readonly_rootfs: Some(spec.read_only_root_filesystem),
        ..Default::default()
    };

    Ok(ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: (!spec.command.is_empty()).then(|| spec.command.clone()),
        cmd: (!spec.args.is_empty()).then(|| spec.args.clone()),
        env: (!env.is_empty()).then(|| {
            env.iter()
                .map(|(name, value)| format!("{name}={}", value.value))
                .collect()
        }),
        exposed_ports: (!exposed_ports.is_empty()).then_some(exposed_ports),
        healthcheck: spec.health_check.as_ref().map(|check| HealthConfig {
            test: Some(
                std::iter::once("CMD".to_string())
                    .chain(check.command.iter().cloned())
                    .collect(),
            ),
            interval: Some(i64::from(check.interval_seconds) * NANOS_PER_SECOND),
            timeout: Some(i64::from(check.timeout_seconds) * NANOS_PER_SECOND),
            retries: Some(i64::from(check.retries)),
            start_period: Some(i64::from(check.start_period_seconds) * NANOS_PER_SECOND),
            start_interval: None,
        }),
        labels: Some(labels),
        user: spec.user.clone(),
        working_dir: spec.working_dir.clone(),
        hostname: spec.hostname.clone(),
        stop_signal: Some(spec.stop_signal.clone()),
        stop_timeout: Some(i64::from(spec.stop_timeout_seconds)),
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    })
}

fn mount(volume: &VolumeMount) -> Mount {
    Mount {
        typ: Some(match volume.kind {
            VolumeType::Bind => MountType::BIND,
            VolumeType::Volume => MountType::VOLUME,
            VolumeType::Tmpfs => MountType::TMPFS,
        }),
        source: volume.source.clone(),
        target: Some(volume.target.clone()),
        read_only: Some(volume.read_only),
        ..Default::default()
    }
}

fn restart_policy(policy: RestartPolicy) -> DockerRestartPolicy {
    DockerRestartPolicy {
        name: Some(match policy {
            RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
            RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
            RestartPolicy::Never => RestartPolicyNameEnum::NO,
        }),
        maximum_retry_count: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::converge::env::{EnvOrigin, EnvValue};

    fn spec(extra: serde_json::Value) -> DockerContainerSpec {
        let mut base = serde_json::json!({"image": "app:1", "placement": {"target": "t"}});
        if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(base).expect("spec")
    }

    fn body(extra: serde_json::Value) -> ContainerCreateBody {
        create_body(&spec(extra), "app:1", &ResolvedEnv::new(), HashMap::new()).expect("body")
    }

    fn host(extra: serde_json::Value) -> HostConfig {
        body(extra).host_config.expect("host config")
    }

    #[test]
    fn image_is_the_resolved_reference() {
        let b = create_body(
            &spec(serde_json::json!({})),
            "app@sha256:ab",
            &ResolvedEnv::new(),
            HashMap::new(),
        )
        .expect("body");
        assert_eq!(b.image.as_deref(), Some("app@sha256:ab"));
    }

    #[test]
    fn command_replaces_the_entrypoint_and_args_the_cmd() {
        let b = body(serde_json::json!({"command": ["httpd"], "args": ["-f", "-p", "80"]}));
        assert_eq!(b.entrypoint, Some(vec!["httpd".to_string()]));
        assert_eq!(b.cmd, Some(vec!["-f".into(), "-p".into(), "80".into()]));
        let b = body(serde_json::json!({}));
        assert_eq!(
            (b.entrypoint, b.cmd),
            (None, None),
            "unset keeps the image's own"
        );
    }

    #[test]
    fn env_is_name_equals_value() {
        let env = ResolvedEnv::from([(
            "A".to_string(),
            EnvValue {
                value: "x=y".into(),
                origin: EnvOrigin::Literal,
            },
        )]);
        let b =
            create_body(&spec(serde_json::json!({})), "app:1", &env, HashMap::new()).expect("body");
        assert_eq!(b.env, Some(vec!["A=x=y".to_string()]));
    }

    #[test]
    fn ports_are_exposed_and_published_with_protocol_and_host_ip() {
        let b = body(serde_json::json!({"ports": [
            {"containerPort": 8080, "hostPort": 18080, "hostIP": "127.0.0.1"},
            {"containerPort": 53, "protocol": "UDP"}
        ]}));
        assert_eq!(
            b.exposed_ports,
            Some(vec!["8080/tcp".to_string(), "53/udp".to_string()])
        );
        let bindings = b
            .host_config
            .and_then(|h| h.port_bindings)
            .expect("bindings");
        let binding = &bindings["8080/tcp"].as_ref().expect("8080 bound")[0];
        assert_eq!(binding.host_port.as_deref(), Some("18080"));
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        assert!(
            !bindings.contains_key("53/udp"),
            "no hostPort, not published"
        );
    }

    #[test]
    fn volumes_become_mounts_of_their_type() {
        let mounts = host(serde_json::json!({"volumes": [
            {"type": "bind", "source": "/srv", "target": "/data", "readOnly": true},
            {"type": "volume", "source": "cache", "target": "/cache"},
            {"type": "tmpfs", "target": "/tmp"}
        ]}))
        .mounts
        .expect("mounts");
        assert_eq!(mounts[0].typ, Some(MountType::BIND));
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(mounts[1].typ, Some(MountType::VOLUME));
        assert_eq!(mounts[1].source.as_deref(), Some("cache"));
        assert_eq!(mounts[2].typ, Some(MountType::TMPFS));
        assert_eq!(mounts[2].source, None);
    }

    #[test]
    fn network_mode_and_aliases() {
        assert_eq!(
            host(serde_json::json!({})).network_mode.as_deref(),
            Some("bridge")
        );
        let b = body(serde_json::json!({"network": {"mode": "backend", "aliases": ["api"]}}));
        assert_eq!(
            b.host_config.and_then(|h| h.network_mode).as_deref(),
            Some("backend")
        );
        let endpoints = b
            .networking_config
            .and_then(|n| n.endpoints_config)
            .expect("endpoints");
        assert_eq!(endpoints["backend"].aliases, Some(vec!["api".to_string()]));
    }

    #[test]
    fn cpus_and_memory_become_nano_cpus_and_bytes() {
        let h = host(serde_json::json!({"resources": {"cpus": "500m", "memory": "256Mi"}}));
        assert_eq!(h.nano_cpus, Some(500_000_000));
        assert_eq!(h.memory, Some(256 * 1024 * 1024));
        let h = host(serde_json::json!({"resources": {"cpus": "1.5"}}));
        assert_eq!(h.nano_cpus, Some(1_500_000_000));
    }

    #[test]
    fn restart_policy_maps_onto_the_daemons() {
        let name = |p: &str| {
            host(serde_json::json!({"restartPolicy": p}))
                .restart_policy
                .and_then(|r| r.name)
        };
        assert_eq!(name("Always"), Some(RestartPolicyNameEnum::ALWAYS));
        assert_eq!(name("OnFailure"), Some(RestartPolicyNameEnum::ON_FAILURE));
        assert_eq!(name("Never"), Some(RestartPolicyNameEnum::NO));
    }

    #[test]
    fn health_check_runs_the_command_without_a_shell() {
        let check = body(serde_json::json!({"healthCheck": {
            "command": ["wget", "-q", "http://127.0.0.1/"], "intervalSeconds": 2,
            "timeoutSeconds": 1, "retries": 4, "startPeriodSeconds": 3
        }}))
        .healthcheck
        .expect("health");
        assert_eq!(
            check.test,
            Some(vec![
                "CMD".into(),
                "wget".into(),
                "-q".into(),
                "http://127.0.0.1/".into()
            ])
        );
        assert_eq!(check.interval, Some(2_000_000_000));
        assert_eq!(check.timeout, Some(1_000_000_000));
        assert_eq!(check.retries, Some(4));
        assert_eq!(check.start_period, Some(3_000_000_000));
    }

    #[test]
    fn labels_are_passed_through() {
        let labels = HashMap::from([("team".to_string(), "edge".to_string())]);
        let b = create_body(
            &spec(serde_json::json!({})),
            "app:1",
            &ResolvedEnv::new(),
            labels.clone(),
        )
        .expect("body");
        assert_eq!(b.labels, Some(labels));
    }

    #[test]
    fn user_working_dir_and_hostname() {
        let b = body(
            serde_json::json!({"user": "1000:1000", "workingDir": "/srv", "hostname": "web-1"}),
        );
        assert_eq!(b.user.as_deref(), Some("1000:1000"));
        assert_eq!(b.working_dir.as_deref(), Some("/srv"));
        assert_eq!(b.hostname.as_deref(), Some("web-1"));
    }

    #[test]
    fn capabilities_privileged_and_read_only_root() {
        let h = host(
            serde_json::json!({"capAdd": ["NET_ADMIN"], "capDrop": ["ALL"],
            "privileged": true, "readOnlyRootFilesystem": true}),
        );
        assert_eq!(h.cap_add, Some(vec!["NET_ADMIN".to_string()]));
        assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(h.privileged, Some(true));
        assert_eq!(h.readonly_rootfs, Some(true));
    }

    #[test]
    fn stop_timeout_and_signal() {
        let b = body(serde_json::json!({"stopTimeoutSeconds": 30, "stopSignal": "SIGQUIT"}));
        assert_eq!(b.stop_timeout, Some(30));
        assert_eq!(b.stop_signal.as_deref(), Some("SIGQUIT"));
        let b = body(serde_json::json!({}));
        assert_eq!(
            (b.stop_timeout, b.stop_signal.as_deref()),
            (Some(10), Some("SIGTERM"))
        );
    }

    #[test]
    fn an_unparseable_quantity_names_the_field() {
        let error = create_body(
            &spec(serde_json::json!({"resources": {"memory": "lots"}})),
            "app:1",
            &ResolvedEnv::new(),
            HashMap::new(),
        )
        .expect_err("bad quantity");
        assert_eq!(error.field, "spec.resources.memory");
    }
}
