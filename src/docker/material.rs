//! A target's connection material, read from the Secrets its spec names, and a fingerprint
//! that tells when a connection made with older material must be replaced.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use super::connect::{ConnectionMaterial, SshMaterial, TlsMaterial};
use super::error::{DockerError, ErrorKind};
use crate::api::DockerTargetSpec;
use crate::sources::EnvSources;

/// The TLS and ssh material a target's Secrets hold. A missing Secret or key is an
/// `InvalidConfig` error that names the field and the Secret (never a value).
pub fn target_material(
    spec: &DockerTargetSpec,
    sources: &dyn EnvSources,
) -> Result<ConnectionMaterial, DockerError> {
    let missing = |field: &str, name: &str, what: &str| {
        DockerError::new(
            ErrorKind::InvalidConfig,
            format!("spec.{field}.secretRef: Secret {name} {what}"),
        )
    };
    let mut material = ConnectionMaterial::default();
    if let Some(tls) = &spec.tls {
        let name = &tls.secret_ref.name;
        let data = sources
            .secret(name)
            .ok_or_else(|| missing("tls", name, "not found"))?;
        let get = |key: &str| {
            data.get(key)
                .cloned()
                .ok_or_else(|| missing("tls", name, &format!("has no key {key}")))
        };
        material.tls = Some(TlsMaterial {
            ca: get("ca.crt")?,
            cert: get("tls.crt")?,
            key: get("tls.key")?,
        });
    }
    if let Some(ssh) = &spec.ssh {
        let name = &ssh.secret_ref.name;
        let data: &BTreeMap<String, Vec<u8>> = sources
            .secret(name)
            .ok_or_else(|| missing("ssh", name, "not found"))?;
        material.ssh = Some(SshMaterial {
            private_key: data
                .get("ssh-privatekey")
                .cloned()
                .ok_or_else(|| missing("ssh", name, "has no key ssh-privatekey"))?,
            known_hosts: data.get("known_hosts").cloned(),
        });
    }
    Ok(material)
}

/// A hash of the spec and the material a connection is made with: when it changes (a new
/// endpoint, a rotated certificate or key), the connection is made anew.
pub fn fingerprint(
    spec: &DockerTargetSpec,
    material: &Result<ConnectionMaterial, DockerError>,
) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(spec)
        .unwrap_or_default()
        .hash(&mut hasher);
    if let Ok(material) = material {
        if let Some(tls) = &material.tls {
            (&tls.ca, &tls.cert, &tls.key).hash(&mut hasher);
        }
        if let Some(ssh) = &material.ssh {
            (&ssh.private_key, &ssh.known_hosts).hash(&mut hasher);
        }
    }
    hasher.finish()
}
