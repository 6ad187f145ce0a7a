//! Palletizer: a small self-hosted Cargo registry.
//!
//! - [`registry`]: the registry as files (index repository, crate files, settings); synchronous.
//! - [`http`]: HTTP/1.1 on bytes: the route table, responses, the handlers. Knows no sockets.
//! - [`mirror`]: a caching mirror of crates.io beside the registry: its files, its
//!   upstream client, its policy; synchronous.
//! - [`net`]: the event loop: sockets, connections, TLS, timers, the worker threads.
//! - [`server`]: starts the server: opens the registry, binds, starts the threads, hands
//!   the pieces to the loop.
//! - [`webhooks`]: the server's webhook deliveries from the registry's queue on disk.
//! - [`cli`]: the `palletizer` command line over the registry.
//! - [`log`]: the one logger, honouring `-q` and `-v`.

#[macro_use]
pub mod log;

pub mod cli;
pub mod http;
pub mod mirror;
pub mod net;
pub mod registry;
pub mod server;
pub mod webhooks;
