//! The index: where a crate's file lives, what one line of it holds, and how the metadata a
//! publish carries becomes that line.
//!
//! An index file is a function of the registry state: it is always rewritten whole from its
//! entries, one JSON object per line, each line ending in `\n`.
//!
//! A line is written as crates.io writes it (`crates_io_index`), so that a crate added from
//! crates.io reads the same here: keys in crates.io's order, `registry` and `package` left out
//! when null, dependencies sorted, features split between `features` and `features2` by the
//! same rule, targets as the metadata spells them.
//!
//! Beside the lines, the room holds what is kept with them: reading and rewriting a crate's
//! file and committing it ([`files`]), the git repository the index is ([`git`]), the index
//! served to git clients ([`gitpack`]), and the search file every write updates ([`search`]).

pub(super) mod deferred;
mod files;
pub(super) mod git;
mod gitpack;
mod objects;
pub(super) mod search;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::names::CrateName;
use super::publish::metadata::{DepKind, PublishDep, PublishMetadata};

pub use super::publish::metadata::CRATES_IO_INDEX;
pub use files::Listed;
pub use gitpack::GitError;
pub use search::{Found, SearchLine};

/// The whole index line, a backstop over the metadata's own limits.
pub const MAX_INDEX_LINE: usize = 256 * 1024;

/// Whether the index line `meta` makes stays within [`MAX_INDEX_LINE`] (checked after
/// [`super::publish::metadata::validate`], as the last check of the metadata).
pub fn check_line_len(meta: &PublishMetadata) -> Result<(), String> {
    let line = IndexEntry::from_publish(meta, "", String::new(), |_| false).to_line();
    if line.len() > MAX_INDEX_LINE {
        return Err(format!(
            "the index line for this version would be {} bytes, more than the limit of {MAX_INDEX_LINE}",
            line.len()
        ));
    }
    Ok(())
}

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
pub fn index_path_of(name: &str) -> String {
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
    // `pubtime` before `v`: crates.io's order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pubtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<u32>,
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
    // Absent and null read the same to cargo; crates.io writes neither key when null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
}

fn yes() -> bool {
    true
}

impl IndexEntry {
    /// Builds the line for a publish. `own_index` tells whether a dependency's registry URL
    /// names this registry (then it is written as `null`). The one function for every way in
    /// (API publish and `palletizer add`), as crates.io builds every line with one function
    /// (`index_metadata`).
    pub fn from_publish(
        meta: &PublishMetadata,
        cksum: &str,
        pubtime: String,
        own_index: impl Fn(&str) -> bool,
    ) -> IndexEntry {
        let mut deps: Vec<IndexDep> = meta
            .deps
            .iter()
            .map(|d| IndexDep::from_publish(d, &own_index))
            .collect();
        deps.sort_by(IndexDep::crates_io_order);
        let (features, features2) = split_features(meta.features.clone());
        let (features2, v) = if features2.is_empty() {
            (None, None)
        } else {
            (Some(features2), Some(2))
        };
        IndexEntry {
            name: meta.name.clone(),
            vers: meta.vers.clone(),
            deps,
            cksum: cksum.to_owned(),
            features,
            features2,
            yanked: false,
            links: meta.links.clone(),
            rust_version: meta.rust_version.clone(),
            pubtime: Some(pubtime),
            v,
        }
    }

    /// The entry as one index line, without the newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("index entries always serialize")
    }
}

/// How many rounds [`split_features`] moves features for, as crates.io does.
const SPLIT_ROUNDS: usize = 100;

/// Splits features between `features` and `features2` as crates.io does: a feature whose
/// values use `dep:` or `?/` goes to `features2` (with `v: 2`, so that a cargo older than 1.60
/// skips the version instead of failing on the whole file), and so, round after round, does
/// every feature that names a feature already moved (an old cargo would find it naming a
/// feature it cannot see). crates.io stops after [`SPLIT_ROUNDS`] rounds; so does this, which
/// only matters for a chain of features that long.
pub fn split_features(
    features: BTreeMap<String, Vec<String>>,
) -> (BTreeMap<String, Vec<String>>, BTreeMap<String, Vec<String>>) {
    let new_syntax = |v: &String| v.starts_with("dep:") || v.contains("?/");
    let (mut plain, mut moved): (BTreeMap<_, _>, BTreeMap<_, _>) = features
        .into_iter()
        .partition(|(_, values)| !values.iter().any(new_syntax));
    // Who names whom, so that each round looks only at the features naming last round's
    // moves: linear in the values, whatever the depth of the chain.
    let mut named_by: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, values) in &plain {
        for v in values {
            named_by.entry(v.as_str()).or_default().push(name.as_str());
        }
    }
    let mut moving: BTreeSet<&str> = BTreeSet::new();
    let mut last: Vec<&str> = moved.keys().map(String::as_str).collect();
    for _ in 0..SPLIT_ROUNDS {
        let round: BTreeSet<&str> = last
            .iter()
            .filter_map(|m| named_by.get(m))
            .flatten()
            .copied()
            .filter(|n| !moving.contains(n))
            .collect();
        if round.is_empty() {
            break;
        }
        moving.extend(&round);
        last = round.into_iter().collect();
    }
    let moving: Vec<String> = moving.into_iter().map(str::to_owned).collect();
    for name in moving {
        if let Some(values) = plain.remove(&name) {
            moved.insert(name, values);
        }
    }
    (plain, moved)
}

