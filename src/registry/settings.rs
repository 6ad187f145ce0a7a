//! `palletizer.toml`: the registry's settings. Paths in it are relative to the registry root.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::publish::metadata::PublishCaps;

/// Who may do what without a token (see [`super::AuthFile`] for users and tokens).
///
/// Files written before `open` existed say `public` or `private`; both still parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// No checks at all: anyone who reaches the server may publish and yank.
    Open,
    /// Anyone may read the index and download; every write needs a token.
    #[default]
    Public,
    /// Every request needs a token (`auth-required` in `config.json`).
    Private,
}

impl Access {
    pub const ALL: [Access; 3] = [Access::Open, Access::Public, Access::Private];

    pub fn as_str(self) -> &'static str {
        match self {
            Access::Open => "open",
            Access::Public => "public",
            Access::Private => "private",
        }
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Access {
    type Err = String;

    fn from_str(s: &str) -> Result<Access, String> {
        Access::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown access mode `{s}`; use open, public or private"))
    }
}

/// The registry's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// The public base URL: the sparse index is `{url}/index/`, downloads `{url}/crates/`,
    /// the web API `{url}/api/v1/`.
    pub url: String,
    #[serde(default = "default_index_dir")]
    pub index_dir: PathBuf,
    #[serde(default = "default_crates_dir")]
    pub crates_dir: PathBuf,
    /// Index URLs that dependencies may come from besides this registry.
    #[serde(default)]
    pub allowed_registries: Vec<String>,
    /// Other URLs this registry's index is known by (e.g. a previous host name).
    #[serde(default)]
    pub index_aliases: Vec<String>,
    #[serde(default)]
    pub access: Access,
    /// Largest `.crate` file accepted, in bytes.
    #[serde(default = "default_max_crate")]
    pub max_crate_size: u64,
    /// Largest unpacked size of a `.crate` file, in bytes.
    #[serde(default = "default_max_unpacked")]
    pub max_unpacked_size: u64,
    /// Refuse a publish whose manifest has no `description` or neither `license` nor
    /// `license-file`, as crates.io does (`palletizer add` takes crate files without them:
    /// crates.io serves crates of 2014 that have neither).
    #[serde(default = "default_true")]
    pub require_description_and_license: bool,
    /// crates.io's caps on a new publish ([`PublishCaps`]; `palletizer add` is held only to
    /// the safety bounds): features, and the values one feature lists.
    #[serde(default = "default_max_features")]
    pub max_features: usize,
    /// Dependencies of every kind.
    #[serde(default = "default_max_dependencies")]
    pub max_dependencies: usize,
    #[serde(default = "default_max_keywords")]
    pub max_keywords: usize,
    /// Bytes of one keyword.
    #[serde(default = "default_max_keyword_length")]
    pub max_keyword_length: usize,
    #[serde(default = "default_max_categories")]
    pub max_categories: usize,
    /// Largest docs upload (the `.tar.gz` of `target/doc`), in bytes.
    #[serde(default = "default_max_docs")]
    pub max_docs_size: u64,
    /// Largest unpacked size of a docs upload, in bytes.
    #[serde(default = "default_max_docs_unpacked")]
    pub max_docs_unpacked_size: u64,
    /// Most entries (files and directories) in a docs upload.
    #[serde(default = "default_max_docs_files")]
    pub max_docs_files: u64,
    /// The audit log's size, in bytes, at which `audit.jsonl` is rotated to `audit.jsonl.1`.
    #[serde(default = "default_audit_max")]
    pub audit_max_bytes: u64,
    /// How long a webhook delivery is retried while its receiver is down or failing
    /// (`24h`, `90s`, `2d`); absent: [`DEFAULT_WEBHOOK_RETRY`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_retry_for: Option<String>,
    /// Webhook deliveries waiting on disk at most; past it the oldest are dropped.
    #[serde(
        default = "default_queue_limit",
        skip_serializing_if = "is_default_queue_limit"
    )]
    pub webhook_queue_limit: u64,
    /// `[mirror]`: serve a caching mirror of crates.io (or another sparse index) under
    /// `/mirror/`. Absent: no mirror.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorSettings>,
    /// Receivers of the registry's events (`[[webhook]]`).
    #[serde(default, rename = "webhook", skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<Webhook>,
}

