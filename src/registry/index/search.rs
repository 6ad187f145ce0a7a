//! Search: what `cargo search` shows of each crate (name, newest non-yanked version,
//! description) and its keywords, in two files at the registry root. `search.jsonl` holds
//! one line per crate, sorted by canonical name; `search.tail.jsonl` holds the changes made
//! since it was last written, one appended line per change: a write costs one append, not a
//! rewrite of every crate's line. The changes are folded into the sorted file at the
//! registry's checkpoints ([`compact`]), and when they pass [`MAX_TAIL`]. Every write path
//! appends under the registry lock; a search streams the sorted file merged with the changes
//! (held in memory: at most [`MAX_TAIL`] of them) and keeps only one page of hits, never the
//! whole index (nor the hits of the pages before the one asked for).
//!
//! Readers open the changes before the sorted file: a compaction renames the new sorted file
//! into place before it removes the changes, so a reader sees every change, in one file or
//! the other (a change seen in both reads the same).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::IndexEntry;
use crate::registry::names::{canonical, Version};
use crate::registry::store::{temp_path, write_atomic};
use crate::registry::{Context, Result};

pub const SEARCH_FILE: &str = "search.jsonl";
/// The changes since `search.jsonl` was written.
pub const TAIL_FILE: &str = "search.tail.jsonl";
/// Bytes of changes at most before they are folded into the sorted file whatever the
/// checkpoints do: what a search holds in memory besides its page.
pub const MAX_TAIL: u64 = 256 * 1024;

/// One crate as search knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchLine {
    pub name: String,
    pub max_version: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub keywords: Vec<String>,
}

/// What a search returns: one page of hits and the number of all matches.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub hits: Vec<SearchLine>,
    pub total: usize,
}

pub fn path(root: &Path) -> PathBuf {
    root.join(SEARCH_FILE)
}

/// Where the changes since the sorted file was written are.
pub fn tail_path(root: &Path) -> PathBuf {
    root.join(TAIL_FILE)
}

/// The newest version that is not yanked.
pub fn max_version(entries: &[IndexEntry]) -> Option<String> {
    entries
        .iter()
        .filter(|e| !e.yanked)
        .filter_map(|e| Version::parse(&e.vers).ok().map(|v| (v.0, e.vers.clone())))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, s)| s)
}

/// One line of the changes file: a crate's new line (`None`: the crate is gone), and
/// whether it keeps the description and keywords of the line before it.
#[derive(Debug, Serialize, Deserialize)]
struct Change {
    name: String,
    #[serde(default)]
    line: Option<SearchLine>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    keep_description: bool,
}

/// A crate's state after the changes: gone, or its line (`fill`: the description and
/// keywords are the sorted file's, the changes named none).
#[derive(Debug, Clone)]
enum Pending {
    Gone,
    Line { line: SearchLine, fill: bool },
}

impl Pending {
    /// The line a reader sees, given the sorted file's line for the crate.
    fn over(self, base: Option<SearchLine>) -> Option<SearchLine> {
        match self {
            Pending::Gone => None,
            Pending::Line { mut line, fill } => {
                if let Some(old) = base.filter(|_| fill) {
                    line.description = old.description;
                    line.keywords = old.keywords;
                }
                Some(line)
            }
        }
    }
}

/// The changes since the sorted file was written, folded per crate (canonical name).
type Tail = BTreeMap<String, Pending>;