impl IndexDep {
    /// crates.io's order of a line's dependencies: by name, then kind (normal, build, dev:
    /// normal first, because old cargo could misread `optional` when one name comes with two
    /// kinds), then the other fields in the order crates.io compares them.
    fn crates_io_order(a: &IndexDep, b: &IndexDep) -> std::cmp::Ordering {
        fn rank(k: Option<DepKind>) -> u8 {
            match k {
                None => 0,
                Some(DepKind::Normal) => 1,
                Some(DepKind::Build) => 2,
                Some(DepKind::Dev) => 3,
            }
        }
        type Key<'a> = (
            &'a str,
            u8,
            &'a str,
            bool,
            bool,
            &'a Option<String>,
            &'a Option<String>,
            &'a [String],
        );
        fn key(d: &IndexDep) -> Key<'_> {
            (
                &d.name,
                rank(d.kind),
                &d.req,
                d.optional,
                d.default_features,
                &d.target,
                &d.package,
                &d.features,
            )
        }
        key(a).cmp(&key(b))
    }

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
            // Spelled by the metadata: cargo's spelling, or the manifest's (crates.io's since
            // October 2023; see `publish::history`).
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

/// A `pubtime` given by hand (`palletizer add --pubtime`): a real UTC time in the one form
/// the index uses, `YYYY-MM-DDTHH:MM:SSZ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pubtime(String);

/// A `pubtime` that is not `YYYY-MM-DDTHH:MM:SSZ` or not a real time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid publish time `{0}`: expected a UTC time as YYYY-MM-DDTHH:MM:SSZ, e.g. 2024-05-01T12:30:00Z")]
pub struct BadPubtime(String);

impl Pubtime {
    pub fn parse(s: &str) -> Result<Pubtime, BadPubtime> {
        let bad = || BadPubtime(super::names::shown(s));
        let shape = b"dddd-dd-ddTdd:dd:ddZ";
        let b = s.as_bytes();
        let shaped = b.len() == shape.len()
            && b.iter().zip(shape).all(|(c, want)| match want {
                b'd' => c.is_ascii_digit(),
                want => c == want,
            });
        // humantime checks the calendar (a 29th of February only in a leap year) but would
        // take a leap second, which the index's readers do not.
        if !shaped || &s[17..19] > "59" || humantime::parse_rfc3339(s).is_err() {
            return Err(bad());
        }
        Ok(Pubtime(s.to_owned()))
    }

    pub fn now() -> Pubtime {
        Pubtime(pubtime_now())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
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
        assert_eq!(Pubtime::parse(&t).unwrap().as_str(), t);
    }

