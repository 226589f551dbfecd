//! The fleet as both modes see it, and the one path from what is wanted to what each target
//! should run. The modes differ only in where the [`Snapshot`] comes from (the API server's
//! caches or the manifests) and where status goes.
//!
//! ```text
//!   stores (controller) ──┐                connections::observe: one list per target
//!   manifests (standalone) ┴─> Snapshot ──┬──> placing::place_snapshot ──┐
//!                                         └──> pins::pin_image ──────────┴─> desired::wanted
//!                                                          (per target: instances, or a Problem)
//! ```

pub mod connections;
pub mod desired;
pub mod pins;
pub mod placing;
mod snapshot;

pub use snapshot::{ContainerEntry, Recorded, Snapshot, TargetEntry};