/// How long a webhook delivery is retried unless `webhook-retry-for` says otherwise.
pub const DEFAULT_WEBHOOK_RETRY: &str = "24h";
const DEFAULT_QUEUE_LIMIT: u64 = 1000;

fn default_queue_limit() -> u64 {
    DEFAULT_QUEUE_LIMIT
}
fn is_default_queue_limit(n: &u64) -> bool {
    *n == DEFAULT_QUEUE_LIMIT
}

/// One `[[webhook]]`: a receiver that every event it asks for is POSTed to, signed with its
/// secret. Checked by [`Settings::parse`]: the URL parses ([`HookUrl`]), the secret is set,
/// every event name is one of [`crate::registry::ACTIONS`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
    /// The action names it wants; absent: every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// The key of each delivery's HMAC-SHA256 signature (`X-Palletizer-Signature`).
    #[serde(default)]
    pub secret: String,
    #[serde(default, skip_serializing_if = "HookFormat::is_json")]
    pub format: HookFormat,
}

/// What a webhook's body is: the event as JSON, or a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookFormat {
    /// `{"event":..,"crate":..,"version":..,"actor":..,"time":..,"registry":..,..}`.
    #[default]
    Json,
    /// `{"text":"..."}`: what Slack's incoming webhooks (and Mattermost's, Rocket.Chat's,
    /// Discord's `/slack` endpoint) accept.
    Slack,
}

impl HookFormat {
    fn is_json(&self) -> bool {
        *self == HookFormat::Json
    }
}

impl Webhook {
    /// Whether it wants events of `action`.
    pub fn wants(&self, action: &str) -> bool {
        self.events
            .as_ref()
            .is_none_or(|e| e.iter().any(|a| a == action))
    }
}

/// The secret never reaches a log line.
impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &shown_url(&self.url))
            .field("events", &self.events)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// A webhook URL taken apart for the client: `http://` or `https://`, a host (a name or an
/// IP address, IPv6 in brackets), an optional port, a path and query (kept as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookUrl {
    pub tls: bool,
    /// Without the brackets of an IPv6 address.
    pub host: String,
    pub port: u16,
    /// The `Host` header: the authority as written.
    pub authority: String,
    /// The request target: path and query, at least `/`.
    pub target: String,
}

impl HookUrl {
    pub fn parse(url: &str) -> Result<HookUrl, String> {
        let bad = |why: &str| format!("webhook URL `{}`: {why}", shown_url(url));
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        if url.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(bad("has spaces or control characters"));
        }
        if url.contains('#') {
            return Err(bad("has a fragment (#)"));
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(end);
        if authority.contains('@') {
            return Err(bad(
                "user:password@ is not supported; receivers check the signature",
            ));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| bad("has an unclosed ["))?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let port = match port {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad("has a bad port"))?,
        };
        let target = match target.strip_prefix('?') {
            Some(_) => format!("/{target}"),
            None if target.is_empty() => "/".to_owned(),
            None => target.to_owned(),
        };
        Ok(HookUrl {
            tls,
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            target,
        })
    }
}

/// A webhook URL as logs and errors show it: its scheme and authority, with `/…` for a path
/// or query, which may hold the receiver's own secret (as Slack's URLs do).
pub fn shown_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].find(['/', '?']) {
        Some(i) if start + i + 1 < url.len() => format!("{}/…", &url[..start + i]),
        _ => url.to_owned(),
    }
}

/// Checks the `[[webhook]]` tables and the webhook settings (see [`Webhook`]).
fn check_webhooks(s: &Settings) -> Result<(), String> {
    for w in &s.webhooks {
        HookUrl::parse(&w.url)?;
        let shown = shown_url(&w.url);
        if w.secret.is_empty() {
            return Err(format!(
                "webhook {shown}: `secret` is missing (each delivery is signed with it)"
            ));
        }
        let actions = crate::registry::ACTIONS;
        match &w.events {
            Some(events) if events.is_empty() => {
                return Err(format!(
                    "webhook {shown}: `events` is empty; leave it out for every event"
                ))
            }
            Some(events) => {
                if let Some(e) = events.iter().find(|e| !actions.contains(&e.as_str())) {
                    return Err(format!(
                        "webhook {shown}: unknown event `{e}`; known: {}",
                        actions.join(", ")
                    ));
                }
            }
            None => {}
        }
    }
    if let Some(r) = &s.webhook_retry_for {
        crate::registry::parse_duration(r).map_err(|e| format!("webhook-retry-for: {e}"))?;
    }
    if s.webhook_queue_limit == 0 {
        return Err("webhook-queue-limit must be at least 1".into());
    }
    Ok(())
}

