//! The mirror's one HTTP client: blocking requests to the upstream index and its crate
//! files (ureq over rustls, the system's certificate authorities or the configured ones,
//! an optional proxy). One agent is shared by every fetcher thread: its connections are
//! kept and reused. Every request is bounded in time (connect, answer, body) and every body
//! in size; a failure is a [`Failure`] that says whether it was a timeout.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use crate::registry::MirrorSettings;

/// An upstream request that did not give an answer: the reason, and whether it ran out of
/// time (a 504 for clients) rather than failed (a 502).
#[derive(Debug, Clone)]
pub struct Failure {
    pub detail: String,
    pub timeout: bool,
}

/// What a conditional GET of an index file brought.
pub enum IndexAnswer {
    /// 200: the file's bytes and its validators.
    Fresh {
        bytes: Vec<u8>,
        etag: Option<String>,
        last_modified: Option<String>,
    },
    /// 304: the cached copy is still the upstream's.
    NotModified,
    /// 404, 410, 451: no such crate upstream.
    Missing,
}

/// Host name lookups kept for [`LOOKUP_KEPT`]: ureq looks the host up for every request,
/// a reused connection's too, and a cold fetch of 300 crates asked the resolver 1,152
/// times for 6 connections, each lookup a chance of the resolver's 5 s retry.
#[derive(Debug, Default)]
struct KeptLookups<R = ureq::unversioned::resolver::DefaultResolver> {
    inner: R,
    kept: std::sync::Mutex<
        Vec<(
            String,
            std::time::Instant,
            ureq::unversioned::resolver::ResolvedSocketAddrs,
        )>,
    >,
}

/// How long a lookup is kept, and for how many hosts at most (the upstream, its crate
/// file host, a proxy).
const LOOKUP_KEPT: Duration = Duration::from_secs(60);
const LOOKUP_HOSTS: usize = 8;

impl<R: ureq::unversioned::resolver::Resolver> ureq::unversioned::resolver::Resolver
    for KeptLookups<R>
{
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or(""),
            uri.authority().map_or("", |a| a.as_str())
        );
        let now = std::time::Instant::now();
        {
            let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            kept.retain(|(_, at, _)| now.duration_since(*at) < LOOKUP_KEPT);
            if let Some((_, _, addrs)) = kept.iter().find(|(k, _, _)| *k == key) {
                return Ok(addrs.clone());
            }
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= LOOKUP_HOSTS {
            kept.remove(0);
        }
        kept.push((key, now, addrs.clone()));
        Ok(addrs)
    }
}

/// The upstream's client.
#[derive(Clone)]
pub struct Upstream {
    agent: ureq::Agent,
    base: String,
    timeout: Duration,
}

/// Largest index file taken from the upstream (crates.io's largest are a few MiB).
const MAX_INDEX: u64 = 64 << 20;

fn root_certs(settings: &MirrorSettings) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let path = match &settings.ca_file {
        Some(p) => p.clone(),
        None => std::env::var_os("SSL_CERT_FILE")
            .map(Into::into)
            .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into()),
    };
    let pem = std::fs::read(&path).map_err(|e| {
        format!(
            "[mirror] reading the certificate authorities in {}: {e}",
            path.display()
        )
    })?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(format!("[mirror] no certificate in {}", path.display()));
    }
    Ok(certs)
}

