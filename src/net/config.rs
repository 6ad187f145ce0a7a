//! The server's configuration file:
//!
//! ```toml
//! registry = "/srv/reg"          # default: the config file's folder
//!
//! [[listener]]
//! bind = "[::1]:8080"
//!
//! [[listener]]
//! bind = "127.0.0.1:4333"
//! tls = {
//!    private_key = "key.pem",
//!    certificate_chain = "fullchain.pem",
//! }
//!
//! [[listener]]                   # answers GET /metrics without a token, and nothing else
//! bind = "127.0.0.1:9100"
//! metrics = true
//!
//! [limits]                       # all optional
//! max-connections = 1024
//! open-files = 16384             # per tree; fewer if the descriptor limit is low
//! requests-per-second = 1000     # per peer address (IPv6: per /64); 0 turns it off
//! request-burst = 10000
//! auth-failures-per-minute = 30  # refused tokens per peer address
//! auth-failure-burst = 30
//! uploads-per-token = 32         # publishes in progress at once
//! ```
//!
//! Request bodies are bounded by what they are for: a publish by the registry's
//! `max-crate-size` plus 1 MiB of metadata, anything else by a small fixed cap.
//!
//! Relative paths are relative to the config file's folder, not the working directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub private_key: PathBuf,
    pub certificate_chain: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `host:port`; port 0 picks a free port (printed at start).
    pub bind: String,
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// A listener for the metrics scraper: it serves `/metrics` without a token and answers
    /// everything else 404, so it can be opened to a monitoring network without opening
    /// the registry there.
    #[serde(default)]
    pub metrics: bool,
}

/// Bounds on what clients can make the server hold.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Limits {
    /// Open connections; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Largest request head (request line and headers), bytes.
    pub max_head: usize,
    /// Time allowed for a whole request head to arrive, once a connection is opened or a
    /// first byte of a head arrived.
    pub head_timeout_ms: u64,
    /// Time an idle kept-alive connection stays open.
    pub idle_timeout_ms: u64,
    /// Time allowed between two reads of a request body, or two writes of a response.
    pub io_timeout_ms: u64,
    /// On SIGTERM, time allowed for responses in flight before exiting.
    pub shutdown_grace_ms: u64,
    /// Open files kept per served tree (index, crates); 0 opens every file per request.
    /// Fewer when the descriptor limit leaves less room: see [`Limits::open_files_within`].
    pub open_files: usize,
    /// Bytes of request bodies spooled to disk at once, over every upload (publishes, git
    /// upload-pack requests); an upload that would pass it is answered 503 before its body
    /// is read. 0: four times the largest publish body.
    pub max_spool_bytes: u64,
    /// Requests one peer address (an IPv6 /64) may send each second, sustained; 0: no
    /// limit. Over it: 429 with `Retry-After`.
    pub requests_per_second: u64,
    /// Requests one peer may send at once, above the sustained rate.
    pub request_burst: u64,
    /// Refused tokens (unknown, revoked, expired) one peer may present each minute,
    /// sustained; 0: no limit. Over it, every token it presents is answered 429 until the
    /// time has passed.
    pub auth_failures_per_minute: u64,
    /// Refused tokens one peer may present at once.
    pub auth_failure_burst: u64,
    /// Publishes in progress at once for one token; 0: no limit.
    pub uploads_per_token: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            max_head: 16 * 1024,
            head_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            io_timeout_ms: 30_000,
            shutdown_grace_ms: 10_000,
            open_files: 16 * 1024,
            max_spool_bytes: 0,
            // A cold resolve of a 500-crate workspace is under 1000 requests; ten of them
            // at once from CI runners behind one NAT stay under the burst, and 1000 a
            // second sustained is more than a small host serves one client anyway.
            requests_per_second: 1000,
            request_burst: 10_000,
            // A person mistyping a token a few times never meets it; guessing is slowed to
            // one try every two seconds.
            auth_failures_per_minute: 30,
            auth_failure_burst: 30,
            // cargo publishes one crate at a time; a CI fleet publishing a workspace's crates
            // in parallel jobs with one token fits (the spool cap bounds the bytes anyway).
            uploads_per_token: 32,
        }
    }
}

impl Limits {
    pub fn head_timeout(&self) -> Duration {
        Duration::from_millis(self.head_timeout_ms)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    pub fn io_timeout(&self) -> Duration {
        Duration::from_millis(self.io_timeout_ms)
    }
    /// The head timeout while the connection table is more than three quarters full: a
    /// tenth of it, at least a second, so slow heads (slowloris) give their slots back.
    pub fn head_timeout_under_pressure(&self) -> Duration {
        let short = (self.head_timeout_ms / 10).max(1000);
        Duration::from_millis(short.min(self.head_timeout_ms))
    }
    /// Open files kept per tree when the process may hold `fd_limit` descriptors: what is
    /// left once every connection has its socket and file and the server its own few,
    /// split between the three trees (index, crates, docs), and never more than `open-files`. A low limit shrinks
    /// the cache, down to nothing, rather than leave a connection without its socket.
    pub fn open_files_within(&self, fd_limit: u64) -> usize {
        let reserved = (self.max_connections as u64)
            .saturating_mul(2)
            .saturating_add(FD_RESERVE);
        let per_tree = fd_limit.saturating_sub(reserved) / 3;
        per_tree.min(self.open_files as u64) as usize
    }

    /// The spool cap for a registry whose largest publish body is `max_upload`.
    pub fn spool_cap(&self, max_upload: u64) -> u64 {
        match self.max_spool_bytes {
            0 => max_upload.saturating_mul(4),
            n => n,
        }
    }
}

/// Descriptors kept for the server itself: listeners, epoll, the waker, signals, the
/// standard streams, and the worker's repository, pack and spool files.
pub const FD_RESERVE: u64 = 64;

/// The process's soft limit on open descriptors (after the server raised it).
pub fn fd_soft_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the initialized struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 1024;
    }
    if r.rlim_cur == libc::RLIM_INFINITY {
        return u64::MAX;
    }
    // rlim_t is 32 bits on 32-bit ARM.
    #[allow(clippy::useless_conversion)]
    u64::from(r.rlim_cur)
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default)]
    pub registry: Option<PathBuf>,
    #[serde(rename = "listener", default)]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub limits: Limits,
}

