//! Registries: which one serves an image and its credentials, the Registry API v2 client
//! (catalog, tags, digests), and the bounded catalog a Registry's status shows.

pub mod catalog;
pub mod client;
pub mod credentials;
pub mod pinning;
pub mod refresh;
pub mod source;
