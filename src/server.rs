//! Starts the server: the one place that composes it. In order: the descriptor limit, the
//! listeners (sockets and TLS), the registry (opened after its crash recovery, or created
//! with its first admin on a zero-config start), the site the routes read, the watch on
//! the registry's files, the webhook delivery threads, the worker threads, the signals, and
//! the banner. Then the pieces
//! go to the event loop ([`net::Server`]), which only runs.
//!
//! Startup runs in stages whose code never runs again (the config and TLS files, then the
//! registry and `auth.json`, then the threads): giving each stage's code pages back before
//! the next ([`os::release_code_pages`]) makes the startup peak the largest stage, not their
//! sum, and leaves only the serving code mapped under load.

use std::io::{self, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::net::TcpListener;
use mio::{Interest, Poll};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::http::{files::Trees, Site};
use crate::mirror::Mirror;
use crate::net::config::{Limits, ServerConfig};
use crate::net::{self, changes, metrics, os, transport, worker};
use crate::registry::{self, Access, AuthError, AuthView, Registry};

/// The listen backlog: clients the kernel holds while the table is full or the loop busy.
const LISTEN_BACKLOG: i32 = 1024;

/// Why the server did not start (or its loop stopped with an error).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::net::config::ConfigError),
    #[error("creating the poller: {0}")]
    Poller(#[source] io::Error),
    #[error("listener `{bind}`: {source}")]
    Address {
        bind: String,
        #[source]
        source: io::Error,
    },
    #[error("listener `{0}`: no address")]
    NoAddress(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Tls(#[from] transport::TlsError),
    #[error("registering with the poller: {0}")]
    Register(#[source] io::Error),
    #[error(transparent)]
    Registry(#[from] registry::Error),
    #[error("access control: {0}")]
    Auth(#[from] AuthError),
    #[error("opening the registry failed (see the error above)")]
    Recovery,
    #[error("the mirror: {0}")]
    Mirror(String),
    #[error("starting the worker threads: {0}")]
    Worker(#[source] io::Error),
    #[error("signals: {0}")]
    Signals(#[source] io::Error),
    #[error("poll: {0}")]
    Poll(#[source] io::Error),
}

/// Starts the server described by the file at `path` (`palletizer-server CONFIG.toml`).
pub fn serve_config_file(path: &Path) -> Result<(), StartError> {
    let config = ServerConfig::load(path)?;
    serve(config, Some(path.to_owned()), false)
}

/// Starts the server, prints where it listens and how to point cargo at it, and runs
/// until SIGTERM or SIGINT. With `create`, a missing registry is created for the first
/// listener's URL (the zero-config start), with an admin whose token is printed once.
pub fn serve(
    config: ServerConfig,
    config_path: Option<PathBuf>,
    create: bool,
) -> Result<(), StartError> {
    // 2 x connections + 3 x open files + 64: a socket and a file being sent per
    // connection, the three trees' caches, the server's own (what
    // Limits::open_files_within counts on).
    os::limit_malloc_arenas();
    os::raise_fd_limit(
        config
            .limits
            .max_connections
            .saturating_add(config.limits.open_files)
            .saturating_add(config.limits.open_files / 2),
    );
    let poll = Poll::new().map_err(StartError::Poller)?;
    let listeners = bind_listeners(&config, &poll)?;
    os::release_code_pages();
    let root = config.registry.clone().unwrap_or_else(|| ".".into());
    let (registry, created) = open_registry(&root, &listeners[0], create)?;
    let mut site = site_of(&registry, &config.limits)?;
    for l in &listeners {
        site.authorities.add_listener(l.addr);
    }
    let changes = changes::Changes::watch(
        &registry.lock_path(),
        &[registry::AUTH_FILE, registry::SETTINGS_FILE],
        poll.registry(),
        net::CHANGES_TOKEN,
    );
    site.trees.written(changes.watching());
    os::release_freed_memory();
    os::release_code_pages();
    warn_about_access(&site, &listeners);
    warn_about_secrets(&registry);
    let waker =
        Arc::new(mio::Waker::new(poll.registry(), net::WAKER_TOKEN).map_err(StartError::Register)?);
    let spool =
        worker::SpoolBudget::new(config.limits.spool_cap(site.max_upload.max(site.max_docs)));
    let url = registry.settings().url.clone();
    let spool_dir = registry.root().to_owned();
    let mut metrics = metrics::Metrics::default();
    // Deliveries queued while no server ran (by the CLI, or before a crash) go out now.
    let webhooks = crate::webhooks::Deliverer::start(registry.outbox(), metrics.webhooks.clone())
        .map_err(StartError::Worker)?;
    let mirror = match &registry.settings().mirror {
        Some(m) => Some(Mirror::open(registry.root(), m).map_err(StartError::Mirror)?),
        None => None,
    };
    metrics.mirror = mirror.clone();
    let (jobs, done) = worker::spawn(registry, waker, metrics.worker.clone(), mirror)
        .map_err(StartError::Worker)?;
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(StartError::Signals)?;
    poll.registry()
        .register(&mut signals, net::SIGNAL_TOKEN, Interest::READABLE)
        .map_err(StartError::Register)?;
    let server = net::Server::new(net::Parts {
        poll,
        listeners,
        shared: net::Shared {
            site,
            throttle: net::throttle::Throttle::new(&config.limits),
            limits: config.limits,
            spool_dir,
            jobs,
            spool,
            tokens_used: Default::default(),
            refused_writes: Default::default(),
            metrics,
        },
        signals,
        config_path,
        done,
        root,
        changes,
        webhooks,
    });
    banner(&server, &url, created);
    server.run().map_err(StartError::Poll)
}

/// Binds every listener, with its TLS configuration, and registers it with the poller.
fn bind_listeners(config: &ServerConfig, poll: &Poll) -> Result<Vec<net::Listening>, StartError> {
    let mut listeners = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let addr = l
            .bind
            .to_socket_addrs()
            .map_err(|source| StartError::Address {
                bind: l.bind.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| StartError::NoAddress(l.bind.clone()))?;
        let tls = match &l.tls {
            Some(t) => Some(transport::load_tls(&t.certificate_chain, &t.private_key)?),
            None => None,
        };
        let mut socket =
            TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
        os::set_listen_backlog(&socket, LISTEN_BACKLOG);
        let addr = socket
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        poll.registry()
            .register(&mut socket, net::listener_token(i), Interest::READABLE)
            .map_err(StartError::Register)?;
        listeners.push(net::Listening::new(socket, addr, tls, l.clone()));
    }
    Ok(listeners)
}

/// What a zero-config start created: the registry's folder and its admin's token.
struct Created {
    root: PathBuf,
    token: Option<String>,
}

/// Opens the registry at `root` after its crash recovery, or with `create` and no registry
/// there, creates it for the first listener's URL with its first admin.
fn open_registry(
    root: &Path,
    first: &net::Listening,
    create: bool,
) -> Result<(Registry, Option<Created>), StartError> {
    if create && !root.join(registry::SETTINGS_FILE).exists() {
        let scheme = if first.tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", first.addr);
        let reg = Registry::init(root, registry::InitOptions::for_url(&url))?;
        let token = reg.bootstrap_admin(registry::now())?;
        let created = Created {
            root: root.to_owned(),
            token,
        };
        return Ok((reg, Some(created)));
    }
    // The recovery's code (libgit2's repair paths) runs in a child and is never mapped here.
    if !os::in_child(|| open_and_sync(root)) {
        return Err(StartError::Recovery);
    }
    Ok((Registry::open_as_is(root)?, None))
}

/// Opens the registry (its crash recovery) and makes `config.json` say what the access
/// setting says.
fn open_and_sync(root: &Path) -> Result<(), String> {
    let reg = Registry::open(root).map_err(|e| e.to_string())?;
    reg.sync_config_json().map_err(|e| e.to_string())?;
    Ok(())
}

/// The site the routes read: URL, trees (with their descriptor caches), limits, access.
fn site_of(registry: &Registry, limits: &Limits) -> Result<Site, StartError> {
    let fd_limit = net::config::fd_soft_limit();
    let cached_files = limits.open_files_within(fd_limit);
    // Only a setting someone chose is worth a note; the default fits what the limit allows.
    if cached_files < limits.open_files && limits.open_files != Limits::default().open_files {
        error!(
            "note: {fd_limit} descriptors leave room for {cached_files} open files per tree, \
             not open-files = {}; a higher hard limit (LimitNOFILE) allows more",
            limits.open_files
        );
    }
    let settings = registry.settings();
    // Made now, so that the docs tree has a kept descriptor for `openat2` from the start.
    let docs_dir = registry.docs_dir();
    if let Err(e) = std::fs::create_dir_all(&docs_dir) {
        error!("warning: creating {}: {e}", docs_dir.display());
    }
    let trees = Trees::new(
        registry.index_dir().to_owned(),
        registry.crates_dir().to_owned(),
        cached_files,
    )
    .with_docs(docs_dir, cached_files);
    let mut site = Site::new(&settings.url, trees, settings.max_crate_size);
    site.max_docs = settings.max_docs_size;
    site.mirror = settings.mirror.is_some();
    site.auth = Arc::new(AuthView::load(registry.root())?);
    Ok(site)
}

/// Webhook secrets live in `palletizer.toml`: say so when other users may read it.
fn warn_about_secrets(registry: &Registry) {
    use std::os::unix::fs::PermissionsExt;
    if registry.settings().webhooks.is_empty() {
        return;
    }
    let path = registry.root().join(crate::registry::SETTINGS_FILE);
    if let Ok(meta) = std::fs::metadata(&path) {
        if meta.permissions().mode() & 0o077 != 0 {
            error!(
                "warning: {} holds webhook secrets and other users may read it; \
                 run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
    }
}

fn warn_about_access(site: &Site, listeners: &[net::Listening]) {
    match site.access() {
        Access::Open if listeners.iter().any(|l| !l.addr.ip().is_loopback()) => error!(
            "warning: access is `open`: anyone who reaches {} can publish and yank; \
             `palletizer access public` asks for tokens",
            listeners[0].addr
        ),
        Access::Public | Access::Private if site.auth.user_count() == 0 => error!(
            "note: access is `{}` and there are no users yet: \
             `palletizer user add NAME --admin` and `palletizer token create --user NAME`",
            site.access()
        ),
        _ => {}
    }
}

/// What a person starting the server reads: on stdout, a new registry and its admin's
/// token (shown once, never in the log: it is stored nowhere readable) and how to point
/// cargo at it; in the log, where it listens.
fn banner(server: &net::Server, url: &str, created: Option<Created>) {
    let mut out = io::stdout().lock();
    if let Some(created) = created {
        let _ = writeln!(
            out,
            "Created a new registry in {} for {url}.",
            created.root.display()
        );
        if let Some(token) = created.token {
            let _ = writeln!(
                out,
                "Its admin user `{}` has this token (shown once; more with \
                 `palletizer token create`). Log cargo in with it:\n\n  \
                 echo {token} | cargo login --registry palletizer\n",
                registry::FIRST_ADMIN
            );
        }
    }
    let _ = out.flush();
    for (addr, tls) in server.local_addrs() {
        let scheme = if tls { "https" } else { "http" };
        error!("listening on {scheme}://{addr}");
    }
    if crate::log::enabled(1) {
        let _ = writeln!(
            out,
            "Point cargo at this registry with, in .cargo/config.toml:\n\n\
             [registries.palletizer]\n\
             index = \"sparse+{url}/index/\"\n\n\
             or, for a cargo older than 1.68 (git index over smart HTTP):\n\n\
             [registries.palletizer]\n\
             index = \"{url}/index\"\n\n\
             (cargo publish, yank and search use {url}/api/v1)\n"
        );
        let _ = out.flush();
    }
}
