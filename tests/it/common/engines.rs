//! The engines the harness runs — Docker 20.10 (the machine's own), Docker 26 and Podman
//! 4.3 — and the simulated daemon the fleet benchmarks use (`sim`), which must pass the
//! same scenarios, so that one scenario can run against each: `on_every_engine!(scenario)` makes a
//! module `scenario` with one test per engine, each calling `scenario(engine)` (invoke it as
//! `crate::on_every_engine!`: it is exported at the test binary's root).

use stevedore::api::DockerTargetSpec;
use stevedore::docker::ConnectionMaterial;

use super::TestEnv;

/// An engine of the harness, reached over its unix socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// The machine's own Docker 20.10 (API 1.41).
    Docker20,
    /// Debian trixie's Docker 26.1 (API 1.45).
    Docker26,
    /// Podman 4.3's Docker-compatible service.
    Podman,
    /// The simulated daemon of `common::sim`, served from this test process.
    Simulated,
}

impl Engine {
    /// The engine's unix socket address (`unix://…`), for the docker CLI and target specs.
    pub fn address(self, env: &TestEnv) -> String {
        let variable = match self {
            Self::Docker20 => "MAIN_HOST",
            Self::Docker26 => "DOCKER26_HOST",
            Self::Podman => "PODMAN_HOST",
            Self::Simulated => return super::sim::shared().address(0),
        };
        env.get(variable)
    }

    /// The network a container joins when it names none: `bridge` on Docker, `podman` on
    /// Podman.
    pub fn default_network(self) -> &'static str {
        match self {
            Self::Docker20 | Self::Docker26 | Self::Simulated => "bridge",
            Self::Podman => "podman",
        }
    }

    /// Whether the engine can change a container's restart policy (Podman 4 has no
    /// update endpoint), which keeping a replaced `always` container needs.
    pub fn can_change_restart_policy(self) -> bool {
        self != Self::Podman
    }

    /// The engine as a target spec (a unix socket needs no Secret material).
    pub fn host(self, env: &TestEnv) -> (DockerTargetSpec, ConnectionMaterial) {
        (
            super::hosts::spec(&self.address(env)),
            ConnectionMaterial::default(),
        )
    }
}

/// One `#[tokio::test]` per engine for each named `async fn scenario(engine: Engine)`.
#[macro_export]
macro_rules! on_every_engine {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            use super::common::engines::Engine;

            #[tokio::test]
            async fn docker_20() {
                super::$scenario(Engine::Docker20).await;
            }

            #[tokio::test]
            async fn docker_26() {
                super::$scenario(Engine::Docker26).await;
            }

            #[tokio::test]
            async fn podman() {
                super::$scenario(Engine::Podman).await;
            }

            #[tokio::test]
            async fn simulated() {
                super::$scenario(Engine::Simulated).await;
            }
        }
    )+};
}
