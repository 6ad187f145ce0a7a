//! How crates.io recorded a version's dependencies at the time it was published, so that
//! `palletizer add` of a crate file crates.io serves writes the line crates.io serves.
//!
//! crates.io builds every index line from its database, where each dependency stays as it
//! was recorded on the day of the publish. What it recorded has changed:
//!
//! - Until October 2023 it took the dependencies from the JSON cargo sent, where cargo had
//!   printed each target and requirement after parsing it: targets in cargo's spelling
//!   (`cfg(target_os = "hermit")` for a manifest's `cfg(target_os="hermit")`).
//! - Until 14 December 2020 crates.io parsed each requirement again and stored it as the
//!   `semver` crate it was built with printed it: `= 0.8.4` and `>= 1, < 2` with semver 0.1
//!   to 0.9, `=0.8.4` with 0.10 (from May 2020), every requirement as a range (`^1.0` as
//!   `>=1.0.0, <2.0.0`) during the week of November 2020 it ran 0.11. semver 0.x keeps a
//!   wildcard as one (`^0.*` is `0.*`), where semver 1 reads `^0.*` as `^0`.
//! - From then until October 2023 it stored the requirement as cargo printed it: semver
//!   0.10's spelling up to cargo 1.53, semver 1's from cargo 1.54 (released 29 July 2021,
//!   from when the era counts). A publisher on an older cargo cannot be told from the crate
//!   file: itertools 0.10.5 (2022) has `= 0`, from a cargo older than 1.45.
//! - Before 25 November 2014 cargo sent no dependency kinds: every dependency is `normal`.
//! - Since October 2023 (crates.io's "Read dependencies metadata from embedded `Cargo.toml`
//!   file") it reads the crate file's `Cargo.toml`: targets as the manifest spells them,
//!   requirements printed by semver 1.
//!
//! Each change is an [`Era`], found from the version's `pubtime`; the dates are those of
//! crates.io's commits and cargo's release, narrowed by the last and first lines crates.io
//! serves either way.
//!
//! What a crate file cannot tell, besides the publisher's cargo: a dependency on a crate
//! crates.io has deleted since is gone from its lines (the database drops it with the crate:
//! `winapi 0.2.8` lists 48 dev-dependencies, its line 32), and whether a version is yanked.

use super::platform;

/// What crates.io recorded of a publish at a time: see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// No dependency kinds; requirements as semver 0.x prints them.
    NoKinds,
    /// Requirements as semver 0.1 to 0.9 print them: `= 1.0`, `>= 1, < 2`, `0.*`.
    SpacedOps,
    /// Requirements as semver 0.10 prints them: `=1.0`, `>=1, <2`, `0.*`.
    TightOps,
    /// Requirements as semver 0.11 prints them: ranges of full versions.
    Ranges,
    /// Requirements as semver 1 prints them (cargo 1.54 and later), targets as cargo prints
    /// them.
    Semver1,
    /// The crate file's manifest: targets as written, requirements as semver 1 prints them.
    Manifest,
}

/// When each era began (UTC, the `pubtime` form, so that strings compare as times).
const ERAS: [(&str, Era); 6] = [
    // cargo "Upload dependency kinds to the registry" (2014-11-20); the last line without
    // them is postgres 0.1.0 (2014-11-24T02:34:44Z), the first with them openssl-sys 0.1.0
    // (2014-11-26T00:47:10Z).
    ("2014-11-25T00:00:00Z", Era::SpacedOps),
    // crates.io "Update `semver` to 0.10" (2020-05-25); thiserror 1.0.19 (2020-05-22) has
    // `= 1.0.19`, serde 1.0.111 (2020-05-30) `=1.0.111`.
    ("2020-05-26T00:00:00Z", Era::TightOps),
    // crates.io "Update to the latest semver" (0.11); syn 1.0.50 (2020-11-21T22:29:21Z) has
    // `^1.0`, rustls 0.19.0 (2020-11-22T13:51:58Z) `>=0.13.0, <0.14.0`.
    ("2020-11-22T00:00:00Z", Era::Ranges),
    // Its revert (2020-11-27T19:36Z); net2 0.2.36 (2020-11-27T20:11:23Z) still has ranges,
    // nix 0.19.1 (2020-11-29T04:32:28Z) `^1.1`. From crates.io's "Save original dependency
    // requirement string in the database when publishing" (2020-12-14) on, cargo's own
    // semver 0.10 printed them, the same way.
    ("2020-11-28T00:00:00Z", Era::TightOps),
    // cargo 1.54, the first with semver 1 (its "Update to semver 1.0.0" is of 2021-05-26).
    ("2021-07-29T00:00:00Z", Era::Semver1),
    // crates.io reads the manifest (2023-10-03); ring 0.17.0 (2023-10-02T08:00:25Z) has
    // cargo's spelling of its targets, ring 0.17.1 (2023-10-06T18:51:01Z) its manifest's.
    ("2023-10-04T00:00:00Z", Era::Manifest),
];