/// crates.io's sparse index, the mirror's default upstream.
pub const CRATES_IO_SPARSE: &str = "sparse+https://index.crates.io/";

/// The `[mirror]` table. Durations and crate lists are kept as written (so that rewriting
/// the file keeps them) and checked when the file is read; the accessors give them parsed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MirrorSettings {
    /// The sparse index mirrored: `sparse+http(s)://…/`.
    #[serde(default = "default_upstream")]
    pub upstream: String,
    /// Never contact the upstream: serve what the cache holds.
    #[serde(default)]
    pub offline: bool,
    /// How long a fetched index file is served before it is revalidated upstream.
    #[serde(default = "default_ttl")]
    pub ttl: String,
    /// Versions published less than this long ago are hidden (`3d`; none when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_age: Option<String>,
    /// Crates (`name`, or `name@REQ` for some versions) hidden from the mirror's index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// When not empty, only these crates (`name` or `name@REQ`) are shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Upstream fetches running at once.
    #[serde(default = "default_fetchers")]
    pub fetchers: usize,
    /// Time allowed to connect and for an index file's answer (a crate file gets ten times
    /// as long for its body).
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// Largest crate file fetched, in bytes.
    #[serde(default = "default_mirror_max_crate")]
    pub max_crate_size: u64,
    /// A PEM file of the certificate authorities the upstream's TLS certificate is checked
    /// against (default: the system's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// An HTTP proxy for upstream requests (`http://host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
}

fn default_upstream() -> String {
    CRATES_IO_SPARSE.into()
}
fn default_ttl() -> String {
    "60s".into()
}
fn default_fetchers() -> usize {
    4
}
fn default_timeout() -> String {
    "30s".into()
}
fn default_mirror_max_crate() -> u64 {
    256 * 1024 * 1024
}

impl Default for MirrorSettings {
    fn default() -> MirrorSettings {
        MirrorSettings {
            upstream: default_upstream(),
            offline: false,
            ttl: default_ttl(),
            min_age: None,
            deny: Vec::new(),
            allow: Vec::new(),
            fetchers: default_fetchers(),
            timeout: default_timeout(),
            max_crate_size: default_mirror_max_crate(),
            ca_file: None,
            proxy: None,
        }
    }
}

/// One entry of `deny` or `allow`: a crate name, and the versions meant (all when `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct CrateRule {
    /// Compared as crates.io compares names (lowercase, `-` as `_`).
    pub canonical: String,
    pub req: Option<semver::VersionReq>,
}

impl CrateRule {
    pub fn parse(text: &str) -> Result<CrateRule, String> {
        let (name, req) = match text.split_once('@') {
            Some((n, r)) => (n, Some(r)),
            None => (text, None),
        };
        let name = super::CrateName::parse(name.trim())
            .map_err(|e| format!("mirror crate rule `{text}`: {e}"))?;
        let req = match req {
            Some(r) => Some(semver::VersionReq::parse(r.trim()).map_err(|e| {
                format!("mirror crate rule `{text}`: bad version requirement: {e}")
            })?),
            None => None,
        };
        Ok(CrateRule {
            canonical: super::canonical(&name),
            req,
        })
    }

    /// Whether the rule covers `vers` of the crate whose canonical name is `canonical`.
    pub fn covers(&self, canonical: &str, vers: &semver::Version) -> bool {
        self.canonical == canonical && self.req.as_ref().is_none_or(|r| r.matches(vers))
    }
}

fn duration(key: &str, text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("[mirror] {key} = \"{text}\": {e} (use e.g. \"60s\", \"3d\")"))
}

