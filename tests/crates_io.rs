//! Against crates.io itself, opted in with `PALLETIZER_CRATES_IO_TESTS=1` (reported as
//! ignored otherwise; about 1.5 MB is downloaded): `palletizer add` of real crate files from
//! static.crates.io, each with its publish time, writes the lines index.crates.io serves, byte
//! for byte (a yank applied after), for versions of every era `publish::history` knows; and
//! where a crate file cannot tell what crates.io's line holds, that is the only difference.

mod support;

use std::fs;
use std::path::PathBuf;

use palletizer::mirror::upstream::{IndexAnswer, Upstream};
use palletizer::registry::{index_path_of, MirrorSettings, CRATES_IO_INDEX};
use support::Sandbox;

/// Versions of each era, oldest first (the era each begins is named): small crate files whose
/// lines hold what the era changed (kinds, requirement spellings, target spellings), some of
/// them yanked.
const CRATES: [(&str, &str); 52] = [
    // Before 25 November 2014: no kinds.
    ("modifier", "0.0.1"),
    ("openssl-sys", "0.0.1"),
    ("libz-sys", "0.0.1"),
    ("conduit", "0.5.0"),
    ("civet", "0.1.0"),
    ("postgres", "0.1.0"),
    ("mio", "0.1.0"),
    // Until May 2020: `= 0.8.4`, `>= 0.16.0`, `0.*`.
    ("serde_derive", "0.8.4"),
    ("serde_macros", "0.7.13"),
    ("serde_macros", "0.8.9"),
    ("quasi", "0.17.0"),
    ("memchr", "0.1.1"),
    ("errno", "0.2.2"),
    ("home", "0.4.0"),
    ("aho-corasick", "0.1.0"),
    ("atty", "0.2.14"),
    ("tokio-io", "0.2.0-alpha.1"),
    ("thiserror", "1.0.19"),
    ("url", "1.2.4"),
    ("aster", "0.4.9"),
    // From May 2020: `=1.0.111`.
    ("getrandom", "0.1.15"),
    ("socket2", "0.3.13"),
    ("serde", "1.0.111"),
    ("which", "4.0.0"),
    ("hermit-abi", "0.1.14"),
    // The week of semver 0.11: ranges.
    ("net2", "0.2.36"),
    ("tracing", "0.1.22"),
    ("signal-hook", "0.2.1"),
    ("crossbeam-utils", "0.8.1"),
    // Semver 0.10 again, then cargo's own spelling.
    ("bytes", "1.0.1"),
    ("rand", "0.8.1"),
    ("memoffset", "0.6.3"),
    ("hex", "0.4.3"),
    ("itertools", "0.10.1"),
    // From cargo 1.54: semver 1.
    ("is-terminal", "0.4.3"),
    ("errno", "0.3.4"),
    ("fastrand", "1.9.0"),
    ("net2", "0.2.39"),
    ("jobserver", "0.1.23"),
    ("crossbeam-utils", "0.8.9"),
    ("itertools", "0.10.4"),
    // From October 2023: the manifest (`cfg(target_os="hermit")` kept).
    ("is-terminal", "0.4.17"),
    ("home", "0.5.12"),
    ("errno", "0.3.5"),
    ("errno", "0.3.14"),
    ("winapi-util", "0.1.11"),
    ("sha1", "0.10.7"),
    ("num_cpus", "1.17.0"),
    ("itoa", "1.0.19"),
    ("poggers", "1.2.1"),
    ("serde_spanned", "1.1.3"),
    ("fastrand", "2.5.0"),
];

/// crates.io, through the mirror's client.
struct CratesIo {
    upstream: Upstream,
    files: PathBuf,
}

impl CratesIo {
    fn new(s: &Sandbox) -> CratesIo {
        let files = s.path().join("files");
        fs::create_dir_all(&files).unwrap();
        let upstream = Upstream::new(&MirrorSettings::default()).unwrap();
        CratesIo { upstream, files }
    }

    /// Whether crates.io has a crate of this name.
    fn has(&self, name: &str) -> bool {
        let answer = self.upstream.index(&index_path_of(name), None, None);
        match answer.unwrap_or_else(|e| panic!("{name}'s index file: {}", e.detail)) {
            IndexAnswer::Fresh { .. } => true,
            IndexAnswer::Missing => false,
            IndexAnswer::NotModified => unreachable!("no validators were sent"),
        }
    }