impl Era {
    /// The era of a version published at `pubtime` (`YYYY-MM-DDTHH:MM:SSZ`).
    pub fn at(pubtime: &str) -> Era {
        ERAS.iter()
            .take_while(|(start, _)| *start <= pubtime)
            .last()
            .map_or(Era::NoKinds, |&(_, era)| era)
    }

    /// Whether every dependency was recorded as `normal` (cargo sent no kinds yet).
    pub fn records_kinds(self) -> bool {
        self != Era::NoKinds
    }

    /// The target recorded for a manifest's `[target.KEY]` (a key cargo cannot read is kept,
    /// for `validate` to refuse).
    pub fn target(self, key: &str) -> String {
        match self {
            Era::Manifest => key.to_owned(),
            _ => platform::normalize(key).unwrap_or_else(|_| key.to_owned()),
        }
    }

    /// The requirement recorded for a manifest's `version = "REQ"`, or why semver 1 cannot
    /// read it.
    pub fn requirement(self, text: &str) -> Result<String, semver::Error> {
        let parsed = semver::VersionReq::parse(text)?;
        let modern = || parsed.to_string();
        let old = |spaced| Req::read(text).map_or_else(modern, |r| r.semver0(spaced));
        Ok(match self {
            Era::NoKinds | Era::SpacedOps => old(true),
            Era::TightOps => old(false),
            Era::Ranges => Req::read(text).map_or_else(modern, |r| r.ranges()),
            Era::Semver1 | Era::Manifest => modern(),
        })
    }
}

/// One part of a version in a requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Absent,
    /// `*`, `x` or `X`.
    Wild,
    Num(u64),
}

/// One comparator, as written: its operator (none: a bare version), its version's parts and
/// its pre-release (build metadata dropped, as every semver crate prints it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Comparator<'a> {
    op: &'a str,
    major: u64,
    minor: Part,
    patch: Part,
    pre: &'a str,
}

/// A requirement as written, read only as far as printing it again needs; semver 1 has
/// checked it first. `None` from [`Req::read`] (a form this does not know) falls back to
/// semver 1's spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Req<'a> {
    /// `*` alone.
    Any,
    All(Vec<Comparator<'a>>),
}

impl<'a> Req<'a> {
    fn read(text: &'a str) -> Option<Req<'a>> {
        let text = text.trim();
        if matches!(text, "*" | "x" | "X") {
            return Some(Req::Any);
        }
        text.split(',')
            .map(Comparator::read)
            .collect::<Option<_>>()
            .map(Req::All)
    }

    /// As semver 0.x prints it: operators spaced (`= 1.0`, semver up to 0.9) or not (0.10),
    /// a bare version with `^`, a wildcard as one whatever its operator (`^0.*` is `0.*`).
    fn semver0(&self, spaced: bool) -> String {
        let Req::All(parts) = self else {
            return "*".to_owned();
        };
        let one = |c: &Comparator<'_>| match (c.minor, c.patch) {
            (Part::Wild, Part::Wild) => format!("{}.*.*", c.major),
            (Part::Wild, _) => format!("{}.*", c.major),
            (Part::Num(minor), Part::Wild) => format!("{}.{minor}.*", c.major),
            (minor, patch) => {
                let op = if c.op.is_empty() { "^" } else { c.op };
                let space = if spaced && !matches!(op, "^" | "~") {
                    " "
                } else {
                    ""
                };
                let mut s = format!("{op}{space}{}", c.major);
                for p in [minor, patch] {
                    if let Part::Num(n) = p {
                        s.push_str(&format!(".{n}"));
                    }
                }
                push_pre(&mut s, c.pre);
                s
            }
        };
        parts.iter().map(one).collect::<Vec<_>>().join(", ")
    }

