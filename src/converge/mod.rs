//! The converge engine for one Docker target: what should run (the model), what differs
//! from what runs (the plan, a pure function), and making it so (the executor).
//!
//! ```text
//!   DockerContainer spec + resolved env ──> model::InstanceTemplate  ──┐
//!   DockerHost::list_labelled (one call) ──────────────────────────────┼─> plan::plan ──> executor
//!   daemon events ──> "converge again now" ────────────────────────────┘
//! ```
//! No Kubernetes here: the controller and standalone mode both drive this module.

pub mod container_config;
pub mod engine;
pub mod env;
pub mod events;
pub mod executor;
pub mod model;
pub mod plan;
pub mod quantity;
pub mod status;