impl MirrorSettings {
    /// Every value checked: the upstream's URL, the durations, the crate rules.
    pub fn check(&self) -> Result<(), String> {
        let url = self.upstream.strip_prefix("sparse+").unwrap_or("");
        let scheme = url.starts_with("http://") || url.starts_with("https://");
        if !scheme || !url.ends_with('/') || url.contains(['?', '#', ' ']) {
            return Err(format!(
                "[mirror] upstream `{}` must be a sparse index URL: sparse+https://host/path/ \
                 (ending in `/`)",
                self.upstream
            ));
        }
        self.ttl()?;
        self.min_age()?;
        self.timeout()?;
        self.rules()?;
        if self.fetchers == 0 || self.fetchers > 64 {
            return Err("[mirror] fetchers must be between 1 and 64".into());
        }
        if let Some(p) = &self.proxy {
            if !p.starts_with("http://") && !p.starts_with("https://") {
                return Err(format!(
                    "[mirror] proxy `{p}` must start with http:// or https://"
                ));
            }
        }
        Ok(())
    }

    /// The upstream index's base URL, without `sparse+`, ending in `/`.
    pub fn upstream_url(&self) -> &str {
        self.upstream
            .strip_prefix("sparse+")
            .unwrap_or(&self.upstream)
    }

    pub fn ttl(&self) -> Result<std::time::Duration, String> {
        duration("ttl", &self.ttl)
    }

    pub fn timeout(&self) -> Result<std::time::Duration, String> {
        duration("timeout", &self.timeout)
    }

    pub fn min_age(&self) -> Result<Option<std::time::Duration>, String> {
        self.min_age
            .as_deref()
            .map(|t| duration("min-age", t))
            .transpose()
    }

    /// `deny` and `allow`, parsed.
    pub fn rules(&self) -> Result<(Vec<CrateRule>, Vec<CrateRule>), String> {
        let parse = |v: &[String]| -> Result<Vec<CrateRule>, String> {
            v.iter().map(|t| CrateRule::parse(t)).collect()
        };
        Ok((parse(&self.deny)?, parse(&self.allow)?))
    }
}

fn default_index_dir() -> PathBuf {
    "index".into()
}
fn default_crates_dir() -> PathBuf {
    "crates".into()
}
fn default_max_crate() -> u64 {
    10 * 1024 * 1024
}
fn default_max_unpacked() -> u64 {
    512 * 1024 * 1024
}
/// Room for the docs of a large crate: `cargo doc --no-deps` of the biggest crates people
/// publish writes tens of MiB (a few MiB gzipped) in some thousands of files.
fn default_max_docs() -> u64 {
    64 * 1024 * 1024
}
fn default_max_docs_unpacked() -> u64 {
    512 * 1024 * 1024
}
fn default_max_docs_files() -> u64 {
    50_000
}
fn default_true() -> bool {
    true
}
fn default_max_features() -> usize {
    PublishCaps::CRATES_IO.features
}
fn default_max_dependencies() -> usize {
    PublishCaps::CRATES_IO.dependencies
}
fn default_max_keywords() -> usize {
    PublishCaps::CRATES_IO.keywords
}
fn default_max_keyword_length() -> usize {
    PublishCaps::CRATES_IO.keyword_len
}
fn default_max_categories() -> usize {
    PublishCaps::CRATES_IO.categories
}
fn default_audit_max() -> u64 {
    8 * 1024 * 1024
}
/// The smallest `audit-max-bytes`: a few lines.
const MIN_AUDIT_MAX: u64 = 4096;

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            url: "http://127.0.0.1:8080".into(),
            index_dir: default_index_dir(),
            crates_dir: default_crates_dir(),
            allowed_registries: Vec::new(),
            index_aliases: Vec::new(),
            access: Access::Public,
            max_crate_size: default_max_crate(),
            max_unpacked_size: default_max_unpacked(),
            require_description_and_license: true,
            max_features: default_max_features(),
            max_dependencies: default_max_dependencies(),
            max_keywords: default_max_keywords(),
            max_keyword_length: default_max_keyword_length(),
            max_categories: default_max_categories(),
            audit_max_bytes: default_audit_max(),
            webhook_retry_for: None,
            webhook_queue_limit: DEFAULT_QUEUE_LIMIT,
            webhooks: Vec::new(),
            max_docs_size: default_max_docs(),
            max_docs_unpacked_size: default_max_docs_unpacked(),
            max_docs_files: default_max_docs_files(),
            mirror: None,
        }
    }
}

/// Checks a base URL: http(s) or file, no query, no fragment.
pub fn check_url(url: &str) -> Result<(), String> {
    let ok_scheme = ["http://", "https://", "file://"]
        .iter()
        .any(|s| url.starts_with(s));
    if !ok_scheme || url.contains(['?', '#', ' ']) {
        return Err(format!(
            "registry URL `{url}` must start with http://, https:// or file:// and have no query or spaces"
        ));
    }
    Ok(())
}

