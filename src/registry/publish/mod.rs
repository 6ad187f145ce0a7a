//! The way in: checking a crate file (its archive, its metadata and the targets its
//! dependencies name) and the page files written beside it.

pub mod crateinfo;
pub mod metadata;
pub mod platform;
pub mod tarball;
