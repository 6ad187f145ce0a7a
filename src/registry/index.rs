//! The index: where a crate's file lives, what one line of it holds, and how the metadata a
//! publish carries becomes that line.
//!
//! An index file is a function of the registry state: it is always rewritten whole from its
//! entries, one JSON object per line, each line ending in `\n`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::metadata::{DepKind, PublishDep, PublishMetadata};
use super::names::CrateName;

/// The crates.io index as cargo spells it in publish metadata.
pub const CRATES_IO_INDEX: &str = "https://github.com/rust-lang/crates.io-index";

/// The path of a crate's index file, relative to the index root: `1/a`, `2/ab`, `3/f/foo`,
/// `ab/cd/abcd`. Always lowercase.
pub fn index_path(name: &CrateName) -> String {
    index_path_of(name)
}

/// Whether `rel` is where the index keeps a crate's file: a valid crate name, lowercase, in
/// its directory.
pub fn is_index_path(rel: &str) -> bool {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    CrateName::parse(file).is_ok_and(|n| index_path(&n) == rel)
}

/// [`index_path`] for a string known to be a valid name (a `-`/`_` variant of one).
pub(crate) fn index_path_of(name: &str) -> String {
    let n = name.to_ascii_lowercase();
    match n.len() {
        1 => format!("1/{n}"),
        2 => format!("2/{n}"),
        3 => format!("3/{}/{n}", &n[..1]),
        _ => format!("{}/{}/{n}", &n[..2], &n[2..4]),
    }
}

/// One version of a crate, as cargo reads it from the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub name: String,
    pub vers: String,
    pub deps: Vec<IndexDep>,
    pub cksum: String,
    #[serde(default)]
    pub features: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features2: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    pub yanked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rust_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pubtime: Option<String>,
}

/// One dependency of an index entry. `registry: None` means this registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexDep {
    pub name: String,
    pub req: String,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub optional: bool,
    #[serde(default = "yes")]
    pub default_features: bool,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub kind: Option<DepKind>,
    #[serde(default)]
    pub registry: Option<String>,
    #[serde(default)]
    pub package: Option<String>,
}

fn yes() -> bool {
    true
}

impl IndexEntry {
    /// Builds the line for a publish. `own_index` tells whether a dependency's registry URL
    /// names this registry (then it is written as `null`).
    pub fn from_publish(
        meta: &PublishMetadata,
        cksum: &str,
        pubtime: String,
        own_index: impl Fn(&str) -> bool,
    ) -> IndexEntry {
        let deps = meta
            .deps
            .iter()
            .map(|d| IndexDep::from_publish(d, &own_index))
            .collect();
        // Features that use `dep:` or `?/` go to `features2` (with `v: 2`) so that a cargo
        // older than 1.60 skips the version instead of failing on the whole file.
        let (plain, extended): (BTreeMap<_, _>, BTreeMap<_, _>) =
            meta.features.clone().into_iter().partition(|(_, values)| {
                !values
                    .iter()
                    .any(|v| v.starts_with("dep:") || v.contains("?/"))
            });
        let (features2, v) = if extended.is_empty() {
            (None, None)
        } else {
            (Some(extended), Some(2))
        };
        IndexEntry {
            name: meta.name.clone(),
            vers: meta.vers.clone(),
            deps,
            cksum: cksum.to_owned(),
            features: plain,
            features2,
            yanked: false,
            links: meta.links.clone(),
            rust_version: meta.rust_version.clone(),
            v,
            pubtime: Some(pubtime),
        }
    }

    /// The entry as one index line, without the newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("index entries always serialize")
    }
}

impl IndexDep {
    fn from_publish(d: &PublishDep, own_index: &impl Fn(&str) -> bool) -> IndexDep {
        // A renamed dependency: the index names it by its alias, `package` holds the real name.
        let (name, package) = match &d.explicit_name_in_toml {
            Some(alias) => (alias.clone(), Some(d.name.clone())),
            None => (d.name.clone(), None),
        };
        IndexDep {
            name,
            req: d.version_req.clone(),
            features: d.features.clone(),
            optional: d.optional,
            default_features: d.default_features,
            target: d.target.clone(),
            kind: Some(d.kind),
            registry: d.registry.clone().filter(|r| !own_index(r)),
            package,
        }
    }
}

