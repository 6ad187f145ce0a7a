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
    /// Largest docs upload (the `.tar.gz` of `target/doc`), in bytes.
    #[serde(default = "default_max_docs")]
    pub max_docs_size: u64,
    /// Largest unpacked size of a docs upload, in bytes.
    #[serde(default = "default_max_docs_unpacked")]
    pub max_docs_unpacked_size: u64,
    /// Most entries (files and directories) in a docs upload.
    #[serde(default = "default_max_docs_files")]
    pub max_docs_files: u64,
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
            max_docs_size: default_max_docs(),
            max_docs_unpacked_size: default_max_docs_unpacked(),
            max_docs_files: default_max_docs_files(),
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