/// Reads the changes; `sound` turns false on a line that does not parse (skipped).
fn read_tail(root: &Path, sound: &mut bool) -> Result<Tail> {
    let file = tail_path(root);
    let mut text = Vec::new();
    match File::open(&file) {
        Ok(f) => f
            .take(MAX_TAIL * 2)
            .read_to_end(&mut text)
            .map(drop)
            .context(|| format!("reading {}", file.display()))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Tail::new()),
        Err(e) => return Err(e).context(|| format!("reading {}", file.display())),
    }
    if !text.is_empty() && !text.ends_with(b"\n") {
        *sound = false;
    }
    let mut tail = Tail::new();
    for l in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(change) = serde_json::from_slice::<Change>(l) else {
            *sound = false;
            continue;
        };
        let key = canonical(&change.name);
        let now = match change.line {
            None => Pending::Gone,
            Some(mut line) if change.keep_description && line.description.is_none() => {
                match tail.get(&key) {
                    Some(Pending::Line { line: old, fill }) => {
                        line.description = old.description.clone();
                        line.keywords = old.keywords.clone();
                        Pending::Line { line, fill: *fill }
                    }
                    Some(Pending::Gone) => Pending::Line { line, fill: false },
                    None => Pending::Line { line, fill: true },
                }
            }
            Some(line) => Pending::Line { line, fill: false },
        };
        tail.insert(key, now);
    }
    Ok(tail)
}

/// Calls `f` with every crate's line in canonical order: the sorted file's lines from where
/// `base` stands (damaged ones skipped) merged with the changes.
fn merged(base: Option<&mut File>, tail: &Tail, mut f: impl FnMut(SearchLine)) -> io::Result<()> {
    let mut pending = tail.iter().peekable();
    if let Some(base) = base {
        for text in BufReader::new(base).split(b'\n') {
            let Ok(line) = serde_json::from_slice::<SearchLine>(&text?) else {
                continue;
            };
            let key = canonical(&line.name);
            // Crates new since the sorted file, before this one.
            while let Some((_, p)) = pending.next_if(|(k, _)| k.as_str() < key.as_str()) {
                if let Some(l) = p.clone().over(None) {
                    f(l);
                }
            }
            let seen = match pending.next_if(|(k, _)| **k == key) {
                Some((_, p)) => p.clone().over(Some(line)),
                None => Some(line),
            };
            if let Some(l) = seen {
                f(l);
            }
        }
    }
    for (_, p) in pending {
        if let Some(l) = p.clone().over(None) {
            f(l);
        }
    }
    Ok(())
}

/// The sorted file, open, or `None` when there is none.
fn open_base(root: &Path) -> Result<Option<File>> {
    let file = path(root);
    match File::open(&file) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context(|| format!("reading {}", file.display())),
    }
}

/// Whether the search files can be read as they are written: UTF-8, one valid line per
/// crate sorted by canonical name, whole change lines. (A torn or hand-damaged file is
/// rebuilt from the index.)
pub fn is_sound(root: &Path) -> Result<bool> {
    let mut sound = true;
    read_tail(root, &mut sound)?;
    if !sound {
        return Ok(false);
    }
    let file = path(root);
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e).context(|| format!("reading {}", file.display())),
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Ok(false);
    };
    let mut last: Option<String> = None;
    for l in text.lines() {
        let Ok(line) = serde_json::from_str::<SearchLine>(l) else {
            return Ok(false);
        };
        let key = canonical(&line.name);
        if last.as_ref().is_some_and(|prev| *prev >= key) {
            return Ok(false);
        }
        last = Some(key);
    }
    Ok(bytes.is_empty() || bytes.ends_with(b"\n"))
}

/// Whether neither file holds a line (missing or empty).
pub fn is_empty(root: &Path) -> bool {
    [path(root), tail_path(root)]
        .iter()
        .all(|p| std::fs::metadata(p).map_or(true, |m| m.len() == 0))
}

/// Replaces the search files with `lines` (sorted here by canonical name).
pub fn write_all(root: &Path, mut lines: Vec<SearchLine>) -> Result<()> {
    lines.sort_by_cached_key(|l| canonical(&l.name));
    let file = path(root);
    let mut text = Vec::new();
    for l in &lines {
        serde_json::to_writer(&mut text, l).expect("search lines serialize");
        text.push(b'\n');
    }
    write_atomic(&file, &text)?;
    remove_tail(root)
}

