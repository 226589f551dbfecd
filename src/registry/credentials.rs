//! Pull credentials: the Registry a container names (`registryRef`) or the one whose
//! `server` is the image's host, and the `kubernetes.io/basic-auth` or
//! `kubernetes.io/dockerconfigjson` Secret it points to.

use crate::api::Registry;
use crate::docker::PullCredentials;
use crate::sources::EnvSources;

/// The registry host of an image reference (`host:5000/team/app:1` → `host:5000`), or
/// `None` for an image on the default registry (`busybox`, `team/app`).
pub fn image_host(image: &str) -> Option<&str> {
    let (first, _) = image.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
}

/// The Registry among `registries` (name, object) that serves `image`: the one named by
/// `registry_ref`, else the one whose `server` is the image's host. When several Registries
/// name that server, the one whose name sorts first wins, whatever order the caller's
/// cache holds them in (a container never flips between two sets of credentials).
pub fn registry_for<'a>(
    image: &str,
    registry_ref: Option<&str>,
    registries: impl IntoIterator<Item = (&'a str, &'a Registry)>,
) -> Option<(&'a str, &'a Registry)> {
    let host = image_host(image);
    registries
        .into_iter()
        .filter(|(name, registry)| match registry_ref {
            Some(wanted) => *name == wanted,
            None => host == Some(registry.spec.server.as_str()),
        })
        .min_by_key(|(name, _)| *name)
}

/// The credentials in a Registry's Secret, or `None` when it names none or the Secret
/// holds nothing usable for its server.
pub fn credentials_of(registry: &Registry, sources: &dyn EnvSources) -> Option<PullCredentials> {
    let secret_name = &registry.spec.credentials.as_ref()?.secret_ref.name;
    let data = sources.secret(secret_name)?;
    let server = registry.spec.server.clone();
    if let (Some(username), Some(password)) = (data.get("username"), data.get("password")) {
        return Some(PullCredentials {
            username: String::from_utf8_lossy(username).into_owned(),
            password: String::from_utf8_lossy(password).into_owned(),
            server,
        });
    }
    let config: serde_json::Value = serde_json::from_slice(data.get(".dockerconfigjson")?).ok()?;
    let auth = config.get("auths")?.get(&server)?;
    let (username, password) = match (auth.get("username"), auth.get("password")) {
        (Some(u), Some(p)) => (u.as_str()?.to_string(), p.as_str()?.to_string()),
        _ => {
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.get("auth")?.as_str()?)
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (u, p) = text.split_once(':')?;
            (u.to_string(), p.to_string())
        }
    };
    Some(PullCredentials {
        username,
        password,
        server,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_host_needs_a_dot_a_port_or_localhost() {
        assert_eq!(
            image_host("reg.example.com/team/app:1"),
            Some("reg.example.com")
        );
        assert_eq!(image_host("127.0.0.1:5000/app"), Some("127.0.0.1:5000"));
        assert_eq!(image_host("localhost/app"), Some("localhost"));
        assert_eq!(image_host("team/app:1"), None);
        assert_eq!(image_host("busybox"), None);
    }

    fn registry(server: &str) -> Registry {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "stevedore.dev/v1alpha1", "kind": "Registry",
            "metadata": {"name": "unused"}, "spec": {"server": server},
        }))
        .expect("registry")
    }

    #[test]
    fn the_registry_is_the_named_one_or_the_first_by_name_serving_the_host() {
        let (a, b, other) = (
            registry("reg.example.com"),
            registry("reg.example.com"),
            registry("other.example.com"),
        );
        let image = "reg.example.com/team/app:1";
        for order in [
            vec![("zeta", &b), ("alpha", &a), ("other", &other)],
            vec![("alpha", &a), ("other", &other), ("zeta", &b)],
        ] {
            let name = |r: Option<&str>| registry_for(image, r, order.clone()).map(|(n, _)| n);
            assert_eq!(name(None), Some("alpha"), "whatever the order");
            assert_eq!(name(Some("zeta")), Some("zeta"));
            assert_eq!(name(Some("missing")), None);
        }
        assert!(registry_for("team/app:1", None, [("alpha", &a)]).is_none());
    }
}
