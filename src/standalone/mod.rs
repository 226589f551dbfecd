//! Standalone mode: the same manifests a GitOps repository holds, run with no cluster —
//! like a kubelet's static pods or `docker compose up`.
//!
//! ```text
//!   files ──> manifests::load (schema + CEL, like the API server) ──┐
//!   daemons' container labels (what runs where) ────────────────────┼─> world::Round
//!        placement ──> desired set per target ──> converge engine per target
//! ```

pub mod commands;
pub mod manifests;
pub mod report;
pub mod world;