    /// As semver 0.11 prints it: each comparator as the range of full versions it means
    /// (semver-parser 0.10's rules for cargo), printed `>=1.0.0, <2.0.0`.
    fn ranges(&self) -> String {
        let Req::All(parts) = self else {
            return ">=0.0.0".to_owned();
        };
        let mut out: Vec<String> = Vec::new();
        for c in parts {
            for (op, [major, minor, patch], pre) in c.range() {
                let mut s = format!("{op}{major}.{minor}.{patch}");
                push_pre(&mut s, pre);
                out.push(s);
            }
        }
        out.join(", ")
    }
}

fn push_pre(s: &mut String, pre: &str) {
    if !pre.is_empty() {
        s.push('-');
        s.push_str(pre);
    }
}

/// One bound of a range: operator, full version, pre-release.
type Bound<'a> = (&'static str, [u64; 3], &'a str);

impl<'a> Comparator<'a> {
    fn read(text: &'a str) -> Option<Comparator<'a>> {
        let text = text.trim();
        let op_len = text
            .find(|c: char| c.is_ascii_digit() || matches!(c, '*' | 'x' | 'X'))
            .unwrap_or(text.len());
        let op = text[..op_len].trim_end();
        if !matches!(op, "" | "=" | ">" | ">=" | "<" | "<=" | "~" | "^") {
            return None;
        }
        let version = &text[op_len..];
        let version = version.split_once('+').map_or(version, |(v, _)| v);
        let (numbers, pre) = version.split_once('-').unwrap_or((version, ""));
        let mut parts = numbers.split('.').map(|p| match p {
            "*" | "x" | "X" => Some(Part::Wild),
            p => p.parse().ok().map(Part::Num),
        });
        let Some(Some(Part::Num(major))) = parts.next() else {
            return None;
        };
        let minor = parts.next().unwrap_or(Some(Part::Absent))?;
        let patch = parts.next().unwrap_or(Some(Part::Absent))?;
        if parts.next().is_some() {
            return None;
        }
        Some(Comparator {
            op,
            major,
            minor,
            patch,
            pre,
        })
    }

    /// The bounds semver-parser 0.10 gives this comparator. cargo had printed it with semver
    /// 0.10 first, so a bare version came as `^1.2` and a wildcard without its operator.
    fn range(&self) -> Vec<Bound<'a>> {
        let m = self.major;
        let known = |p: Part| match p {
            Part::Num(n) => Some(n),
            _ => None,
        };
        // How much of the version is given: a wildcard ends it, as an absent part does.
        let (minor, patch) = match (known(self.minor), known(self.patch)) {
            (Some(minor), patch) => (Some(minor), patch),
            (None, _) => (None, None),
        };
        let wild = self.minor == Part::Wild || self.patch == Part::Wild;
        let op = match self.op {
            _ if wild => "",
            "" | "^" => "^",
            "=" => "=",
            "~" => "~",
            ">" => ">",
            ">=" => ">=",
            "<" => "<",
            _ => "<=",
        };
        let pre = if patch.is_some() { self.pre } else { "" };
        let low = [m, minor.unwrap_or(0), patch.unwrap_or(0)];
        let next_major = [m + 1, 0, 0];
        let next_minor = |n: u64| [m, n + 1, 0];
        match (op, minor, patch) {
            // `1.*` and `=1`: the major; `1.2.*` and `=1.2`: the minor.
            ("" | "=", None, _) => vec![(">=", low, ""), ("<", next_major, "")],
            ("" | "=", Some(n), None) => vec![(">=", low, ""), ("<", next_minor(n), "")],
            ("=", Some(_), Some(_)) => vec![("=", low, pre)],
            ("~", None, _) => vec![(">=", low, pre), ("<", next_major, "")],
            ("~", Some(n), _) => vec![(">=", low, pre), ("<", next_minor(n), "")],
            ("^", _, _) if m > 0 => vec![(">=", low, pre), ("<", next_major, "")],
            ("^", None, _) => vec![(">=", low, ""), ("<", next_major, "")],
            ("^", Some(0), Some(p)) => vec![(">=", low, pre), ("<", [0, 0, p + 1], "")],
            ("^", Some(n), _) => vec![(">=", low, pre), ("<", next_minor(n), "")],
            ("<=", None, _) => vec![("<", next_major, "")],
            ("<=", Some(n), None) => vec![("<", next_minor(n), "")],
            // `>`, `>=`, `<`, and `<=` of a full version.
            (op, _, _) => vec![(op, low, pre)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eras_follow_the_publish_time() {
        for (pubtime, era) in [
            ("2014-11-11T05:37:08Z", Era::NoKinds),
            ("2014-11-26T00:47:10Z", Era::SpacedOps),
            ("2020-05-22T02:06:44Z", Era::SpacedOps),
            ("2020-05-30T01:54:37Z", Era::TightOps),
            ("2020-11-22T13:51:58Z", Era::Ranges),
            ("2020-11-27T20:11:23Z", Era::Ranges),
            ("2020-11-29T04:32:28Z", Era::TightOps),
            ("2021-06-09T16:45:33Z", Era::TightOps),
            ("2021-07-30T06:43:16Z", Era::Semver1),
            ("2023-10-02T08:00:25Z", Era::Semver1),
            ("2023-10-06T18:51:01Z", Era::Manifest),
            ("2026-12-01T00:00:00Z", Era::Manifest),
        ] {
            assert_eq!(Era::at(pubtime), era, "{pubtime}");
        }
    }

    /// Each from a line crates.io serves, with the requirement its crate file's manifest
    /// gives.
    #[test]
    fn requirements_as_crates_io_recorded_them() {
        for (era, manifest, line) in [
            // serde_derive 0.8.4, url 1.2.4, libgit2-sys 0.4.1, docopt_macros-era `~`.
            (Era::SpacedOps, "=0.8.4", "= 0.8.4"),
            (Era::SpacedOps, ">= 0.1.1, < 0.4", ">= 0.1.1, < 0.4"),
            (Era::SpacedOps, ">=0", ">= 0"),
            (Era::SpacedOps, "~0.6.8", "~0.6.8"),
            // tokio-io 0.2.0-alpha.1, serde_macros 0.7.13, openssl-sys 0.0.1.
            (Era::SpacedOps, "=0.3.0-alpha.17", "= 0.3.0-alpha.17"),
            (Era::SpacedOps, "^0.*", "0.*"),
            (Era::NoKinds, "*", "*"),
            (Era::SpacedOps, "1.2.*", "1.2.*"),
            (Era::SpacedOps, "0.3", "^0.3"),
            // itertools 0.10.0, nom 6.1.1.
            (Era::TightOps, "= 0", "=0"),
            (Era::TightOps, "> 1.0, <= 1.1", ">1.0, <=1.1"),
            // rustls 0.19.0, ring 0.16.17, crossbeam-utils 0.8.1.
            (Era::Ranges, "0.13.0", ">=0.13.0, <0.14.0"),
            (Era::Ranges, "1.0.62", ">=1.0.62, <2.0.0"),
            (Era::Ranges, "^1", ">=1.0.0, <2.0.0"),
            (Era::Ranges, "0.0.3", ">=0.0.3, <0.0.4"),
            (Era::Ranges, "~1.2.3", ">=1.2.3, <1.3.0"),
            (Era::Ranges, "=1.0.22", "=1.0.22"),
            (Era::Ranges, "0.*", ">=0.0.0, <1.0.0"),
            (Era::Ranges, "*", ">=0.0.0"),
            (Era::Ranges, "<= 1.2", "<1.3.0"),
            (Era::Ranges, "^1.0.0-beta.2", ">=1.0.0-beta.2, <2.0.0"),
            (Era::Semver1, "= 0.1", "=0.1"),
            (Era::Manifest, "^0.*", "^0"),
            (Era::Manifest, "1", "^1"),
        ] {
            assert_eq!(
                era.requirement(manifest).unwrap(),
                line,
                "{era:?} {manifest}"
            );
        }
        assert!(Era::SpacedOps.requirement("not a req").is_err());
    }

    #[test]
    fn targets_and_kinds_as_crates_io_recorded_them() {
        let key = r#"cfg(target_os="hermit")"#;
        // errno 0.3.4 (2023-10-01) and errno 0.3.14 (2025-09-09) say `key` in their manifests.
        assert_eq!(Era::Semver1.target(key), r#"cfg(target_os = "hermit")"#);
        assert_eq!(Era::Manifest.target(key), key);
        assert_eq!(Era::Semver1.target("cfg(unix"), "cfg(unix");
        assert!(!Era::NoKinds.records_kinds());
        assert!(Era::SpacedOps.records_kinds());
    }
}
