//! What the mirror hides from the index files it serves: versions younger than `min-age`
//! (by their line's `pubtime`), crates or versions on the `deny` list, and, when `allow`
//! is not empty, everything it does not name. Applied when a file is served, to the
//! upstream's bytes as cached: a hidden version is a line left out; every kept line is the
//! upstream's, byte for byte (so `Cargo.lock` checksums equal the upstream's).

use crate::registry::{canonical, CrateRule};

/// The policy in force (from `[mirror]`).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Seconds a version must have been published for.
    pub min_age: Option<u64>,
    pub deny: Vec<CrateRule>,
    pub allow: Vec<CrateRule>,
}

/// The few fields of an index line the policy reads.
#[derive(serde::Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    vers: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    pubtime: Option<std::borrow::Cow<'a, str>>,
}

impl Policy {
    /// Whether the policy can hide anything at all.
    pub fn is_empty(&self) -> bool {
        self.min_age.is_none() && self.deny.is_empty() && self.allow.is_empty()
    }

    /// Whether the version `vers` of `name`, published at `pubtime` (`None`: before
    /// crates.io recorded it), is hidden at `now` (seconds since the epoch).
    pub fn hides(&self, name: &str, vers: &str, pubtime: Option<&str>, now: u64) -> bool {
        let canon = canonical(name);
        let Ok(v) = semver::Version::parse(vers) else {
            // Not a version cargo could use either; nothing to decide on.
            return !self.allow.is_empty() || self.deny.iter().any(|r| r.canonical == canon);
        };
        if self.deny.iter().any(|r| r.covers(&canon, &v)) {
            return true;
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|r| r.covers(&canon, &v)) {
            return true;
        }
        match (self.min_age, pubtime.and_then(parse_pubtime)) {
            (Some(age), Some(at)) => at.saturating_add(age) > now,
            _ => false,
        }
    }

    /// `file` (an index file's bytes) without the lines the policy hides at `now`, and how
    /// many it hid. Lines that do not parse are kept as they are (cargo skips them).
    pub fn filter(&self, file: Vec<u8>, now: u64) -> (Vec<u8>, u64) {
        if self.is_empty() {
            return (file, 0);
        }
        let mut out = Vec::with_capacity(file.len());
        let mut hidden = 0;
        for line in file.split_inclusive(|&b| b == b'\n') {
            let parsed: Option<Line> = serde_json::from_slice(line.trim_ascii_end()).ok();
            let hide =
                parsed.is_some_and(|l| self.hides(&l.name, &l.vers, l.pubtime.as_deref(), now));
            if hide {
                hidden += 1;
            } else {
                out.extend_from_slice(line);
            }
        }
        (out, hidden)
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` (the only form cargo accepts) as seconds since the epoch.
pub fn parse_pubtime(s: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339(s).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &[u8] = b"{\"name\":\"Foo-bar\",\"vers\":\"1.0.0\",\"deps\":[],\"cksum\":\"aa\"}\n\
{\"name\":\"Foo-bar\",\"vers\":\"1.1.0\",\"deps\":[],\"cksum\":\"bb\",\"pubtime\":\"2026-01-01T00:00:00Z\"}\n\
{\"name\":\"Foo-bar\",\"vers\":\"2.0.0\",\"deps\":[],\"cksum\":\"cc\",\"pubtime\":\"2026-03-01T00:00:00Z\"}\n";

    fn rule(t: &str) -> CrateRule {
        CrateRule::parse(t).unwrap()
    }

    #[test]
    fn an_empty_policy_serves_the_upstream_bytes() {
        let (out, hidden) = Policy::default().filter(FILE.to_vec(), 0);
        assert_eq!((out.as_slice(), hidden), (FILE, 0));
    }

    #[test]
    fn min_age_hides_young_versions_and_keeps_lines_byte_for_byte() {
        let march_2 = parse_pubtime("2026-03-02T00:00:00Z").unwrap();
        let p = Policy {
            min_age: Some(3 * 86400),
            ..Policy::default()
        };
        let (out, hidden) = p.filter(FILE.to_vec(), march_2);
        assert_eq!(hidden, 1);
        let lines: Vec<&[u8]> = FILE.split_inclusive(|&b| b == b'\n').collect();
        assert_eq!(out, [lines[0], lines[1]].concat());
        // Old lines without pubtime stay; once old enough, every line shows.
        assert_eq!(p.filter(FILE.to_vec(), march_2 + 3 * 86400).1, 0);
    }

    #[test]
    fn deny_and_allow_lists() {
        let p = Policy {
            deny: vec![rule("foo_bar@>=2")],
            ..Policy::default()
        };
        assert_eq!(p.filter(FILE.to_vec(), 0).1, 1);
        let p = Policy {
            deny: vec![rule("FOO-BAR")],
            ..Policy::default()
        };
        assert_eq!(p.filter(FILE.to_vec(), 0), (Vec::new(), 3));
        let p = Policy {
            allow: vec![rule("serde")],
            ..Policy::default()
        };
        assert_eq!(p.filter(FILE.to_vec(), 0).1, 3);
        let p = Policy {
            allow: vec![rule("foo-bar@1")],
            ..Policy::default()
        };
        assert_eq!(p.filter(FILE.to_vec(), 0).1, 1);
    }
}
