//! Helpers for tests, here and in `tests/` and `benches/`: builders of crate files, a scratch
//! registry, and the few internals the integration tests look at directly (the index path of
//! a name, git's index and history, tombstones, hashes). Not part of the registry's API.
#![doc(hidden)]

pub use super::index::git::{commit_all, history_is_linear, staged};
pub use super::index::index_path;
pub use super::publish::tarball::sha256_hex;
pub use super::publish::tarball::testing::*;
pub use super::versions::tombstone::find as find_tombstone;

#[cfg(test)]
pub(crate) use super::auth::scratch_registry;
#[cfg(test)]
pub(crate) use super::publish::crateinfo::render_readme;