impl Upstream {
    pub fn new(settings: &MirrorSettings) -> Result<Upstream, String> {
        let timeout = settings.timeout()?;
        let base = settings.upstream_url().to_owned();
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(timeout))
            .timeout_recv_response(Some(timeout))
            // ureq's default buffers are 128 KiB each way per connection: index answers and
            // crate bodies stream through 32 KiB, requests are a few hundred bytes.
            .input_buffer_size(32 * 1024)
            .output_buffer_size(16 * 1024)
            .max_idle_connections(settings.fetchers)
            .max_idle_connections_per_host(settings.fetchers)
            .max_redirects(4)
            .user_agent(concat!(
                "palletizer/",
                env!("CARGO_PKG_VERSION"),
                " (mirror)"
            ));
        if base.starts_with("https://") {
            let certs = root_certs(settings)?;
            let tls = ureq::tls::TlsConfig::builder()
                .provider(ureq::tls::TlsProvider::Rustls)
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
                .unversioned_rustls_crypto_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .build();
            config = config.tls_config(tls);
        }
        if let Some(p) = &settings.proxy {
            let proxy = ureq::Proxy::new(p).map_err(|e| format!("[mirror] proxy `{p}`: {e}"))?;
            config = config.proxy(Some(proxy));
        }
        let agent = ureq::Agent::with_parts(
            config.build(),
            ureq::unversioned::transport::DefaultConnector::default(),
            KeptLookups::<ureq::unversioned::resolver::DefaultResolver>::default(),
        );
        Ok(Upstream {
            agent,
            base,
            timeout,
        })
    }

    /// The URL of `rel` below the upstream index.
    pub fn index_url(&self, rel: &str) -> String {
        format!("{}{rel}", self.base)
    }

    /// GET of an index file (or `config.json`), conditional on the validators kept.
    pub fn index(
        &self,
        rel: &str,
        etag: Option<&str>,
        last_modified: Option<&str>,
    ) -> Result<IndexAnswer, Failure> {
        let url = self.index_url(rel);
        let mut req = self
            .agent
            .get(&url)
            .header("cargo-protocol", "version=1")
            .header("Accept", "text/plain");
        if let Some(tag) = etag {
            req = req.header("If-None-Match", tag);
        } else if let Some(lm) = last_modified {
            req = req.header("If-Modified-Since", lm);
        }
        let mut resp = req
            .config()
            .timeout_recv_body(Some(self.timeout))
            .build()
            .call()
            .map_err(|e| failure(&url, e))?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        match resp.status().as_u16() {
            200 => {
                let (etag, last_modified) = (header("etag"), header("last-modified"));
                let bytes = resp
                    .body_mut()
                    .with_config()
                    .limit(MAX_INDEX)
                    .read_to_vec()
                    .map_err(|e| failure(&url, e))?;
                Ok(IndexAnswer::Fresh {
                    bytes,
                    etag,
                    last_modified,
                })
            }
            304 if etag.is_some() || last_modified.is_some() => Ok(IndexAnswer::NotModified),
            404 | 410 | 451 => Ok(IndexAnswer::Missing),
            s => Err(Failure {
                detail: format!("{url} answered {s}"),
                timeout: false,
            }),
        }
    }

    /// Streams the crate file at `url` into `out`, at most `max` bytes, and returns how many
    /// came. The body is never held in memory: it is copied through a small buffer, and
    /// `sink` sees every chunk (the caller hashes them).
    pub fn download(
        &self,
        url: &str,
        max: u64,
        out: &mut impl Write,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<u64, Failure> {
        let mut resp = self
            .agent
            .get(url)
            .config()
            .timeout_recv_body(Some(self.timeout * 10))
            .build()
            .call()
            .map_err(|e| failure(url, e))?;
        match resp.status().as_u16() {
            200 => {}
            s => {
                return Err(Failure {
                    detail: format!("{url} answered {s}"),
                    timeout: false,
                })
            }
        }
        let mut reader = resp.body_mut().with_config().limit(max).reader();
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Failure {
                        timeout: e.kind() == io::ErrorKind::TimedOut,
                        detail: format!("reading {url}: {e}"),
                    })
                }
            };
            sink(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| Failure {
                detail: format!("storing {url}: {e}"),
                timeout: false,
            })?;
            total += n as u64;
        }
        Ok(total)
    }
}

fn failure(url: &str, e: ureq::Error) -> Failure {
    let timeout = matches!(e, ureq::Error::Timeout(_))
        || matches!(&e, ureq::Error::Io(io) if io.kind() == io::ErrorKind::TimedOut);
    Failure {
        detail: format!("{url}: {e}"),
        timeout,
    }
}

#[cfg(test)]
mod lookup_tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};

    /// Answers 127.0.0.1 and counts the lookups.
    #[derive(Debug, Default)]
    struct Counting(AtomicUsize);

    impl Resolver for Counting {
        fn resolve(
            &self,
            _: &ureq::http::Uri,
            _: &ureq::config::Config,
            _: ureq::unversioned::transport::NextTimeout,
        ) -> Result<ResolvedSocketAddrs, ureq::Error> {
            self.0.fetch_add(1, Ordering::Relaxed);
            let mut addrs = self.empty();
            addrs.push("127.0.0.1:443".parse().unwrap());
            Ok(addrs)
        }
    }

    #[test]
    fn a_host_is_looked_up_once_for_many_requests() {
        let kept = KeptLookups::<Counting>::default();
        let config = ureq::config::Config::default();
        let timeout = || ureq::unversioned::transport::NextTimeout {
            after: ureq::unversioned::transport::time::Duration::from_secs(5),
            reason: ureq::Timeout::Resolve,
            per_read: None,
            per_write: None,
        };
        let index: ureq::http::Uri = "https://index.crates.io/se/rd/serde".parse().unwrap();
        let other: ureq::http::Uri = "https://index.crates.io/to/ki/tokio".parse().unwrap();
        let files: ureq::http::Uri = "https://static.crates.io/crates/serde".parse().unwrap();
        for uri in [&index, &other, &index, &other] {
            let addrs = kept.resolve(uri, &config, timeout()).unwrap();
            assert_eq!(addrs.len(), 1);
        }
        assert_eq!(
            kept.inner.0.load(Ordering::Relaxed),
            1,
            "one host, one lookup"
        );
        kept.resolve(&files, &config, timeout()).unwrap();
        assert_eq!(
            kept.inner.0.load(Ordering::Relaxed),
            2,
            "another host, its own"
        );
    }
}
