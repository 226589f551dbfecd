//! Stevedore's integration tests, one binary: each file is a module, and `common` (the
//! harness's addresses, fixtures, the fake API server, the tripwire proxy) is compiled
//! once for all of them instead of once per test file.
//!
//! `tests/daemon_restart.rs` stays a binary of its own: it restarts the harness's second
//! daemon, which tests here use, so it must never run beside them.
//!
//! The gated suites run with `cargo test --test it -- --ignored --test-threads=1 e2e_`
//! (and `STEVEDORE_E2E_KUBECONFIG`).

mod common;

mod admission;
mod architecture;
mod bad_input;
mod chart;
mod controller;
mod converge;
mod crd_cost;
mod crds;
mod day_two;
mod docker_connect;
mod dockerfile;
mod e2e_controller;
mod e2e_kube;
mod e2e_shards;
mod examples;
mod gitops_health;
mod harness;
mod image_source;
mod partition;
mod pinning;
mod registry;
mod reliability;
mod secrets;
mod shutdown;
mod simulator;
mod standalone;
