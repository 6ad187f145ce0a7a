//! Publish metadata: the JSON cargo sends with `cargo publish`, and the same structure derived
//! from the normalized `Cargo.toml` inside a `.crate` file (for `palletizer add`), with its
//! dependencies as crates.io recorded them at the version's publish time ([`Era`]).
//!
//! Both roads end in [`PublishMetadata`], so the index line is built by one function whatever
//! the way in. The checks of it come in two sets ([`Rules`]): a new publish meets crates.io's
//! caps, as `palletizer.toml` sets them ([`PublishCaps`]); a crate file another registry
//! already serves meets only the bounds that keep an index line and a search record small.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The crates.io index as cargo spells it in publish metadata.
pub const CRATES_IO_INDEX: &str = "https://github.com/rust-lang/crates.io-index";
use super::history::Era;
use super::platform;
use crate::registry::names;

/// What a dependency is for. Serialized lowercase, as in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DepKind {
    #[default]
    Normal,
    Dev,
    Build,
}

/// The JSON part of a publish request, as cargo 1.95 sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishMetadata {
    pub name: String,
    pub vers: String,
    #[serde(default)]
    pub deps: Vec<PublishDep>,
    #[serde(default)]
    pub features: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub authors: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub documentation: Option<String>,
    #[serde(default)]
    pub homepage: Option<String>,
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub license: Option<String>,
    #[serde(default)]
    pub repository: Option<String>,
    #[serde(default)]
    pub links: Option<String>,
    #[serde(default)]
    pub rust_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_file: Option<String>,
    /// The README's contents (cargo sends them; the crate page shows them rendered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readme: Option<String>,
    /// The README's path inside the package, as the manifest names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readme_file: Option<String>,
}

/// One dependency in publish metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishDep {
    pub name: String,
    pub version_req: String,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub optional: bool,
    #[serde(default = "yes")]
    pub default_features: bool,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub kind: DepKind,
    /// Absent for this registry; the full index URL of any other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// The name used in `Cargo.toml` when the dependency is renamed (`name` is then the real one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explicit_name_in_toml: Option<String>,
}

fn yes() -> bool {
    true
}

/// Why a manifest could not be turned into metadata.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("Cargo.toml is not valid TOML: {0}")]
    Toml(String),
    #[error("Cargo.toml has no [package] table with a name and a version")]
    NoPackage,
    #[error("Cargo.toml: dependency `{0}` is malformed: {1}")]
    BadDep(String, String),
}