impl Settings {
    pub fn parse(text: &str) -> Result<Settings, String> {
        let s: Settings = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let url = s.url.trim_end_matches('/').to_owned();
        check_url(&url)?;
        check_webhooks(&s)?;
        s.publish_caps().check()?;
        if s.audit_max_bytes < MIN_AUDIT_MAX {
            return Err(format!(
                "audit-max-bytes = {} is too small; use at least {MIN_AUDIT_MAX} (the default is {})",
                s.audit_max_bytes,
                default_audit_max()
            ));
        }
        if let Some(m) = &s.mirror {
            m.check()?;
        }
        Ok(Settings { url, ..s })
    }

    /// The caps a new publish is held to.
    pub fn publish_caps(&self) -> PublishCaps {
        PublishCaps {
            features: self.max_features,
            dependencies: self.max_dependencies,
            keywords: self.max_keywords,
            keyword_len: self.max_keyword_length,
            categories: self.max_categories,
        }
    }

    /// Seconds a webhook delivery is retried for (`webhook-retry-for`).
    pub fn webhook_retry_secs(&self) -> u64 {
        let text = self
            .webhook_retry_for
            .as_deref()
            .unwrap_or(DEFAULT_WEBHOOK_RETRY);
        // Checked by `parse`; a value set in code that does not parse gets the default.
        crate::registry::parse_duration(text).unwrap_or(86_400)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("settings always serialize")
    }

    /// `config.json` for the index root. It carries `"auth-required": true` exactly when
    /// the registry is private: cargo then sends its token with every request.
    pub fn config_json(&self) -> String {
        let mut v = serde_json::json!({
            "dl": format!("{}/crates/{{crate}}/{{crate}}-{{version}}.crate", self.url),
            "api": self.url,
        });
        if self.access == Access::Private {
            v["auth-required"] = true.into();
        }
        let mut s = serde_json::to_string_pretty(&v).expect("json");
        s.push('\n');
        s
    }

    /// Every spelling of this registry's index URL that cargo may put in publish metadata.
    pub fn own_index_urls(&self) -> Vec<String> {
        let mut v = vec![
            format!("sparse+{}/index/", self.url),
            format!("{}/index", self.url),
            format!("{}/index.git", self.url),
        ];
        v.extend(self.index_aliases.iter().cloned());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_defaults() {
        let s = Settings::parse("url = \"https://reg.example/\"\n").unwrap();
        assert_eq!(s.url, "https://reg.example");
        assert_eq!(s.max_crate_size, 10 << 20);
        assert!(s.require_description_and_license, "on unless turned off");
        let off =
            Settings::parse("url = \"http://x\"\nrequire-description-and-license = false").unwrap();
        assert!(!off.require_description_and_license);
        assert_eq!(Settings::parse(&s.to_toml()).unwrap(), s);
        let cfg: serde_json::Value = serde_json::from_str(&s.config_json()).unwrap();
        assert_eq!(
            cfg["dl"],
            "https://reg.example/crates/{crate}/{crate}-{version}.crate"
        );
        assert_eq!(cfg["api"], "https://reg.example");
        assert!(cfg.get("auth-required").is_none());
        assert!(Settings::parse("url = \"ftp://x\"").is_err());
        assert_eq!(s.audit_max_bytes, 8 << 20);
        let small = Settings::parse("url = \"http://x\"\naudit-max-bytes = 100").unwrap_err();
        assert!(small.contains("at least 4096"), "{small}");
        assert!(Settings::parse("url = \"http://x\"\nbogus = 1").is_err());
    }

    #[test]
    fn publish_caps_default_to_crates_ios_and_are_bounded() {
        let s = Settings::parse("url = \"http://x\"").unwrap();
        assert_eq!(s.publish_caps(), PublishCaps::CRATES_IO);
        let text = s.to_toml();
        for (key, value) in PublishCaps::SETTINGS
            .iter()
            .zip(PublishCaps::CRATES_IO.values())
        {
            assert!(text.contains(&format!("{key} = {value}\n")), "{text}");
        }
        let raised = Settings::parse(
            "url = \"http://x\"\nmax-features = 2000\nmax-dependencies = 600\n\
             max-keywords = 10\nmax-keyword-length = 32\nmax-categories = 0\n",
        )
        .unwrap();
        let caps = PublishCaps {
            features: 2000,
            dependencies: 600,
            keywords: 10,
            keyword_len: 32,
            categories: 0,
        };
        assert_eq!(raised.publish_caps(), caps);
        assert_eq!(Settings::parse(&raised.to_toml()).unwrap(), raised);
        let e = Settings::parse("url = \"http://x\"\nmax-features = 20000").unwrap_err();
        assert_eq!(
            e,
            "max-features = 20000 is more than 10000, the most any crate may carry here"
        );
        assert!(Settings::parse("url = \"http://x\"\nmax-keywords = -1").is_err());
    }

    #[test]
    fn webhooks_parse_round_trip_and_keep_their_secret_out_of_debug() {
        let text = "url = \"http://h\"\nwebhook-retry-for = \"2h\"\n\
                    [[webhook]]\nurl = \"https://hooks.example/services/T0/B0/xyz\"\n\
                    secret = \"s3cret\"\nformat = \"slack\"\nevents = [\"publish\", \"yank\"]\n\
                    [[webhook]]\nurl = \"http://127.0.0.1:9000\"\nsecret = \"k\"\n";
        let s = Settings::parse(text).unwrap();
        assert_eq!(s.webhooks.len(), 2);
        assert_eq!(s.webhooks[0].format, HookFormat::Slack);
        assert!(s.webhooks[0].wants("yank") && !s.webhooks[0].wants("delete"));
        assert!(s.webhooks[1].wants("delete"), "no `events`: every event");
        assert_eq!(s.webhook_retry_secs(), 7200);
        assert_eq!(Settings::default().webhook_retry_secs(), 86_400);
        assert_eq!(s.webhook_queue_limit, 1000);
        // `access` rewrites the file from these settings: the webhooks stay.
        let again = s.to_toml();
        assert!(!again.contains("webhook-queue-limit"), "{again}");
        assert_eq!(Settings::parse(&again).unwrap(), s);
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("xyz"),
            "{shown}"
        );
        assert!(shown.contains("https://hooks.example/…"), "{shown}");
    }