fn remove_tail(root: &Path) -> Result<()> {
    let tail = tail_path(root);
    match std::fs::remove_file(&tail) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(e).context(|| format!("removing {}", tail.display()))
        }
        _ => Ok(()),
    }
}

/// The line for the crate `name` (canonically), if any.
pub fn find(root: &Path, name: &str) -> Result<Option<SearchLine>> {
    let key = canonical(name);
    let tail = read_tail(root, &mut true)?;
    let pending = tail.get(&key).cloned();
    if let Some(p @ (Pending::Gone | Pending::Line { fill: false, .. })) = pending {
        return Ok(p.over(None));
    }
    let file = path(root);
    let mut found = None;
    if let Some(f) = open_base(root)? {
        for text in BufReader::new(f).split(b'\n') {
            let text = text.context(|| format!("reading {}", file.display()))?;
            if let Ok(line) = serde_json::from_slice::<SearchLine>(&text) {
                if canonical(&line.name) == key {
                    found = Some(line);
                    break;
                }
            }
        }
    }
    Ok(match pending {
        Some(p) => p.over(found),
        None => found,
    })
}

/// Calls `f` with every crate's line in canonical order, streaming (damaged lines are
/// skipped, as search does).
pub fn for_each_line(root: &Path, f: impl FnMut(SearchLine)) -> Result<()> {
    let tail = read_tail(root, &mut true)?;
    let mut base = open_base(root)?;
    merged(base.as_mut(), &tail, f).context(|| format!("reading {}", path(root).display()))
}

/// Changes the line for the crate `name` (canonically): removed when `line` is None.
/// A new line without a description keeps the old line's description and keywords.
/// Must be called with the registry lock held.
pub fn update(root: &Path, name: &str, line: Option<SearchLine>) -> Result<()> {
    append(root, name, line, true)
}

/// Like [`update`], but the new line replaces the old one whole.
pub fn replace(root: &Path, name: &str, line: SearchLine) -> Result<()> {
    append(root, name, Some(line), false)
}

/// Appends one change (lock held); past [`MAX_TAIL`] the changes are folded in at once.
fn append(root: &Path, name: &str, line: Option<SearchLine>, keep_description: bool) -> Result<()> {
    let file = tail_path(root);
    let change = Change {
        name: name.to_owned(),
        line,
        keep_description,
    };
    let mut text = serde_json::to_vec(&change).expect("search changes serialize");
    text.push(b'\n');
    // Not synced here: the crate is in the journal until the next checkpoint syncs this
    // file, and a crash before it rebuilds what is torn (see `Registry::recover`).
    let size = (|| -> io::Result<u64> {
        use std::os::unix::fs::FileExt;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&file)?;
        let before = f.metadata()?.len();
        let mut line = Vec::with_capacity(text.len() + 1);
        if before > 0 {
            // A line a crash tore is ended first: the change after it stays whole.
            let mut last = [0u8];
            f.read_exact_at(&mut last, before - 1)?;
            if last[0] != b'\n' {
                line.push(b'\n');
            }
        }
        line.extend_from_slice(&text);
        if let Err(e) = f.write_all(&line) {
            // A part written (a full disk) is taken back: no torn change is left behind.
            let _ = f.set_len(before);
            return Err(e);
        }
        Ok(before + line.len() as u64)
    })()
    .context(|| format!("updating {}", file.display()))?;
    // The change is recorded: folding it in is housekeeping, and a failure (a full disk)
    // leaves the changes readable where they are until the next checkpoint tries again.
    if size > MAX_TAIL {
        if let Err(e) = compact(root) {
            error!("warning: folding the search changes into search.jsonl: {e}");
        }
    }
    Ok(())
}