    /// crates.io's line for `name` `vers`, compact as crates.io writes its index.
    fn line(&self, name: &str, vers: &str) -> String {
        let answer = self.upstream.index(&index_path_of(name), None, None);
        let Ok(IndexAnswer::Fresh { bytes, .. }) = answer else {
            panic!("no index file for {name} on crates.io");
        };
        let text = String::from_utf8(bytes).unwrap();
        let line = text
            .lines()
            .find(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["vers"] == vers)
            .unwrap_or_else(|| panic!("no {name} {vers} on crates.io"));
        compact(line)
    }

    /// Downloads the crate file; returns where it is.
    fn crate_file(&self, name: &str, vers: &str) -> PathBuf {
        let path = self.files.join(format!("{name}-{vers}.crate"));
        let url = format!("https://static.crates.io/crates/{name}/{name}-{vers}.crate");
        let mut out = fs::File::create(&path).unwrap();
        self.upstream
            .download(&url, 64 << 20, &mut out, |_| {})
            .unwrap_or_else(|e| panic!("{}", e.detail));
        path
    }
}

/// A JSON text without the whitespace between its tokens (the sparse index serves
/// `", "` and `": "`; crates.io's index files have none).
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if !c.is_whitespace() {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// A registry standing in for crates.io (its index URL an alias of this one).
fn registry() -> Sandbox {
    let s = Sandbox::new();
    let url = format!("file://{}", s.reg().display());
    s.palletizer_ok(&["init", "--url", &url]);
    let settings = s.reg().join("palletizer.toml");
    let text = fs::read_to_string(&settings).unwrap();
    let alias = format!("index-aliases = [\"{CRATES_IO_INDEX}\"]");
    fs::write(&settings, text.replace("index-aliases = []", &alias)).unwrap();
    s
}

/// Adds the crate file as crates.io serves it (publish time, yank) and returns our line.
fn add(s: &Sandbox, file: &std::path::Path, crates_io: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(crates_io).unwrap();
    let (name, vers) = (v["name"].as_str().unwrap(), v["vers"].as_str().unwrap());
    let pubtime = v["pubtime"].as_str().unwrap();
    s.palletizer_ok(&["add", "--pubtime", pubtime, file.to_str().unwrap()]);
    if v["yanked"] == true {
        s.palletizer_ok(&["yank", name, vers]);
    }
    let text = fs::read_to_string(s.reg().join("index").join(index_path_of(name))).unwrap();
    text.lines()
        .find(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["vers"] == vers)
        .unwrap()
        .to_owned()
}

fn add_writes_the_lines_crates_io_serves() {
    let s = registry();
    let crates_io = CratesIo::new(&s);
    // Every line compared before any failure, so that one run names all that differ.
    let mut differ = Vec::new();
    for (name, vers) in CRATES {
        let want = crates_io.line(name, vers);
        let got = add(&s, &crates_io.crate_file(name, vers), &want);
        if got != want {
            differ.push(format!(
                "{name} {vers}:\n  ours:      {got}\n  crates.io: {want}"
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// `winapi 0.2.1` (2015) lists dev-dependencies on crates crates.io has deleted since (its
/// database drops a dependency with its crate): its line lacks them, ours has them, and that
/// is all that differs.
fn a_dependency_on_a_deleted_crate_is_all_that_differs() {
    let s = registry();
    let crates_io = CratesIo::new(&s);
    let want = crates_io.line("winapi", "0.2.1");
    let got = add(&s, &crates_io.crate_file("winapi", "0.2.1"), &want);
    let want: serde_json::Value = serde_json::from_str(&want).unwrap();
    let mut got: serde_json::Value = serde_json::from_str(&got).unwrap();
    let listed = want["deps"].as_array().unwrap().clone();
    let (kept, dropped): (Vec<_>, Vec<_>) = got["deps"]
        .as_array()
        .unwrap()
        .iter()
        .cloned()
        .partition(|d| listed.contains(d));
    let dropped: Vec<&str> = dropped
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        dropped,
        ["dsound-sys", "usp10-sys", "vssapi-sys", "winspool-sys"]
    );
    for name in dropped {
        assert!(!crates_io.has(name), "{name} is on crates.io");
    }
    assert!(crates_io.has("advapi32-sys"), "a kept one is");
    got["deps"] = kept.into();
    assert_eq!(got, want);
}

support::harness::tests!(
    add_writes_the_lines_crates_io_serves[CratesIo],
    a_dependency_on_a_deleted_crate_is_all_that_differs[CratesIo],
);