// The subset of a normalized manifest that publish metadata needs.
#[derive(Deserialize)]
struct Manifest {
    /// `[project]` is what manifests said before `[package]` (crates of 2014 and 2015).
    #[serde(alias = "project")]
    package: Option<Package>,
    #[serde(default)]
    dependencies: BTreeMap<String, TomlDep>,
    #[serde(default, alias = "dev_dependencies", rename = "dev-dependencies")]
    dev_dependencies: BTreeMap<String, TomlDep>,
    #[serde(default, alias = "build_dependencies", rename = "build-dependencies")]
    build_dependencies: BTreeMap<String, TomlDep>,
    #[serde(default)]
    target: BTreeMap<String, Target>,
    #[serde(default)]
    features: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Package {
    name: String,
    version: toml::Value,
    #[serde(default)]
    authors: Option<toml::Value>,
    description: Option<toml::Value>,
    documentation: Option<toml::Value>,
    homepage: Option<toml::Value>,
    keywords: Option<toml::Value>,
    categories: Option<toml::Value>,
    license: Option<toml::Value>,
    repository: Option<toml::Value>,
    links: Option<String>,
    rust_version: Option<toml::Value>,
    license_file: Option<toml::Value>,
    /// A path, or `false` for none.
    readme: Option<toml::Value>,
}

#[derive(Deserialize, Default)]
struct Target {
    #[serde(default)]
    dependencies: BTreeMap<String, TomlDep>,
    #[serde(default, alias = "dev_dependencies", rename = "dev-dependencies")]
    dev_dependencies: BTreeMap<String, TomlDep>,
    #[serde(default, alias = "build_dependencies", rename = "build-dependencies")]
    build_dependencies: BTreeMap<String, TomlDep>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TomlDep {
    Version(String),
    Detailed(DetailedDep),
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct DetailedDep {
    version: Option<String>,
    #[serde(default)]
    optional: bool,
    default_features: Option<bool>,
    #[serde(rename = "default_features")]
    default_features_legacy: Option<bool>,
    #[serde(default)]
    features: Vec<String>,
    package: Option<String>,
    registry_index: Option<String>,
    registry: Option<String>,
}

// Fields a workspace could leave unresolved; a normalized manifest always holds plain values.
fn plain_string(v: Option<toml::Value>) -> Option<String> {
    v.and_then(|v| v.as_str().map(str::to_owned))
}

fn plain_strings(v: Option<toml::Value>) -> Vec<String> {
    v.and_then(|v| {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
    })
    .unwrap_or_default()
}

impl PublishMetadata {
    /// Derives publish metadata from a normalized `Cargo.toml` (what `cargo package` writes),
    /// as crates.io reads one today: requirements re-serialized (`1` → `^1`), targets as
    /// written, renamed dependencies split into alias and package, `registry-index` kept, and
    /// a dependency without one pointing at crates.io.
    pub fn from_manifest(text: &str) -> Result<PublishMetadata, ManifestError> {
        PublishMetadata::from_manifest_in(text, Era::Manifest)
    }

    /// [`PublishMetadata::from_manifest`], with the dependencies as crates.io recorded them
    /// for a version published in `era`: what cargo sent then (kinds, targets in cargo's
    /// spelling) as the semver crate of the day printed it.
    pub fn from_manifest_in(text: &str, era: Era) -> Result<PublishMetadata, ManifestError> {
        let m: Manifest =
            toml::from_str(text).map_err(|e| ManifestError::Toml(e.message().to_owned()))?;
        let p = m.package.ok_or(ManifestError::NoPackage)?;
        let vers = p
            .version
            .as_str()
            .ok_or(ManifestError::NoPackage)?
            .to_owned();
        let mut deps = Vec::new();
        let tables = [
            (None, &m.dependencies, DepKind::Normal),
            (None, &m.dev_dependencies, DepKind::Dev),
            (None, &m.build_dependencies, DepKind::Build),
        ];
        for (target, table, kind) in tables {
            push_deps(&mut deps, target, table, kind, era)?;
        }
        for (cfg, t) in &m.target {
            for (table, kind) in [
                (&t.dependencies, DepKind::Normal),
                (&t.dev_dependencies, DepKind::Dev),
                (&t.build_dependencies, DepKind::Build),
            ] {
                push_deps(&mut deps, Some(cfg), table, kind, era)?;
            }
        }
        Ok(PublishMetadata {
            name: p.name,
            vers,
            deps,
            features: m.features,
            authors: plain_strings(p.authors),
            description: plain_string(p.description),
            documentation: plain_string(p.documentation),
            homepage: plain_string(p.homepage),
            keywords: plain_strings(p.keywords),
            categories: plain_strings(p.categories),
            license: plain_string(p.license),
            repository: plain_string(p.repository),
            links: p.links,
            rust_version: plain_string(p.rust_version),
            license_file: plain_string(p.license_file),
            readme: None,
            readme_file: plain_string(p.readme),
        })
    }
}

impl PublishMetadata {
    /// Every dependency's target in cargo's spelling, as an index line built from cargo's
    /// publish JSON holds it (cargo sends that spelling; another client may not). A target
    /// cargo cannot read is kept, for [`validate`] to refuse.
    pub fn spell_targets_as_cargo(&mut self) {
        for t in self.deps.iter_mut().filter_map(|d| d.target.as_mut()) {
            if let Ok(spelled) = platform::normalize(t) {
                *t = spelled;
            }
        }
    }
}

fn push_deps(
    out: &mut Vec<PublishDep>,
    target: Option<&String>,
    table: &BTreeMap<String, TomlDep>,
    kind: DepKind,
    era: Era,
) -> Result<(), ManifestError> {
    for (key, dep) in table {
        let d = match dep {
            TomlDep::Version(v) => DetailedDep {
                version: Some(v.clone()),
                ..Default::default()
            },
            TomlDep::Detailed(d) => DetailedDep {
                version: d.version.clone(),
                optional: d.optional,
                default_features: d.default_features,
                default_features_legacy: d.default_features_legacy,
                features: d.features.clone(),
                package: d.package.clone(),
                registry_index: d.registry_index.clone(),
                registry: d.registry.clone(),
            },
        };
        if d.registry.is_some() && d.registry_index.is_none() {
            // A normalized manifest names other registries by URL; a bare name cannot be resolved.
            return Err(ManifestError::BadDep(
                key.clone(),
                "`registry` by name is not resolvable here (package with `cargo package`)".into(),
            ));
        }
        let req = match &d.version {
            Some(v) => era
                .requirement(v)
                .map_err(|e| ManifestError::BadDep(key.clone(), e.to_string()))?,
            None => "*".to_owned(),
        };
        let (name, explicit) = match &d.package {
            Some(real) => (real.clone(), Some(key.clone())),
            None => (key.clone(), None),
        };
        out.push(PublishDep {
            name,
            version_req: req,
            features: d.features,
            optional: d.optional,
            default_features: d
                .default_features
                .or(d.default_features_legacy)
                .unwrap_or(true),
            target: target.map(|t| era.target(t)),
            kind: if era.records_kinds() {
                kind
            } else {
                DepKind::Normal
            },
            registry: Some(
                d.registry_index
                    .unwrap_or_else(|| CRATES_IO_INDEX.to_owned()),
            ),
            explicit_name_in_toml: explicit,
        });
    }
    Ok(())
}

/// The caps crates.io puts on a new publish, which `palletizer.toml` may change
/// ([`PublishCaps::SETTINGS`]): crates.io's values unless it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishCaps {
    /// Features, and the values of one feature's list (crates.io caps both with one number).
    pub features: usize,
    pub dependencies: usize,
    pub keywords: usize,
    /// Bytes of one keyword.
    pub keyword_len: usize,
    pub categories: usize,
}

impl PublishCaps {
    /// crates.io's: its `PublishLimitsConfig` defaults, and the keyword and category checks
    /// of its publish.
    pub const CRATES_IO: PublishCaps = PublishCaps {
        features: 300,
        dependencies: 500,
        keywords: 5,
        keyword_len: 20,
        categories: 5,
    };