/// What is wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
    /// The text alone (no file named yet).
    #[error("{0}")]
    Text(String),
}

impl ServerConfig {
    /// Parses a config file's text; relative paths are resolved against `dir`.
    pub fn parse(text: &str, dir: &Path) -> Result<ServerConfig, ConfigError> {
        let bad = |detail: &str| ConfigError::Text(detail.to_owned());
        let mut c: ServerConfig = toml::from_str(text).map_err(|e| bad(e.to_string().trim()))?;
        if c.listeners.is_empty() {
            return Err(bad("no [[listener]] configured"));
        }
        c.registry = Some(dir.join(c.registry.take().unwrap_or_else(|| ".".into())));
        for l in &mut c.listeners {
            if let Some(tls) = &mut l.tls {
                tls.private_key = dir.join(&tls.private_key);
                tls.certificate_chain = dir.join(&tls.certificate_chain);
            }
        }
        if c.limits.max_connections == 0 || c.limits.max_head < 1024 {
            return Err(bad(
                "limits: max-connections must be > 0 and max-head at least 1024",
            ));
        }
        Ok(c)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        let read = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(read)?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = std::fs::canonicalize(dir).map_err(read)?;
        ServerConfig::parse(&text, &dir).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            detail: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_readme_forms_parse() {
        let text = r#"
registry = "reg"

[[listener]]
bind = "[::1]:8080"

[[listener]]
bind = "127.0.0.1:4333"
tls = {
   private_key = "/etc/letsencrypt/live/example.com/privkey.pem",
   certificate_chain = "certs/fullchain.pem",
}
"#;
        let c = ServerConfig::parse(text, Path::new("/etc/pal")).unwrap();
        assert_eq!(c.registry.as_deref(), Some(Path::new("/etc/pal/reg")));
        assert_eq!(c.listeners.len(), 2);
        let tls = c.listeners[1].tls.as_ref().unwrap();
        assert_eq!(
            tls.private_key,
            Path::new("/etc/letsencrypt/live/example.com/privkey.pem")
        );
        assert_eq!(
            tls.certificate_chain,
            Path::new("/etc/pal/certs/fullchain.pem")
        );
        assert_eq!(c.limits, Limits::default());
        assert!(!c.listeners[0].metrics);
    }

    #[test]
    fn a_metrics_listener() {
        let text = "[[listener]]\nbind = \"[::1]:8080\"\n\n[[listener]]\nbind = \"127.0.0.1:9100\"\nmetrics = true\n";
        let c = ServerConfig::parse(text, Path::new("/")).unwrap();
        assert!(!c.listeners[0].metrics);
        assert!(c.listeners[1].metrics);
    }

    #[test]
    fn the_open_file_cache_fits_the_descriptor_limit() {
        let l = Limits::default();
        // What the server asks for at start: 2 x connections + 3 x open files + 64.
        let asked = (2 * l.max_connections + 3 * l.open_files) as u64 + FD_RESERVE;
        assert_eq!(l.open_files_within(asked), l.open_files);
        assert!(
            l.open_files >= 10_000,
            "a 10,000-crate index fits by default"
        );
        assert_eq!(l.open_files_within(u64::MAX), l.open_files);
        // A hard limit of 4096: the rest after 1,024 sockets, 1,024 files in flight and 64.
        assert_eq!(l.open_files_within(4096), (4096 - 2 * 1024 - 64) / 3);
        // A hard limit of 1024: connections come first, nothing is cached.
        assert_eq!(l.open_files_within(1024), 0);
        let small = Limits {
            max_connections: 100,
            open_files: 5000,
            ..Limits::default()
        };
        assert_eq!(small.open_files_within(1024), (1024 - 264) / 3);
    }

    #[test]
    fn open_files_may_exceed_max_connections() {
        let c = ServerConfig::parse(
            "[[listener]]\nbind='x'\n[limits]\nmax-connections = 64\nopen-files = 20000",
            Path::new("/"),
        )
        .unwrap();
        assert_eq!((c.limits.max_connections, c.limits.open_files), (64, 20000));
    }

    #[test]
    fn defaults_and_errors() {
        let c = ServerConfig::parse("[[listener]]\nbind = \"[::1]:8080\"\n", Path::new("/srv"))
            .unwrap();
        assert_eq!(c.registry.as_deref(), Some(Path::new("/srv/.")));
        assert!(ServerConfig::parse("", Path::new("/")).is_err());
        assert!(ServerConfig::parse("[[listener]]\nbind='x'\nbogus=1", Path::new("/")).is_err());
        let c = ServerConfig::parse(
            "[[listener]]\nbind='x'\n[limits]\nhead-timeout-ms = 5",
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(c.limits.head_timeout_ms, 5);
        assert_eq!(c.limits.max_connections, 1024);
        assert_eq!(c.limits.spool_cap(100), 400);
        let c = ServerConfig::parse(
            "[[listener]]\nbind='x'\n[limits]\nmax-spool-bytes = 5000\nhead-timeout-ms = 60000",
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(c.limits.spool_cap(100), 5000);
        assert_eq!(
            c.limits.head_timeout_under_pressure(),
            Duration::from_secs(6)
        );
    }
}
