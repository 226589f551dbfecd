//! The Secrets and ConfigMaps of a namespace as the rest of Stevedore reads them: the
//! controller fills them from the API server, standalone mode from its manifests. Docker
//! connection material, registry credentials and container environments are all read
//! through [`EnvSources`], so none of them knows where the values came from.

use std::collections::BTreeMap;

/// The Secrets and ConfigMaps of one namespace, as far as the caller knows them.
pub trait EnvSources {
    /// A Secret's data (decoded bytes), or `None` when there is no such Secret.
    fn secret(&self, name: &str) -> Option<&BTreeMap<String, Vec<u8>>>;
    /// A ConfigMap's data, or `None` when there is no such ConfigMap.
    fn config_map(&self, name: &str) -> Option<&BTreeMap<String, String>>;
}

/// In-memory sources, for standalone mode and tests.
#[derive(Clone, Debug, Default)]
pub struct StaticSources {
    /// Secret name → key → value.
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// ConfigMap name → key → value.
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

impl EnvSources for StaticSources {
    fn secret(&self, name: &str) -> Option<&BTreeMap<String, Vec<u8>>> {
        self.secrets.get(name)
    }

    fn config_map(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.config_maps.get(name)
    }
}
