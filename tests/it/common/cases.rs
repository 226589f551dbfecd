//! Admission cases: for each validation, an object the API accepts and one it rejects, with
//! the field and message the rejection must name.

use serde_json::{Value, json};

use super::merged;

/// One validation with a passing and a failing object.
pub struct Case {
    /// What the case checks.
    pub name: &'static str,
    /// An object the validation accepts.
    pub valid: Value,
    /// An object the validation rejects.
    pub invalid: Value,
    /// The field the rejection names, e.g. `spec.tls`.
    pub field: &'static str,
    /// Part of the rejection's message.
    pub message: &'static str,
}

fn object(kind: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "stevedore.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "case", "namespace": "default"},
        "spec": spec,
    })
}

/// A minimal valid DockerTarget.
pub fn target() -> Value {
    object(
        "DockerTarget",
        json!({"endpoint": "unix:///var/run/docker.sock"}),
    )
}

/// A minimal valid Registry.
pub fn registry() -> Value {
    object("Registry", json!({"server": "registry.example.com:5000"}))
}

/// A minimal valid DockerContainer.
pub fn container() -> Value {
    object(
        "DockerContainer",
        json!({"image": "registry.example.com:5000/team/app:1.3", "placement": {"target": "edge-1"}}),
    )
}

fn case(
    name: &'static str,
    base: Value,
    valid: Value,
    invalid: Value,
    field: &'static str,
    message: &'static str,
) -> Case {
    Case {
        name,
        valid: merged(&base, &json!({ "spec": valid })),
        invalid: merged(&base, &json!({ "spec": invalid })),
        field,
        message,
    }
}

/// Every case, targets first, then registries, then containers.
pub fn all_cases() -> Vec<Case> {
    let mut cases = target_cases();
    cases.extend(registry_cases());
    cases.extend(container_cases());
    cases
}

fn target_cases() -> Vec<Case> {
    vec![
        case(
            "endpoint scheme",
            target(),
            json!({"endpoint": "ssh://docker@edge-1"}),
            json!({"endpoint": "ftp://edge-1"}),
            "spec.endpoint",
            "endpoint must start with unix://",
        ),
        case(
            "tls only with a TCP endpoint",
            target(),
            json!({"endpoint": "tcp://edge-1:2376", "tls": {"secretRef": {"name": "edge-1-tls"}}}),
            json!({"tls": {"secretRef": {"name": "edge-1-tls"}}}),
            "spec.tls",
            "tls is only valid with a tcp:// or https:// endpoint",
        ),
        case(
            "ssh only with an ssh endpoint",
            target(),
            json!({"endpoint": "ssh://docker@edge-1", "ssh": {"secretRef": {"name": "edge-1-ssh"}}}),
            json!({"endpoint": "tcp://edge-1:2376", "ssh": {"secretRef": {"name": "edge-1-ssh"}}}),
            "spec.ssh",
            "ssh is only valid with an ssh:// endpoint",
        ),
        case(
            "maxContainers not negative",
            target(),
            json!({"maxContainers": 0}),
            json!({"maxContainers": -1}),
            "spec.maxContainers",
            "less than the minimum",
        ),
        case(
            "unknown fields rejected",
            target(),
            json!({"unschedulable": true}),
            json!({"unschedulabel": true}),
            "spec.unschedulabel",
            "unknown field",
        ),
    ]
}

fn registry_cases() -> Vec<Case> {
    vec![
        case(
            "server is host[:port]",
            registry(),
            json!({"server": "10.0.0.5"}),
            json!({"server": "https://registry.example.com/v2"}),
            "spec.server",
            "server must be a host name or IP",
        ),
        case(
            "ca or insecure, not both",
            registry(),
            json!({"insecure": true}),
            json!({"insecure": true, "ca": {"secretRef": {"name": "reg-ca"}}}),
            "spec.insecure",
            "set either ca or insecure, not both",
        ),
        case(
            "refresh interval is a duration",
            registry(),
            json!({"catalog": {"refreshInterval": "1h30m"}}),
            json!({"catalog": {"refreshInterval": "ten minutes"}}),
            "spec.catalog.refreshInterval",
            "does not match",
        ),
        case(
            "maxTagsPerRepository bounded",
            registry(),
            json!({"catalog": {"maxTagsPerRepository": 1000}}),
            json!({"catalog": {"maxTagsPerRepository": 1001}}),
            "spec.catalog.maxTagsPerRepository",
            "greater than the maximum",
        ),
    ]
}