    /// The bounds of every crate file, far above what real crates carry (web-sys has 1,727
    /// features), so that no crate file makes an index line (every line of a crate's file is
    /// sent to every cargo that resolves it) or a search record of unbounded size; the index
    /// line's own size limit stands behind them. A crate file another registry already
    /// serves (`palletizer add`) meets only these, since crates.io's caps apply to new
    /// publishes (and it raises them per crate); a setting may raise a cap up to them.
    pub const SAFETY: PublishCaps = PublishCaps {
        features: 10_000,
        dependencies: 10_000,
        keywords: 100,
        keyword_len: MAX_FIELD_LEN,
        categories: 100,
    };

    /// The settings, as `palletizer.toml` names them, in the order of [`PublishCaps::values`].
    pub const SETTINGS: [&'static str; 5] = [
        "max-features",
        "max-dependencies",
        "max-keywords",
        "max-keyword-length",
        "max-categories",
    ];

    pub fn values(&self) -> [usize; 5] {
        [
            self.features,
            self.dependencies,
            self.keywords,
            self.keyword_len,
            self.categories,
        ]
    }

    /// Refuses a cap above its safety bound, naming the setting.
    pub fn check(&self) -> Result<(), String> {
        let bounds = PublishCaps::SAFETY.values();
        for ((setting, value), bound) in PublishCaps::SETTINGS.iter().zip(self.values()).zip(bounds)
        {
            if value > bound {
                return Err(format!(
                    "{setting} = {value} is more than {bound}, the most any crate may carry here"
                ));
            }
        }
        Ok(())
    }
}

/// A feature can list this crate's features and its dependencies (and their features).
pub const MAX_FEATURE_VALUES: usize = 1_000;
/// A dependency can only ask for features it has, at most [`PublishCaps::SAFETY`]'s.
pub const MAX_DEP_FEATURES: usize = PublishCaps::SAFETY.features;
/// Feature names, and each value of a feature's list.
pub const MAX_FEATURE_LEN: usize = 128;
pub const MAX_AUTHORS: usize = 100;
pub const MAX_DESCRIPTION_LEN: usize = 4_096;
/// Every other string: URLs, license, `links`, requirements, targets, registries, authors,
/// categories.
pub const MAX_FIELD_LEN: usize = 1_024;

/// A value as an error message may repeat it (bounded, control characters escaped).
use crate::registry::names::shown;

fn check_count(what: &str, n: usize, max: usize) -> Result<(), String> {
    if n > max {
        return Err(format!("{what}: {n}, more than the limit of {max}"));
    }
    Ok(())
}

/// Names the setting in a refusal when the limit is one, for the admin who may raise it.
fn naming(setting: Option<&str>) -> impl Fn(String) -> String + '_ {
    move |e| match setting {
        Some(setting) => {
            format!("{e} (this registry's `{setting}`; an admin can raise it in palletizer.toml)")
        }
        None => e,
    }
}

fn check_len(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        return Err(format!(
            "{what} `{}` is {} bytes long, more than the limit of {max}",
            shown(s),
            s.len()
        ));
    }
    Ok(())
}