/// Parses an index file's lines. Lines that are not valid entries are skipped, as cargo does.
pub fn parse_file(text: &str) -> Vec<IndexEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Renders an index file from its entries.
pub fn render_file(entries: &[IndexEntry]) -> String {
    let mut out = String::new();
    for e in entries {
        out.push_str(&e.to_line());
        out.push('\n');
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the only `pubtime` form cargo accepts.
pub fn pubtime_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str) -> CrateName {
        CrateName::parse(name).unwrap()
    }

    #[test]
    fn paths_by_length_and_case() {
        assert_eq!(index_path(&n("a")), "1/a");
        assert_eq!(index_path(&n("AB")), "2/ab");
        assert_eq!(index_path(&n("foo")), "3/f/foo");
        assert_eq!(index_path(&n("Foo")), "3/f/foo");
        assert_eq!(index_path(&n("abcd")), "ab/cd/abcd");
        assert_eq!(index_path(&n("bar-baz")), "ba/r-/bar-baz");
        assert_eq!(index_path(&n("MyCrate")), "my/cr/mycrate");
    }

    #[test]
    fn pubtime_has_no_fraction() {
        let t = pubtime_now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T');
    }

    fn meta(json: &str) -> PublishMetadata {
        serde_json::from_str(json).unwrap()
    }

    const OWN: &str = "sparse+http://reg.example/index/";

    fn convert(m: &PublishMetadata) -> IndexEntry {
        IndexEntry::from_publish(m, "ab12", "2026-01-02T03:04:05Z".into(), |u| u == OWN)
    }

    #[test]
    fn publish_metadata_to_line() {
        let m = meta(
            r#"{"name":"Foo","vers":"1.2.3","deps":[
              {"optional":true,"default_features":true,"name":"ab","features":[],"version_req":"^1",
               "target":null,"kind":"normal","explicit_name_in_toml":"abdep"},
              {"optional":false,"default_features":false,"name":"serde","features":["derive"],
               "version_req":"^1.0","target":"cfg(unix)","kind":"normal",
               "registry":"https://github.com/rust-lang/crates.io-index"},
              {"optional":false,"default_features":true,"name":"other","features":[],
               "version_req":"^0.1","target":null,"kind":"dev","registry":"sparse+https://elsewhere/index/"},
              {"optional":false,"default_features":true,"name":"mine","features":[],
               "version_req":"=0.1.0","target":null,"kind":"build","registry":"sparse+http://reg.example/index/"}
            ],
            "features":{"default":["std"],"std":[],"extra":["dep:abdep","foo/fast"],"weak":["abdep?/x"]},
            "authors":[],"description":"d","links":"z","rust_version":"1.70"}"#,
        );
        let e = convert(&m);
        let line = e.to_line();
        assert!(line.starts_with(r#"{"name":"Foo","vers":"1.2.3","deps":[{"name":"abdep","req":"^1","features":[],"optional":true,"default_features":true,"target":null,"kind":"normal","registry":null,"package":"ab"}"#), "{line}");
        assert_eq!(e.deps[1].registry.as_deref(), Some(CRATES_IO_INDEX));
        assert_eq!(e.deps[1].target.as_deref(), Some("cfg(unix)"));
        assert!(!e.deps[1].default_features);
        assert_eq!(e.deps[1].features, ["derive"]);
        assert_eq!(e.deps[2].kind, Some(DepKind::Dev));
        assert_eq!(
            e.deps[2].registry.as_deref(),
            Some("sparse+https://elsewhere/index/")
        );
        assert_eq!(e.deps[3].kind, Some(DepKind::Build));
        assert_eq!(e.deps[3].registry, None, "own registry is written as null");
        assert_eq!(e.v, Some(2));
        let f2 = e.features2.as_ref().unwrap();
        assert_eq!(f2["extra"], ["dep:abdep", "foo/fast"]);
        assert_eq!(f2["weak"], ["abdep?/x"]);
        assert!(e.features.contains_key("std") && !e.features.contains_key("extra"));
        assert!(
            line.contains(
                r#""links":"z","rust_version":"1.70","v":2,"pubtime":"2026-01-02T03:04:05Z"}"#
            ),
            "{line}"
        );
        assert!(line.contains(r#""cksum":"ab12""#) && line.contains(r#""yanked":false"#));
        assert_eq!(parse_file(&render_file(std::slice::from_ref(&e))), vec![e]);
    }

    #[test]
    fn plain_features_need_no_v() {
        let m = meta(r#"{"name":"a","vers":"0.1.0","deps":[],"features":{"x":["y"],"y":[]}}"#);
        let line = convert(&m).to_line();
        assert!(
            !line.contains("features2") && !line.contains(r#""v":"#),
            "{line}"
        );
        assert!(
            !line.contains("links") && !line.contains("rust_version"),
            "{line}"
        );
    }

    #[test]
    fn broken_lines_are_skipped() {
        let text = "not json\n{\"name\":\"a\",\"vers\":\"0.1.0\",\"deps\":[],\"cksum\":\"00\"}\n\n";
        let entries = parse_file(text);
        assert_eq!(entries.len(), 1);
        assert!(entries[0].features.is_empty() && !entries[0].yanked);
    }
}

#[cfg(test)]
mod round_trip {
    use proptest::prelude::*;

    use super::*;
    use crate::registry::metadata::round_trip::{dep as publish_dep, text};

    fn features() -> impl Strategy<Value = BTreeMap<String, Vec<String>>> {
        proptest::collection::btree_map(text(), proptest::collection::vec(text(), 0..4), 0..4)
    }

    fn dep() -> impl Strategy<Value = IndexDep> {
        // Through the conversion a publish takes, and then any `kind` (old lines have none).
        (publish_dep(), any::<bool>(), any::<bool>()).prop_map(|(d, own, no_kind)| {
            let mut dep = IndexDep::from_publish(&d, &|_: &str| own);
            if no_kind {
                dep.kind = None;
            }
            dep
        })
    }

    fn entry() -> impl Strategy<Value = IndexEntry> {
        (
            (
                text(),
                text(),
                proptest::collection::vec(dep(), 0..4),
                "[0-9a-f]{64}",
            ),
            (features(), proptest::option::of(features()), any::<bool>()),
            (
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(any::<u32>()),
                proptest::option::of(text()),
            ),
        )
            .prop_map(
                |(
                    (name, vers, deps, cksum),
                    (features, features2, yanked),
                    (links, rust_version, v, pubtime),
                )| IndexEntry {
                    name,
                    vers,
                    deps,
                    cksum,
                    features,
                    features2,
                    yanked,
                    links,
                    rust_version,
                    v,
                    pubtime,
                },
            )
    }

    proptest! {
        #![proptest_config(crate::registry::metadata::round_trip::config(128))]

        #[test]
        fn index_lines_parse_back_to_their_entries(
            entries in proptest::collection::vec(entry(), 0..4),
        ) {
            let text = render_file(&entries);
            prop_assert_eq!(text.lines().count(), entries.len());
            for (line, e) in text.lines().zip(&entries) {
                prop_assert_eq!(&line, &e.to_line());
            }
            prop_assert_eq!(parse_file(&text), entries);
        }
    }
}