    #[test]
    fn given_pubtimes_are_checked() {
        for good in [
            "2014-11-11T23:52:39Z",
            "2024-02-29T00:00:00Z",
            "1970-01-01T00:00:00Z",
        ] {
            assert_eq!(Pubtime::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "2024-05-01",
            "2024-05-01T12:30:00",
            "2024-05-01T12:30:00.5Z",
            "2024-05-01T12:30:00+02:00",
            "2024-05-01 12:30:00Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-05-01T24:00:00Z",
            "2016-12-31T23:59:60Z",
            "1969-12-31T23:59:59Z",
            "２０２４-05-01T12:30:00Z",
        ] {
            let err = Pubtime::parse(bad).expect_err(bad).to_string();
            assert!(err.contains("YYYY-MM-DDTHH:MM:SSZ"), "{err}");
        }
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
        // crates.io's line: dependencies by name, no `registry`/`package` keys when null,
        // `pubtime` before `v`.
        let want = concat!(
            r#"{"name":"Foo","vers":"1.2.3","deps":["#,
            r#"{"name":"abdep","req":"^1","features":[],"optional":true,"default_features":true,"target":null,"kind":"normal","package":"ab"},"#,
            r#"{"name":"mine","req":"=0.1.0","features":[],"optional":false,"default_features":true,"target":null,"kind":"build"},"#,
            r#"{"name":"other","req":"^0.1","features":[],"optional":false,"default_features":true,"target":null,"kind":"dev","registry":"sparse+https://elsewhere/index/"},"#,
            r#"{"name":"serde","req":"^1.0","features":["derive"],"optional":false,"default_features":false,"target":"cfg(unix)","kind":"normal","registry":"https://github.com/rust-lang/crates.io-index"}],"#,
            r#""cksum":"ab12","features":{"default":["std"],"std":[]},"#,
            r#""features2":{"extra":["dep:abdep","foo/fast"],"weak":["abdep?/x"]},"yanked":false,"#,
            r#""links":"z","rust_version":"1.70","pubtime":"2026-01-02T03:04:05Z","v":2}"#
        );
        assert_eq!(e.to_line(), want);
        assert_eq!(e.deps[1].registry, None, "own registry is written as null");
        assert_eq!(parse_file(&render_file(std::slice::from_ref(&e))), vec![e]);
    }

    #[test]
    fn dependencies_in_crates_io_order() {
        // Same name: normal, build, dev, then by requirement, then targets (none first).
        let m = meta(
            r#"{"name":"a","vers":"0.1.0","deps":[
              {"name":"zz","version_req":"^1","kind":"normal"},
              {"name":"libc","version_req":"^0.2","kind":"dev"},
              {"name":"libc","version_req":"^0.2","kind":"build"},
              {"name":"libc","version_req":"^0.2","kind":"normal","target":"cfg(unix)"},
              {"name":"libc","version_req":"^0.2","kind":"normal","target":"cfg(target_os=\"wasi\")"},
              {"name":"libc","version_req":"^0.1","kind":"normal","target":"cfg(windows)"},
              {"name":"Zed","version_req":"^1","kind":"normal"},
              {"name":"b","version_req":"^1","kind":"dev","explicit_name_in_toml":"aa"}
            ]}"#,
        );
        let e = convert(&m);
        let got: Vec<(&str, DepKind, &str, Option<&str>)> = e
            .deps
            .iter()
            .map(|d| {
                let kind = d.kind.unwrap();
                (d.name.as_str(), kind, d.req.as_str(), d.target.as_deref())
            })
            .collect();
        use DepKind::*;
        assert_eq!(
            got,
            [
                ("Zed", Normal, "^1", None),
                ("aa", Dev, "^1", None),
                ("libc", Normal, "^0.1", Some("cfg(windows)")),
                ("libc", Normal, "^0.2", Some(r#"cfg(target_os="wasi")"#)),
                ("libc", Normal, "^0.2", Some("cfg(unix)")),
                ("libc", Build, "^0.2", None),
                ("libc", Dev, "^0.2", None),
                ("zz", Normal, "^1", None),
            ]
        );
    }

    #[test]
    fn features_naming_moved_features_move_too() {
        let m = meta(
            r#"{"name":"a","vers":"0.1.0","features":{
              "default":["std"],"std":["alloc","serde?/std"],"alloc":[],
              "full":["default","extra"],"extra":["dep:x"],"unrelated":["alloc"],
              "loop1":["loop2"],"loop2":["loop1","full"]
            }}"#,
        );
        let e = convert(&m);
        let keys = |f: &BTreeMap<String, Vec<String>>| f.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&e.features), ["alloc", "unrelated"]);
        assert_eq!(
            keys(e.features2.as_ref().unwrap()),
            ["default", "extra", "full", "loop1", "loop2", "std"]
        );
        assert_eq!(e.v, Some(2));
    }

    #[test]
    fn a_chain_of_features_moves_for_a_hundred_rounds() {
        // f0 uses `dep:`; f{i} names f{i-1}. crates.io moves f1..=f100 and leaves the rest.
        let features: BTreeMap<String, Vec<String>> = (0..150)
            .map(|i| {
                let v = if i == 0 {
                    "dep:x".to_owned()
                } else {
                    format!("f{}", i - 1)
                };
                (format!("f{i}"), vec![v])
            })
            .collect();
        let (plain, moved) = split_features(features);
        assert_eq!(moved.len(), 101);
        assert!(moved.contains_key("f100") && plain.contains_key("f101"));
        assert_eq!(plain.len(), 49);
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
    use crate::registry::publish::metadata::round_trip::{dep as publish_dep, text};

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
        #![proptest_config(crate::registry::publish::metadata::round_trip::config(128))]

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