/// Checks the sizes of everything a publish carries into the index and the search file.
fn check_sizes(meta: &PublishMetadata, rules: Rules) -> Result<(), String> {
    // The caps of a new publish, named for the admin; only the safety bounds for a crate
    // file that is already served.
    let (caps, [features, deps, keywords, keyword_len, categories]) = match rules {
        Rules::Publish(caps) => (caps, PublishCaps::SETTINGS.map(Some)),
        Rules::Add => (PublishCaps::SAFETY, [None; 5]),
    };
    // Before the name rules, whose messages repeat the whole value.
    check_len("crate name", &meta.name, names::MAX_NAME_LEN)?;
    check_len("version", &meta.vers, names::MAX_VERSION_LEN)?;
    let counts = [
        (
            "too many features",
            meta.features.len(),
            caps.features,
            features,
        ),
        (
            "too many dependencies",
            meta.deps.len(),
            caps.dependencies,
            deps,
        ),
        (
            "too many keywords",
            meta.keywords.len(),
            caps.keywords,
            keywords,
        ),
        (
            "too many categories",
            meta.categories.len(),
            caps.categories,
            categories,
        ),
    ];
    for (what, n, max, setting) in counts {
        check_count(what, n, max).map_err(naming(setting))?;
    }
    check_count("too many authors", meta.authors.len(), MAX_AUTHORS)?;
    for (feature, values) in &meta.features {
        check_len("feature name", feature, MAX_FEATURE_LEN)?;
        let what = format!("too many values in feature `{}`", shown(feature));
        check_count(&what, values.len(), MAX_FEATURE_VALUES)?;
        // crates.io caps what one feature enables with its cap on features.
        check_count(&what, values.len(), caps.features).map_err(naming(features))?;
        for v in values {
            check_len("feature value", v, MAX_FEATURE_LEN)?;
        }
    }
    for d in &meta.deps {
        let shown_name = shown(d.explicit_name_in_toml.as_deref().unwrap_or(&d.name));
        check_count(
            &format!("too many features asked of dependency `{shown_name}`"),
            d.features.len(),
            MAX_DEP_FEATURES,
        )?;
        for f in &d.features {
            check_len("dependency feature", f, MAX_FEATURE_LEN)?;
        }
        check_len("version requirement", &d.version_req, MAX_FIELD_LEN)?;
        for (what, v) in [("target", &d.target), ("registry", &d.registry)] {
            if let Some(v) = v {
                check_len(what, v, MAX_FIELD_LEN)?;
            }
        }
    }
    for k in &meta.keywords {
        check_len("keyword", k, caps.keyword_len).map_err(naming(keyword_len))?;
    }
    for c in meta.categories.iter().chain(&meta.authors) {
        check_len("category or author", c, MAX_FIELD_LEN)?;
    }
    if let Some(d) = &meta.description {
        check_len("description", d, MAX_DESCRIPTION_LEN)?;
    }
    let fields = [
        ("documentation", &meta.documentation),
        ("homepage", &meta.homepage),
        ("license", &meta.license),
        ("repository", &meta.repository),
        ("links", &meta.links),
        ("rust-version", &meta.rust_version),
        ("license-file", &meta.license_file),
        ("readme-file", &meta.readme_file),
    ];
    for (what, v) in fields {
        if let Some(v) = v {
            check_len(what, v, MAX_FIELD_LEN)?;
        }
    }
    Ok(())
}

/// Which rules a version is checked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// A new version through the web API: crates.io's rules for a publish, with the caps
    /// `palletizer.toml` sets.
    Publish(PublishCaps),
    /// `palletizer add`: a crate file that another registry may have taken under older rules
    /// and still serves, checked only for what keeps the registry safe (crates.io refuses `*`
    /// requirements only in new publishes, so clap 1, iron 0.5 or openssl 0.7 have them;
    /// strsim 0.1.0 has 7 keywords, web-sys 1,727 features).
    Add,
}

/// The setting that turns [`require_description_and_license`] off, as `palletizer.toml`
/// spells it.
pub const REQUIRE_DESCRIPTION_AND_LICENSE: &str = "require-description-and-license";

/// crates.io's rule: a crate says what it is (`description`, not blank) and under which
/// terms (`license` or `license-file`). Names what is missing and how to turn it off.
pub fn require_description_and_license(meta: &PublishMetadata) -> Result<(), String> {
    let given = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    let mut missing = Vec::new();
    if !given(&meta.description) {
        missing.push("`description`");
    }
    if !given(&meta.license) && !given(&meta.license_file) {
        missing.push("`license` (or `license-file`)");
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the manifest has no {}: this registry requires a description and a license, as \
         crates.io does; add them to `[package]` in Cargo.toml (an admin can turn the check off \
         with `{REQUIRE_DESCRIPTION_AND_LICENSE} = false` in palletizer.toml)",
        missing.join(" and no ")
    ))
}