    /// Each mistake gets one line that says which webhook and what to do.
    #[test]
    fn bad_webhooks_are_refused_with_one_line() {
        let hook =
            |body: &str| Settings::parse(&format!("url = \"http://h\"\n[[webhook]]\n{body}"));
        for (body, want) in [
            (
                "url = \"ftp://x/\"\nsecret = \"k\"",
                "must start with http:// or https://",
            ),
            ("url = \"http:///x\"\nsecret = \"k\"", "has no host"),
            (
                "url = \"http://h:99999/\"\nsecret = \"k\"",
                "has a bad port",
            ),
            (
                "url = \"http://u:p@h/\"\nsecret = \"k\"",
                "user:password@ is not supported",
            ),
            (
                "url = \"http://h/\"",
                "webhook http://h/: `secret` is missing",
            ),
            ("url = \"http://h/\"\nsecret = \"\"", "`secret` is missing"),
            (
                "url = \"http://h/a/b\"\nsecret = \"k\"\nevents = [\"pubish\"]",
                "webhook http://h/…: unknown event `pubish`; known: publish, yank, unyank",
            ),
            (
                "url = \"http://h/\"\nsecret = \"k\"\nevents = []",
                "`events` is empty",
            ),
            (
                "url = \"http://h/\"\nsecret = \"k\"\nformat = \"teams\"",
                "unknown variant `teams`",
            ),
            (
                "url = \"http://h/\"\nsecret = \"k\"\nsecrte = \"k\"",
                "unknown field `secrte`",
            ),
        ] {
            let e = hook(body).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
            assert!(!e.contains('\n'), "{body}: {e}");
        }
        let e = Settings::parse("url = \"http://h\"\nwebhook-retry-for = \"soon\"").unwrap_err();
        assert!(
            e.starts_with("webhook-retry-for: invalid duration `soon`"),
            "{e}"
        );
        let e = Settings::parse("url = \"http://h\"\nwebhook-queue-limit = 0").unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
    }