fn container_cases() -> Vec<Case> {
    let selector = json!({"matchLabels": {"site": "edge"}});
    vec![
        case(
            "image reference",
            container(),
            json!({"image": "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}),
            json!({"image": "not an image"}),
            "spec.image",
            "image must be a Docker image reference",
        ),
        case(
            "pull policy enum",
            container(),
            json!({"imagePullPolicy": "Never"}),
            json!({"imagePullPolicy": "Sometimes"}),
            "spec.imagePullPolicy",
            "is not one of",
        ),
        case(
            "placement has target xor targetSelector (both)",
            container(),
            json!({"placement": {"target": null, "targetSelector": selector}}),
            json!({"placement": {"targetSelector": selector}}),
            "spec.placement",
            "placement needs exactly one of target or targetSelector",
        ),
        case(
            "placement has target xor targetSelector (neither)",
            container(),
            json!({"placement": {"target": "edge-2"}}),
            json!({"placement": {"target": null, "replicas": 1}}),
            "spec.placement",
            "placement needs exactly one of target or targetSelector",
        ),
        case(
            "replicas above 1 need a selector",
            container(),
            json!({"placement": {"target": null, "targetSelector": selector, "replicas": 3}}),
            json!({"placement": {"replicas": 3}}),
            "spec.placement.replicas",
            "replicas greater than 1 need a targetSelector",
        ),
        case(
            "imageSource import xor build",
            container(),
            json!({"imageSource": {"import": {"url": "http://127.0.0.1:8000/rootfs.tar"}}}),
            json!({"imageSource": {
                "import": {"url": "http://127.0.0.1:8000/rootfs.tar"},
                "build": {"context": "http://127.0.0.1:8000/ctx.tar.gz"}
            }}),
            "spec.imageSource",
            "imageSource needs exactly one of import or build",
        ),
        case(
            "import url is http(s)",
            container(),
            json!({"imageSource": {"import": {"url": "https://example.com/rootfs.tar.gz"}}}),
            json!({"imageSource": {"import": {"url": "file:///etc/passwd"}}}),
            "spec.imageSource.import.url",
            "url must be an http:// or https:// URL",
        ),
        case(
            "build context is http(s)",
            container(),
            json!({"imageSource": {"build": {"context": "https://example.com/ctx.tar"}}}),
            json!({"imageSource": {"build": {"context": "/srv/ctx"}}}),
            "spec.imageSource.build.context",
            "context must be an http:// or https:// URL",
        ),
        case(
            "env value xor valueFrom (both)",
            container(),
            json!({"env": [{"name": "MODE", "value": "fast"}]}),
            json!({"env": [{"name": "MODE", "value": "fast",
                "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}}]}),
            "spec.env[0]",
            "env needs exactly one of value or valueFrom",
        ),
        case(
            "env value xor valueFrom (neither)",
            container(),
            json!({"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}}]}),
            json!({"env": [{"name": "TOKEN"}]}),
            "spec.env[0]",
            "env needs exactly one of value or valueFrom",
        ),
        case(
            "valueFrom names one source",
            container(),
            json!({"env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "a"}}}]}),
            json!({"env": [{"name": "A", "valueFrom": {}}]}),
            "spec.env[0].valueFrom",
            "valueFrom needs exactly one of secretKeyRef or configMapKeyRef",
        ),
        case(
            "env name is an identifier",
            container(),
            json!({"env": [{"name": "LOG.LEVEL", "value": "debug"}]}),
            json!({"env": [{"name": "1=bad", "value": "debug"}]}),
            "spec.env[0].name",
            "does not match",
        ),
        case(
            "envFrom names one source",
            container(),
            json!({"envFrom": [{"secretRef": {"name": "app-secrets"}, "prefix": "APP_"}]}),
            json!({"envFrom": [{"secretRef": {"name": "a"}, "configMapRef": {"name": "b"}}]}),
            "spec.envFrom[0]",
            "envFrom needs exactly one of secretRef or configMapRef",
        ),
        case(
            "container port in range",
            container(),
            json!({"ports": [{"containerPort": 65535}]}),
            json!({"ports": [{"containerPort": 0}]}),
            "spec.ports[0].containerPort",
            "less than the minimum",
        ),
        case(
            "host port in range",
            container(),
            json!({"ports": [{"containerPort": 80, "hostPort": 1}]}),
            json!({"ports": [{"containerPort": 80, "hostPort": 65536}]}),
            "spec.ports[0].hostPort",
            "greater than the maximum",
        ),
        case(
            "protocol TCP or UDP",
            container(),
            json!({"ports": [{"containerPort": 53, "protocol": "UDP"}]}),
            json!({"ports": [{"containerPort": 53, "protocol": "SCTP"}]}),
            "spec.ports[0].protocol",
            "is not one of",
        ),
        case(
            "hostIP is an address",
            container(),
            json!({"ports": [{"containerPort": 80, "hostPort": 8080, "hostIP": "::1"}]}),
            json!({"ports": [{"containerPort": 80, "hostPort": 8080, "hostIP": "localhost"}]}),
            "spec.ports[0].hostIP",
            "hostIP must be an IPv4 or IPv6 address",
        ),
        case(
            "bind needs an absolute source",
            container(),
            json!({"volumes": [{"type": "bind", "source": "/srv/data", "target": "/data"}]}),
            json!({"volumes": [{"type": "bind", "source": "srv/data", "target": "/data"}]}),
            "spec.volumes[0].source",
            "a bind volume needs an absolute source path on the host",
        ),
        case(
            "named volume needs a source",
            container(),
            json!({"volumes": [{"type": "volume", "source": "appdata", "target": "/data"}]}),
            json!({"volumes": [{"type": "volume", "target": "/data"}]}),
            "spec.volumes[0].source",
            "a named volume needs a source",
        ),
        case(
            "tmpfs takes no source",
            container(),
            json!({"volumes": [{"type": "tmpfs", "target": "/tmp"}]}),
            json!({"volumes": [{"type": "tmpfs", "source": "/srv", "target": "/tmp"}]}),
            "spec.volumes[0].source",
            "a tmpfs volume takes no source",
        ),
        case(
            "mount target is absolute",
            container(),
            json!({"volumes": [{"type": "tmpfs", "target": "/run/app"}]}),
            json!({"volumes": [{"type": "tmpfs", "target": "run/app"}]}),
            "spec.volumes[0].target",
            "target must be an absolute path in the container",
        ),
        case(
            "aliases need a user network",
            container(),
            json!({"network": {"mode": "backend", "aliases": ["api"]}}),
            json!({"network": {"mode": "bridge", "aliases": ["api"]}}),
            "spec.network.aliases",
            "aliases need a user-defined network",
        ),
        case(
            "cpus is a positive quantity",
            container(),
            json!({"resources": {"cpus": "500m"}}),
            json!({"resources": {"cpus": "lots"}}),
            "spec.resources.cpus",
            "cpus must be a positive number",
        ),
        case(
            "memory is a Kubernetes quantity",
            container(),
            json!({"resources": {"memory": "256Mi"}}),
            json!({"resources": {"memory": "256 megabytes"}}),
            "spec.resources.memory",
            "memory must be a positive Kubernetes quantity",
        ),
        case(
            "maxUnavailable and maxSurge not both 0",
            container(),
            json!({"updateStrategy": {"type": "RollingUpdate", "maxUnavailable": 0, "maxSurge": 1}}),
            json!({"updateStrategy": {"type": "RollingUpdate", "maxUnavailable": 0, "maxSurge": 0}}),
            "spec.updateStrategy",
            "maxUnavailable and maxSurge cannot both be 0",
        ),
        case(
            "stevedore.dev labels are reserved",
            container(),
            json!({"labels": {"team": "edge"}}),
            json!({"labels": {"stevedore.dev/managed": "false"}}),
            "spec.labels",
            "labels under stevedore.dev/ are reserved",
        ),
        case(
            "health check has a command",
            container(),
            json!({"healthCheck": {"command": ["wget", "-q", "-O-", "http://127.0.0.1:8080/"]}}),
            json!({"healthCheck": {"command": []}}),
            "spec.healthCheck.command",
            "has less than 1 item",
        ),
        case(
            "stop signal is a signal",
            container(),
            json!({"stopSignal": "SIGQUIT"}),
            json!({"stopSignal": "quit please"}),
            "spec.stopSignal",
            "does not match",
        ),
    ]
}