/// Checks what the index line will carry: sizes, names, requirements, targets, features,
/// rust-version. Returns a message a person can act on.
pub fn validate(meta: &PublishMetadata, rules: Rules) -> Result<(), String> {
    check_sizes(meta, rules)?;
    names::validate_name(&meta.name).map_err(|e| e.to_string())?;
    names::Version::parse(&meta.vers).map_err(|e| e.to_string())?;
    for d in &meta.deps {
        let shown_name = shown(d.explicit_name_in_toml.as_deref().unwrap_or(&d.name));
        if !names::validate_dep_name(&d.name) {
            return Err(format!("invalid dependency name `{}`", shown(&d.name)));
        }
        if let Some(alias) = &d.explicit_name_in_toml {
            if !names::validate_dep_name(alias) {
                return Err(format!("invalid dependency rename `{}`", shown(alias)));
            }
        }
        if semver::VersionReq::parse(&d.version_req).is_err() {
            return Err(format!(
                "dependency `{shown_name}` has an invalid version requirement `{}`",
                shown(&d.version_req)
            ));
        }
        let publish = matches!(rules, Rules::Publish(_));
        if publish && d.version_req.trim() == "*" && d.kind != DepKind::Dev {
            return Err(format!(
                "wildcard (`*`) dependency constraints are not allowed: dependency `{shown_name}`"
            ));
        }
        if let Some(target) = &d.target {
            if let Err(e) = platform::normalize(target) {
                return Err(format!(
                    "dependency `{shown_name}` has a target that cargo cannot read, `{}`: {e}",
                    shown(target)
                ));
            }
        }
        if let Some(f) = d
            .features
            .iter()
            .find(|f| !names::validate_feature_value(f))
        {
            return Err(format!(
                "dependency `{shown_name}` asks for an invalid feature `{}`",
                shown(f)
            ));
        }
    }
    for (feature, values) in &meta.features {
        if !names::validate_feature_name(feature) {
            return Err(format!("invalid feature name `{}`", shown(feature)));
        }
        if let Some(v) = values.iter().find(|v| !names::validate_feature_value(v)) {
            return Err(format!(
                "feature `{}` has an invalid value `{}`",
                shown(feature),
                shown(v)
            ));
        }
    }
    if let Some(rv) = &meta.rust_version {
        if rv.is_empty() || !rv.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(format!(
                "invalid rust-version `{}`: only digits and dots",
                shown(rv)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
[package]
edition = "2021"
name = "rich"
version = "0.2.0"
build = false
description = "A crate with every kind of dependency"
keywords = ["test", "deps"]
links = "rich"
rust-version = "1.70"

[features]
default = ["std"]
std = []
extra = ["dep:abdep", "leaf/fast"]
weak = ["abdep?/x"]

[lib]
name = "rich"
path = "src/lib.rs"

[dependencies.abdep]
version = "1"
optional = true
package = "ab"
registry-index = "sparse+http://127.0.0.1:1/index/"

[dependencies.leaf]
version = "0.1.0"
default-features = false
features = ["fast"]
registry-index = "sparse+http://127.0.0.1:1/index/"

[dev-dependencies.tester]
version = "=0.3"
registry-index = "sparse+http://127.0.0.1:1/index/"

[build-dependencies]
cc = "1.0"

[target."cfg(unix)".dependencies.unixy]
version = "0.1"
registry-index = "https://elsewhere.example/index"
"#;

    #[test]
    fn manifest_to_metadata() {
        let m = PublishMetadata::from_manifest(MANIFEST).unwrap();
        assert_eq!((m.name.as_str(), m.vers.as_str()), ("rich", "0.2.0"));
        assert_eq!(
            m.description.as_deref(),
            Some("A crate with every kind of dependency")
        );
        assert_eq!(m.keywords, ["test", "deps"]);
        assert_eq!(m.links.as_deref(), Some("rich"));
        assert_eq!(m.rust_version.as_deref(), Some("1.70"));
        assert_eq!(m.features["extra"], ["dep:abdep", "leaf/fast"]);
        let by = |n: &str| m.deps.iter().find(|d| d.name == n).unwrap();
        let ab = by("ab");
        assert_eq!(ab.explicit_name_in_toml.as_deref(), Some("abdep"));
        assert!(ab.optional);
        assert_eq!(ab.version_req, "^1");
        let leaf = by("leaf");
        assert!(!leaf.default_features);
        assert_eq!(leaf.features, ["fast"]);
        assert_eq!(by("tester").kind, DepKind::Dev);
        assert_eq!(by("tester").version_req, "=0.3");
        let cc = by("cc");
        assert_eq!(cc.kind, DepKind::Build);
        assert_eq!(cc.registry.as_deref(), Some(CRATES_IO_INDEX));
        assert_eq!(cc.version_req, "^1.0");
        let unixy = by("unixy");
        assert_eq!(unixy.target.as_deref(), Some("cfg(unix)"));
        assert_eq!(
            unixy.registry.as_deref(),
            Some("https://elsewhere.example/index")
        );
        assert_eq!(validate(&m, PUBLISH), Ok(()));
    }

    /// A manifest of 2014 (`[project]`), read as crates.io recorded it then: no kinds,
    /// requirements as semver 0.x printed them.
    #[test]
    fn manifest_as_crates_io_recorded_it_in_2014() {
        let old = MANIFEST.replace("[package]", "[project]");
        let m = PublishMetadata::from_manifest_in(&old, Era::NoKinds).unwrap();
        assert_eq!(m.name, "rich");
        let by = |n: &str| m.deps.iter().find(|d| d.name == n).unwrap();
        assert_eq!(
            (by("tester").kind, by("tester").version_req.as_str()),
            (DepKind::Normal, "= 0.3")
        );
        assert_eq!(by("cc").kind, DepKind::Normal);
        let today = PublishMetadata::from_manifest(&old).unwrap();
        assert_eq!(
            today
                .deps
                .iter()
                .find(|d| d.name == "tester")
                .unwrap()
                .version_req,
            "=0.3"
        );
    }

    #[test]
    fn invalid_metadata_is_explained() {
        let mut m = PublishMetadata::from_manifest(MANIFEST).unwrap();
        m.features.insert("bad name".into(), vec![]);
        assert!(validate(&m, PUBLISH).unwrap_err().contains("bad name"));
        let mut m = PublishMetadata::from_manifest(MANIFEST).unwrap();
        m.deps[0].version_req = "not a req".into();
        assert!(validate(&m, PUBLISH).unwrap_err().contains("not a req"));
        let mut m = PublishMetadata::from_manifest(MANIFEST).unwrap();
        m.rust_version = Some("1.70-nightly".into());
        assert!(validate(&m, PUBLISH).is_err());
        assert!(matches!(
            PublishMetadata::from_manifest("[package]\nname='x'"),
            Err(ManifestError::Toml(_) | ManifestError::NoPackage)
        ));
        assert!(matches!(
            PublishMetadata::from_manifest("nope = ["),
            Err(ManifestError::Toml(_))
        ));
    }

    /// A publish under crates.io's caps, the settings' defaults.
    const PUBLISH: Rules = Rules::Publish(PublishCaps::CRATES_IO);
    const MAX_FEATURES: usize = PublishCaps::CRATES_IO.features;

    fn small() -> PublishMetadata {
        serde_json::from_str(r#"{"name":"foo","vers":"1.0.0"}"#).unwrap()
    }

    fn refused(m: &PublishMetadata, want: &str) {
        let err = validate(m, PUBLISH)
            .and_then(|()| crate::registry::index::check_line_len(m))
            .expect_err(want);
        assert!(err.contains(want), "want `{want}` in: {err}");
        assert!(err.len() < 400, "{err}");
    }

    #[test]
    fn sixty_thousand_features_are_refused() {
        let mut m = small();
        m.features = (0..60_000).map(|i| (format!("f{i}"), vec![])).collect();
        refused(
            &m,
            "too many features: 60000, more than the limit of 300 (this registry's \
             `max-features`; an admin can raise it in palletizer.toml)",
        );
        m.features = (0..MAX_FEATURES)
            .map(|i| (format!("f{i}"), vec![]))
            .collect();
        assert_eq!(validate(&m, PUBLISH), Ok(()));
    }

    /// crates.io's cap of 300 features is for new publishes: a crate file it already
    /// serves with more (web-sys has 1,727) is taken by `palletizer add`.
    #[test]
    fn web_sys_sized_feature_lists_are_added_but_not_published() {
        let mut m = small();
        m.features = (0..1_727).map(|i| (format!("f{i}"), vec![])).collect();
        assert_eq!(validate(&m, Rules::Add), Ok(()));
        assert!(validate(&m, PUBLISH).is_err());
        m.features = (0..=PublishCaps::SAFETY.features)
            .map(|i| (format!("f{i}"), vec![]))
            .collect();
        let e = validate(&m, Rules::Add).unwrap_err();
        assert_eq!(e, "too many features: 10001, more than the limit of 10000");
    }

    /// crates.io's caps on a new publish are settings: each one a publish goes over is named,
    /// and an add is held only to the safety bounds (strsim 0.1.0, on crates.io, has 7
    /// keywords).
    #[test]
    fn publish_caps_are_the_settings_and_an_add_is_not_held_to_them() {
        let mut m = small();
        m.keywords = (0..7).map(|i| format!("k{i}")).collect();
        m.categories = (0..6).map(|i| format!("c{i}")).collect();
        m.deps = (0..600).map(|i| dep(format!("d{i}"))).collect();
        m.features = (0..2)
            .map(|i| (format!("f{i}"), (0..301).map(|j| format!("d{j}")).collect()))
            .collect();
        assert_eq!(validate(&m, Rules::Add), Ok(()));
        let mut caps = PublishCaps::CRATES_IO;
        let mut refusals = Vec::new();
        while let Err(e) = validate(&m, Rules::Publish(caps)) {
            assert!(
                e.contains("an admin can raise it in palletizer.toml"),
                "{e}"
            );
            let named = PublishCaps::SETTINGS
                .iter()
                .position(|s| e.contains(&format!("`{s}`")))
                .unwrap_or_else(|| panic!("no setting named in {e}"));
            refusals.push(PublishCaps::SETTINGS[named]);
            match named {
                0 => caps.features = 301,
                1 => caps.dependencies = 600,
                2 => caps.keywords = 7,
                _ => caps.categories = 6,
            }
        }
        assert_eq!(
            refusals,
            [
                "max-dependencies",
                "max-keywords",
                "max-categories",
                "max-features"
            ]
        );
        m.keywords = vec!["k".repeat(21)];
        let e = validate(&m, Rules::Publish(caps)).unwrap_err();
        assert!(e.contains("`max-keyword-length`"), "{e}");
        caps.keyword_len = 21;
        assert_eq!(validate(&m, Rules::Publish(caps)), Ok(()));
        // A lowered cap holds too.
        caps.dependencies = 10;
        assert!(validate(&m, Rules::Publish(caps)).is_err());
    }

    #[test]
    fn a_cap_above_its_safety_bound_is_refused_by_name() {
        PublishCaps::CRATES_IO.check().unwrap();
        PublishCaps::SAFETY.check().unwrap();
        let caps = PublishCaps {
            keywords: 101,
            ..PublishCaps::CRATES_IO
        };
        assert_eq!(
            caps.check().unwrap_err(),
            "max-keywords = 101 is more than 100, the most any crate may carry here"
        );
    }

    fn dep(name: String) -> PublishDep {
        PublishDep {
            name,
            version_req: "^1".into(),
            features: vec![],
            optional: false,
            default_features: true,
            target: None,
            kind: DepKind::Normal,
            registry: None,
            explicit_name_in_toml: None,
        }
    }

    #[test]
    fn counts_and_lengths_are_capped() {
        let mut m = small();
        m.deps = (0..PublishCaps::CRATES_IO.dependencies)
            .map(|i| dep(format!("d{i}")))
            .collect();
        assert_eq!(validate(&m, PUBLISH), Ok(()));
        m.deps.push(dep("one-more".into()));
        refused(&m, "too many dependencies: 501, more than the limit of 500");

        let mut m = small();
        m.deps = vec![dep("d0".into())];
        m.deps[0].features = (0..=MAX_DEP_FEATURES).map(|i| format!("f{i}")).collect();
        refused(&m, "too many features asked of dependency `d0`: 10001");

        let mut m = small();
        m.features.insert(
            "all".into(),
            (0..=MAX_FEATURE_VALUES).map(|i| format!("f{i}")).collect(),
        );
        refused(&m, "too many values in feature `all`: 1001");
        m.features
            .insert("all".into(), (0..=300).map(|i| format!("f{i}")).collect());
        refused(
            &m,
            "too many values in feature `all`: 301, more than the limit of 300",
        );

        let mut m = small();
        m.keywords = (0..6).map(|i| format!("k{i}")).collect();
        refused(&m, "too many keywords: 6, more than the limit of 5");
        m.keywords = vec!["k".repeat(21)];
        refused(&m, "is 21 bytes long, more than the limit of 20");

        let mut m = small();
        m.categories = (0..6).map(|i| format!("c{i}")).collect();
        refused(&m, "too many categories: 6");

        let mut m = small();
        m.description = Some("d".repeat(MAX_DESCRIPTION_LEN + 1));
        refused(&m, "description `ddd");
        m.description = Some("d".repeat(MAX_DESCRIPTION_LEN));
        assert_eq!(validate(&m, PUBLISH), Ok(()));

        let mut m = small();
        m.repository = Some(format!("https://example.com/{}", "r".repeat(MAX_FIELD_LEN)));
        refused(&m, "repository `https://example.com/rrr");

        let mut m = small();
        m.features.insert("f".repeat(MAX_FEATURE_LEN + 1), vec![]);
        refused(&m, "feature name `fff");
    }

    #[test]
    fn wildcard_requirements_are_refused_only_in_publishes() {
        let mut m = small();
        m.deps = vec![dep("old".into())];
        m.deps[0].version_req = "*".into();
        refused(&m, "wildcard (`*`) dependency constraints are not allowed");
        assert_eq!(validate(&m, Rules::Add), Ok(()));
    }

    #[test]
    fn unreadable_targets_are_refused() {
        let mut m = small();
        m.deps = vec![dep("d0".into())];
        m.deps[0].target = Some("cfg(unix".into());
        refused(
            &m,
            "dependency `d0` has a target that cargo cannot read, `cfg(unix`",
        );
        assert!(validate(&m, Rules::Add).is_err());
        m.deps[0].target = Some(r#"cfg(target_os="hermit")"#.into());
        assert_eq!(validate(&m, PUBLISH), Ok(()));
    }

    #[test]
    fn index_line_size_is_capped() {
        // Every count and length within its own limit, the sum of them not.
        let mut m = small();
        m.features = (0..MAX_FEATURES)
            .map(|i| {
                let values = (0..8).map(|j| format!("v{j}{}", "x".repeat(120))).collect();
                (format!("f{i}"), values)
            })
            .collect();
        refused(&m, "the index line for this version would be");
    }

    #[test]
    fn echoed_values_are_bounded() {
        let mut m = small();
        m.deps = vec![dep(format!("\u{1b}[2J{}", "n".repeat(1 << 20)))];
        let err = validate(&m, PUBLISH).unwrap_err();
        assert!(err.len() < 400 && !err.contains('\u{1b}'), "{err}");
        let mut m = small();
        m.name = "n".repeat(1 << 20);
        refused(&m, "is 1048576 bytes long, more than the limit of 64");
    }
}

#[cfg(test)]
pub(crate) mod round_trip {
    use proptest::prelude::*;

    use super::*;
    use crate::registry::index;

    /// `cases` cases, and no failure files written into the source tree.
    pub(crate) fn config(cases: u32) -> ProptestConfig {
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// Any characters: quotes, backslashes, newlines and non-ASCII must survive JSON.
    pub(crate) fn text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("(?s).{0,12}").unwrap()
    }

    /// Mostly valid names, sometimes anything, so both sides of `validate` are reached.
    fn ident() -> impl Strategy<Value = String> {
        prop_oneof![
            19 => "[a-z][a-z0-9_-]{0,10}",
            1 => text(),
        ]
    }

    pub(crate) fn dep() -> impl Strategy<Value = PublishDep> {
        (
            (
                ident(),
                "\\^[0-9]{1,2}(\\.[0-9]{1,2})?",
                proptest::collection::vec(ident(), 0..3),
            ),
            (any::<bool>(), any::<bool>(), proptest::option::of(text())),
            (
                prop_oneof![
                    Just(DepKind::Normal),
                    Just(DepKind::Dev),
                    Just(DepKind::Build)
                ],
                proptest::option::of(text()),
                proptest::option::of(ident()),
            ),
        )
            .prop_map(
                |(
                    (name, version_req, features),
                    (optional, default_features, target),
                    (kind, registry, explicit_name_in_toml),
                )| PublishDep {
                    name,
                    version_req,
                    features,
                    optional,
                    default_features,
                    target,
                    kind,
                    registry,
                    explicit_name_in_toml,
                },
            )
    }

    fn meta() -> impl Strategy<Value = PublishMetadata> {
        let strings = || proptest::collection::vec(text(), 0..3);
        (
            (
                ident(),
                "[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}(-[a-z]{1,3})?",
                proptest::collection::vec(dep(), 0..4),
                proptest::collection::btree_map(
                    ident(),
                    proptest::collection::vec(
                        prop_oneof![ident(), ident().prop_map(|d| format!("dep:{d}"))],
                        0..3,
                    ),
                    0..4,
                ),
            ),
            (strings(), strings(), strings()),
            (
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of("[0-9]{1,2}\\.[0-9]{1,2}"),
            ),
        )
            .prop_map(
                |(
                    (name, vers, deps, features),
                    (authors, keywords, categories),
                    (
                        description,
                        documentation,
                        homepage,
                        license,
                        repository,
                        links,
                        rust_version,
                    ),
                )| PublishMetadata {
                    name,
                    vers,
                    deps,
                    features,
                    authors,
                    description,
                    documentation,
                    homepage,
                    keywords,
                    categories,
                    license,
                    repository,
                    links,
                    rust_version,
                    license_file: None,
                    readme: None,
                    readme_file: None,
                },
            )
    }

    proptest! {
        #![proptest_config(config(128))]

        #[test]
        fn publish_metadata_survives_json(m in meta()) {
            let json = serde_json::to_string(&m).unwrap();
            prop_assert_eq!(serde_json::from_str::<PublishMetadata>(&json).unwrap(), m);
        }

        #[test]
        fn valid_metadata_makes_an_index_line_that_parses_back(m in meta()) {
            if validate(&m, Rules::Publish(PublishCaps::CRATES_IO)).and_then(|()| index::check_line_len(&m)).is_err() {
                return Ok(());
            }
            let e = index::IndexEntry::from_publish(&m, &"0".repeat(64), index::pubtime_now(), |_| false);
            let line = e.to_line();
            prop_assert!(line.len() <= index::MAX_INDEX_LINE + 100);
            prop_assert_eq!(index::parse_file(&format!("{line}\n")), vec![e]);
        }
    }

    #[test]
    fn a_description_and_a_license_are_required_by_name() {
        let meta = |description: Option<&str>, license: Option<&str>, file: Option<&str>| {
            let mut m =
                PublishMetadata::from_manifest("[package]\nname='x'\nversion='1.0.0'").unwrap();
            m.description = description.map(str::to_owned);
            m.license = license.map(str::to_owned);
            m.license_file = file.map(str::to_owned);
            m
        };
        require_description_and_license(&meta(Some("d"), Some("MIT"), None)).unwrap();
        require_description_and_license(&meta(Some("d"), None, Some("LICENSE"))).unwrap();
        for (m, missing) in [
            (
                meta(None, None, None),
                "no `description` and no `license` (or `license-file`):",
            ),
            (meta(Some("  "), Some("MIT"), None), "no `description`:"),
            (
                meta(Some("d"), Some(""), None),
                "no `license` (or `license-file`):",
            ),
        ] {
            let e = require_description_and_license(&m).unwrap_err();
            assert!(e.contains(missing), "{e}");
            assert!(
                e.contains("`require-description-and-license = false`"),
                "{e}"
            );
        }
    }
}
