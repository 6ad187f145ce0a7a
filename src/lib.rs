//! Palletizer: a small self-hosted Cargo registry.
//!
//! - [`registry`]: the registry as files (index repository, crate files, settings); synchronous.
//! - [`cli`]: the `palletizer` command line over the registry.

pub mod cli;
pub mod http;
pub mod net;
pub mod registry;