    #[test]
    fn webhook_urls_come_apart_for_the_client() {
        let u = HookUrl::parse("https://hooks.example/services/x?y=1").unwrap();
        assert!(u.tls);
        assert_eq!((u.host.as_str(), u.port), ("hooks.example", 443));
        assert_eq!(u.authority, "hooks.example");
        assert_eq!(u.target, "/services/x?y=1");
        let u = HookUrl::parse("http://[::1]:8080?a").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("::1", 8080, "/?a")
        );
        assert_eq!(u.authority, "[::1]:8080");
        let u = HookUrl::parse("http://127.0.0.1").unwrap();
        assert_eq!((u.port, u.target.as_str()), (80, "/"));
        assert!(HookUrl::parse("http://h/a b").is_err());
        assert!(HookUrl::parse("http://h/#x").is_err());
        assert_eq!(
            shown_url("https://h.example/secret/path"),
            "https://h.example/…"
        );
        assert_eq!(shown_url("http://h:1/"), "http://h:1/");
        assert_eq!(shown_url("http://h:1"), "http://h:1");
    }

    #[test]
    fn mirror_table_parses_checks_and_round_trips() {
        let s = Settings::parse("url = \"http://h\"\n[mirror]\n").unwrap();
        let m = s.mirror.clone().unwrap();
        assert_eq!(m.upstream, CRATES_IO_SPARSE);
        assert_eq!(m.ttl().unwrap(), std::time::Duration::from_secs(60));
        assert_eq!(m.min_age().unwrap(), None);
        assert_eq!(Settings::parse(&s.to_toml()).unwrap(), s);
        let text = "url = \"http://h\"\n[mirror]\nupstream = \"sparse+http://127.0.0.1:9/x/\"\n\
                    offline = true\nttl = \"5m\"\nmin-age = \"3d\"\ndeny = [\"openssl-sys\", \"Foo_bar@<2\"]\n\
                    allow = [\"serde\"]\n";
        let s = Settings::parse(text).unwrap();
        let m = s.mirror.clone().unwrap();
        assert!(m.offline);
        assert_eq!(m.upstream_url(), "http://127.0.0.1:9/x/");
        assert_eq!(
            m.min_age().unwrap(),
            Some(std::time::Duration::from_secs(3 * 86400))
        );
        let (deny, allow) = m.rules().unwrap();
        assert_eq!(deny[1].canonical, "foo_bar");
        let v = |s| semver::Version::parse(s).unwrap();
        assert!(deny[1].covers("foo_bar", &v("1.9.0")));
        assert!(!deny[1].covers("foo_bar", &v("2.0.0")));
        assert!(deny[0].covers("openssl_sys", &v("0.9.0")));
        assert_eq!(allow.len(), 1);
        assert_eq!(Settings::parse(&s.to_toml()).unwrap(), s);
        for bad in [
            "[mirror]\nbogus = 1",
            "[mirror]\nupstream = \"https://index.crates.io/\"",
            "[mirror]\nupstream = \"sparse+https://index.crates.io\"",
            "[mirror]\nttl = \"soon\"",
            "[mirror]\nmin-age = \"3 fortnights\"",
            "[mirror]\ndeny = [\"not a name\"]",
            "[mirror]\ndeny = [\"serde@>>1\"]",
            "[mirror]\nfetchers = 0",
        ] {
            let e = Settings::parse(&format!("url = \"http://h\"\n{bad}")).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
    }

    #[test]
    fn access_modes_parse_and_config_json_follows_them() {
        // Files written before `open` existed carry `public` (the old default) or `private`.
        for (text, want) in [
            ("", Access::Public),
            ("access = \"public\"\n", Access::Public),
            ("access = \"private\"\n", Access::Private),
            ("access = \"open\"\n", Access::Open),
        ] {
            let s = Settings::parse(&format!("url = \"http://h\"\n{text}")).unwrap();
            assert_eq!(s.access, want, "{text}");
            assert_eq!(Settings::parse(&s.to_toml()).unwrap(), s);
            let cfg: serde_json::Value = serde_json::from_str(&s.config_json()).unwrap();
            let required = cfg.get("auth-required").and_then(|v| v.as_bool());
            assert_eq!(required == Some(true), want == Access::Private, "{text}");
            assert_eq!(want.as_str().parse::<Access>(), Ok(want));
        }
        assert_eq!(Settings::default().access, Access::Public);
        assert!(Settings::parse("url = \"http://h\"\naccess = \"secret\"").is_err());
        let e = "closed".parse::<Access>().unwrap_err();
        assert!(e.contains("open, public or private"), "{e}");
    }
}
