//! `palletizer.toml`: the registry's settings. Paths in it are relative to the registry root.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// Refuse a publish (or `add`) whose manifest has no `description` or neither `license`
    /// nor `license-file`, as crates.io does.
    #[serde(default = "default_true")]
    pub require_description_and_license: bool,
    /// `[mirror]`: serve a caching mirror of crates.io (or another sparse index) under
    /// `/mirror/`. Absent: no mirror.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorSettings>,
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
fn default_true() -> bool {
    true
}

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
        if let Some(m) = &s.mirror {
            m.check()?;
        }
        Ok(Settings { url, ..s })
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
        assert!(Settings::parse("url = \"http://x\"\nbogus = 1").is_err());
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