/// Folds the changes into the sorted file, then removes them (lock held). Unsynced, like
/// the appends: the checkpoint that calls it syncs the file system after.
pub fn compact(root: &Path) -> Result<()> {
    let tail_file = tail_path(root);
    if !tail_file.exists() {
        return Ok(());
    }
    let tail = read_tail(root, &mut true)?;
    let file = path(root);
    let tmp = temp_path(root, "search");
    let written = (|| -> io::Result<()> {
        let mut out = io::BufWriter::new(File::create(&tmp)?);
        let mut base = File::open(&file).ok();
        let mut failed = Ok(());
        merged(base.as_mut(), &tail, |l| {
            if failed.is_ok() {
                failed = serde_json::to_writer(&mut out, &l)
                    .map_err(io::Error::from)
                    .and_then(|()| out.write_all(b"\n"));
            }
        })?;
        failed?;
        out.into_inner().map_err(|e| e.into_error())?;
        std::fs::rename(&tmp, &file)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.context(|| format!("updating {}", file.display()))?;
    remove_tail(root)
}

/// Finds crates whose name or description holds every word of `query`, ignoring case and
/// `-`/`_`. Exact name first, then names starting with the query, then the rest, each by
/// name. `per_page` hits at most.
pub fn search(root: &Path, query: &str, per_page: usize) -> Result<Found> {
    search_page(root, query, 0, per_page)
}

/// Where a matching line ranks: the order of hits is exact name, then prefix, then the rest.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bucket {
    Exact,
    Prefix,
    Rest,
}

/// Like [`search`], skipping the first `skip` hits of that order (a later page). Memory
/// holds one page whatever `skip` is: a first pass counts the hits of each bucket, which
/// tells where every hit lands, and a second pass over the same open sorted file and the
/// same changes read once (a compaction renames a new file into place, so both passes read
/// one version) keeps the page's.
pub fn search_page(root: &Path, query: &str, skip: usize, per_page: usize) -> Result<Found> {
    let q = canonical(query.trim());
    let words: Vec<&str> = q.split_whitespace().collect();
    let file = path(root);
    let tail = read_tail(root, &mut true)?;
    let mut base = open_base(root)?;
    let mut counts = [0usize; 3];
    each_hit(base.as_mut(), &tail, &q, &words, |bucket, _| {
        counts[bucket as usize] += 1
    })
    .context(|| format!("reading {}", file.display()))?;
    let total = counts.iter().sum();
    let end = skip.saturating_add(per_page).min(total);
    if skip >= end {
        return Ok(Found {
            hits: Vec::new(),
            total,
        });
    }
    // A hit's place: its bucket's start plus its rank within the bucket.
    let starts = [0, counts[0], counts[0] + counts[1]];
    let mut seen = [0usize; 3];
    let mut page: Vec<(usize, SearchLine)> = Vec::with_capacity(end - skip);
    if let Some(f) = base.as_mut() {
        f.seek(SeekFrom::Start(0))
            .context(|| format!("reading {}", file.display()))?;
    }
    each_hit(base.as_mut(), &tail, &q, &words, |bucket, line| {
        let b = bucket as usize;
        let at = starts[b] + seen[b];
        seen[b] += 1;
        if (skip..end).contains(&at) {
            page.push((at, line));
        }
    })
    .context(|| format!("reading {}", file.display()))?;
    page.sort_by_key(|(at, _)| *at);
    Ok(Found {
        hits: page.into_iter().map(|(_, line)| line).collect(),
        total,
    })
}

/// Calls `hit` with every crate's line that matches (the sorted file from where `base`
/// stands, merged with the changes), with its bucket.
fn each_hit(
    base: Option<&mut File>,
    tail: &Tail,
    q: &str,
    words: &[&str],
    mut hit: impl FnMut(Bucket, SearchLine),
) -> io::Result<()> {
    merged(base, tail, |line| {
        if line.max_version.is_empty() {
            return; // every version yanked
        }
        let name = canonical(&line.name);
        let desc = line
            .description
            .as_deref()
            .map(canonical)
            .unwrap_or_default();
        let matches = words.iter().all(|w| {
            name.contains(w) || desc.contains(w) || line.keywords.iter().any(|k| canonical(k) == *w)
        });
        if !matches {
            return;
        }
        let bucket = if name == q {
            Bucket::Exact
        } else if !q.is_empty() && name.starts_with(q) {
            Bucket::Prefix
        } else {
            Bucket::Rest
        };
        hit(bucket, line);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, desc: &str) -> Option<SearchLine> {
        Some(SearchLine {
            name: name.into(),
            max_version: "1.0.0".into(),
            description: Some(desc.into()),
            keywords: vec!["kw".into()],
        })
    }

    #[test]
    fn ranking_and_normalization() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (n, d) in [
            ("serde_json", "JSON for serde"),
            ("serde", "Serialization framework"),
            ("a", "the letter a"),
            ("ab", "two letters"),
            ("my-serde-ext", "more"),
            ("json", "uses serde-json"),
        ] {
            update(root, n, line(n, d)).unwrap();
        }
        let names = |f: &Found| f.hits.iter().map(|h| h.name.clone()).collect::<Vec<_>>();
        let f = search(root, "Serde", 10).unwrap();
        assert_eq!(names(&f), ["serde", "serde_json", "json", "my-serde-ext"]);
        assert_eq!(f.total, 4);
        let f = search(root, "serde-json", 10).unwrap();
        assert_eq!(names(&f), ["serde_json", "json"]);
        let f = search(root, "a", 1).unwrap();
        assert_eq!(names(&f), ["a"]);
        assert!(f.total > 1);
        assert_eq!(names(&search(root, "ab", 10).unwrap())[0], "ab");
        assert_eq!(search(root, "kw", 100).unwrap().total, 6);
        // Pages continue the same order.
        let all = names(&search(root, "kw", 100).unwrap());
        let second = search_page(root, "kw", 2, 2).unwrap();
        assert_eq!(names(&second), all[2..4]);
        assert_eq!(second.total, 6);
        assert!(search_page(root, "kw", 6, 2).unwrap().hits.is_empty());
        // Every window of every order is the same slice of the whole list, across buckets.
        for q in ["kw", "serde", "a", "json"] {
            let all = names(&search(root, q, 100).unwrap());
            for skip in 0..=all.len() + 1 {
                for per_page in 1..4 {
                    let page = search_page(root, q, skip, per_page).unwrap();
                    let want: Vec<String> = all.iter().skip(skip).take(per_page).cloned().collect();
                    assert_eq!(names(&page), want, "{q} skip {skip} per page {per_page}");
                    assert_eq!(page.total, all.len());
                }
            }
        }
        assert_eq!(
            search_page(root, "kw", usize::MAX, usize::MAX)
                .unwrap()
                .total,
            6
        );
        // Removal and replacement keep the file sorted and the description.
        update(root, "serde", None).unwrap();
        assert_eq!(names(&search(root, "serde", 10).unwrap())[0], "serde_json");
        update(
            root,
            "serde-json",
            Some(SearchLine {
                name: "serde_json".into(),
                max_version: "2.0.0".into(),
                description: None,
                keywords: vec![],
            }),
        )
        .unwrap();
        let f = search(root, "serde_json", 10).unwrap();
        assert_eq!(f.hits[0].max_version, "2.0.0");
        assert_eq!(f.hits[0].description.as_deref(), Some("JSON for serde"));
        // Folded into the sorted file, the same lines read back, sorted, with no changes left.
        let before = all_lines(root);
        compact(root).unwrap();
        assert!(!tail_path(root).exists());
        assert_eq!(all_lines(root), before);
        let text = std::fs::read_to_string(path(root)).unwrap();
        let keys: Vec<String> = text
            .lines()
            .map(|l| canonical(&serde_json::from_str::<SearchLine>(l).unwrap().name))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    fn all_lines(root: &Path) -> Vec<SearchLine> {
        let mut v = Vec::new();
        for_each_line(root, |l| v.push(l)).unwrap();
        v
    }

    fn names_of(v: &[SearchLine]) -> Vec<&str> {
        v.iter().map(|l| l.name.as_str()).collect()
    }

    #[test]
    fn changes_are_appended_and_read_over_the_sorted_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for n in ["b", "d", "f"] {
            update(root, n, line(n, &format!("about {n}"))).unwrap();
        }
        compact(root).unwrap();
        let sorted = std::fs::read(path(root)).unwrap();
        // A write appends one line and leaves the sorted file as it was.
        update(root, "a", line("a", "new first")).unwrap();
        update(root, "e", line("e", "new middle")).unwrap();
        update(root, "g", line("g", "new last")).unwrap();
        update(root, "d", None).unwrap();
        let bumped = SearchLine {
            name: "F".into(),
            max_version: "2.0.0".into(),
            description: None,
            keywords: vec![],
        };
        update(root, "f", Some(bumped.clone())).unwrap();
        assert_eq!(std::fs::read(path(root)).unwrap(), sorted);
        assert_eq!(
            std::fs::read_to_string(tail_path(root))
                .unwrap()
                .lines()
                .count(),
            5
        );
        let seen = all_lines(root);
        assert_eq!(names_of(&seen), ["a", "b", "e", "F", "g"]);
        // The new version kept the sorted file's description; find agrees with the stream.
        let f = find(root, "f").unwrap().unwrap();
        assert_eq!(
            (f.max_version.as_str(), f.description.as_deref()),
            ("2.0.0", Some("about f"))
        );
        assert_eq!(seen[3], f);
        assert_eq!(find(root, "d").unwrap(), None);
        assert_eq!(
            find(root, "a").unwrap().unwrap().description.as_deref(),
            Some("new first")
        );
        assert_eq!(search(root, "new", 10).unwrap().total, 3);
        assert_eq!(search(root, "about", 10).unwrap().total, 2);
        // A replacement drops the description; a crate gone and back is its new line only.
        replace(root, "f", bumped.clone()).unwrap();
        assert_eq!(find(root, "f").unwrap().unwrap().description, None);
        update(
            root,
            "d",
            Some(SearchLine {
                description: None,
                ..line("d", "").unwrap()
            }),
        )
        .unwrap();
        assert_eq!(find(root, "d").unwrap().unwrap().description, None);
        // Changes to one crate fold in order: a description given once stays through later
        // changes without one.
        update(root, "h", line("h", "first")).unwrap();
        update(
            root,
            "h",
            Some(SearchLine {
                name: "h".into(),
                ..bumped.clone()
            }),
        )
        .unwrap();
        assert_eq!(
            find(root, "h").unwrap().unwrap().description.as_deref(),
            Some("first")
        );
        let seen = all_lines(root);
        compact(root).unwrap();
        assert_eq!(all_lines(root), seen);
        assert!(is_sound(root).unwrap());
    }

    #[test]
    fn a_torn_change_is_unsound_and_the_next_change_stays_whole() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        update(root, "a", line("a", "x")).unwrap();
        // A power cut tore the last appended line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(tail_path(root))
            .unwrap();
        f.write_all(br#"{"name":"b","li"#).unwrap();
        assert!(!is_sound(root).unwrap());
        assert_eq!(names_of(&all_lines(root)), ["a"]);
        update(root, "c", line("c", "y")).unwrap();
        assert_eq!(names_of(&all_lines(root)), ["a", "c"]);
    }

    #[test]
    fn changes_past_the_cap_are_folded_in_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let long = "d".repeat(1000);
        let n = (MAX_TAIL / 1000) as usize + 2;
        for i in 0..n {
            update(root, &format!("c{i:04}"), line(&format!("c{i:04}"), &long)).unwrap();
            let tail = std::fs::metadata(tail_path(root)).map_or(0, |m| m.len());
            assert!(tail <= MAX_TAIL + 1100, "{tail}");
        }
        assert!(std::fs::metadata(path(root)).unwrap().len() > MAX_TAIL / 2);
        assert_eq!(all_lines(root).len(), n);
    }
}
