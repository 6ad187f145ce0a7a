//! A published version's later life: the tombstones a delete leaves.

pub mod tombstone;
