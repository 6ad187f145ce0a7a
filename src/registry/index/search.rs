//! Search: one line per crate in `search.jsonl` at the registry root, sorted by canonical
//! name, holding what `cargo search` shows (name, newest non-yanked version, description)
//! and keywords. Every write path rewrites the crate's line under the registry lock; a
//! search streams the file and keeps only one page of hits, never the whole index (nor the
//! hits of the pages before the one asked for).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::IndexEntry;
use crate::registry::names::{canonical, Version};
use crate::registry::store::{temp_path, write_atomic};
use crate::registry::{Context, Result};

pub const SEARCH_FILE: &str = "search.jsonl";

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

/// The newest version that is not yanked.
pub fn max_version(entries: &[IndexEntry]) -> Option<String> {
    entries
        .iter()
        .filter(|e| !e.yanked)
        .filter_map(|e| Version::parse(&e.vers).ok().map(|v| (v.0, e.vers.clone())))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, s)| s)
}

/// Whether `search.jsonl` can be read as it is written: UTF-8, one valid line per crate,
/// sorted by canonical name. (A torn or hand-damaged file is rebuilt from the index.)
pub fn is_sound(root: &Path) -> Result<bool> {
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

/// Replaces `search.jsonl` with `lines` (sorted here by canonical name).
pub fn write_all(root: &Path, mut lines: Vec<SearchLine>) -> Result<()> {
    lines.sort_by_cached_key(|l| canonical(&l.name));
    let file = path(root);
    let mut text = Vec::new();
    for l in &lines {
        serde_json::to_writer(&mut text, l).expect("search lines serialize");
        text.push(b'\n');
    }
    write_atomic(&file, &text)
}

/// The line for the crate `name` (canonically), if any.
pub fn find(root: &Path, name: &str) -> Result<Option<SearchLine>> {
    let file = path(root);
    let key = canonical(name);
    let f = match File::open(&file) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context(|| format!("reading {}", file.display())),
    };
    for text in BufReader::new(f).split(b'\n') {
        let text = text.context(|| format!("reading {}", file.display()))?;
        if let Ok(line) = serde_json::from_slice::<SearchLine>(&text) {
            if canonical(&line.name) == key {
                return Ok(Some(line));
            }
        }
    }
    Ok(None)
}

/// Calls `f` with every readable line of `search.jsonl`, streaming (damaged lines are
/// skipped, as search does).
pub fn for_each_line(root: &Path, mut f: impl FnMut(SearchLine)) -> Result<()> {
    let file = path(root);
    let reader = match File::open(&file) {
        Ok(r) => BufReader::new(r),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).context(|| format!("reading {}", file.display())),
    };
    for text in reader.split(b'\n') {
        let text = text.context(|| format!("reading {}", file.display()))?;
        if let Ok(line) = serde_json::from_slice::<SearchLine>(&text) {
            f(line);
        }
    }
    Ok(())
}

/// Rewrites the line for the crate `name` (canonically): removed when `line` is None.
/// A new line without a description keeps the old line's description and keywords.
/// Must be called with the registry lock held.
pub fn update(root: &Path, name: &str, line: Option<SearchLine>) -> Result<()> {
    rewrite(root, name, line, true)
}

/// Like [`update`], but the new line replaces the old one whole.
pub fn replace(root: &Path, name: &str, line: SearchLine) -> Result<()> {
    rewrite(root, name, Some(line), false)
}

fn rewrite(
    root: &Path,
    name: &str,
    line: Option<SearchLine>,
    keep_description: bool,
) -> Result<()> {
    let file = path(root);
    let key = canonical(name);
    let tmp = temp_path(root, "search");
    let result = (|| -> io::Result<()> {
        let mut out = io::BufWriter::new(File::create(&tmp)?);
        let mut pending = line;
        let write = |out: &mut io::BufWriter<File>, l: &SearchLine| -> io::Result<()> {
            serde_json::to_writer(&mut *out, l)?;
            out.write_all(b"\n")
        };
        if let Ok(f) = File::open(&file) {
            // Line by line as bytes: a damaged line is dropped, not fatal.
            for text in BufReader::new(f).split(b'\n') {
                let text = text?;
                let Ok(old) = serde_json::from_slice::<SearchLine>(&text) else {
                    continue;
                };
                let old_key = canonical(&old.name);
                if old_key == key {
                    if let Some(mut new) = pending.take() {
                        if keep_description && new.description.is_none() {
                            new.description = old.description;
                            new.keywords = old.keywords;
                        }
                        write(&mut out, &new)?;
                    }
                    continue;
                }
                if old_key > key {
                    if let Some(new) = pending.take() {
                        write(&mut out, &new)?;
                    }
                }
                write(&mut out, &old)?;
            }
        }
        if let Some(new) = pending.take() {
            write(&mut out, &new)?;
        }
        // Not synced here: the crate is in the journal until the next checkpoint syncs this
        // file, and a crash before it rebuilds what is torn (see `Registry::recover`).
        out.into_inner().map_err(|e| e.into_error())?;
        std::fs::rename(&tmp, &file)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.context(|| format!("updating {}", file.display()))
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
/// tells where every hit lands, and a second pass over the same open file (a rewrite
/// renames a new file into place, so both passes read one version) keeps the page's.
pub fn search_page(root: &Path, query: &str, skip: usize, per_page: usize) -> Result<Found> {
    let q = canonical(query.trim());
    let words: Vec<&str> = q.split_whitespace().collect();
    let file = path(root);
    let mut f = match File::open(&file) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Found {
                hits: Vec::new(),
                total: 0,
            })
        }
        Err(e) => return Err(e).context(|| format!("reading {}", file.display())),
    };
    let mut counts = [0usize; 3];
    each_hit(&mut f, &q, &words, |bucket, _| counts[bucket as usize] += 1)
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
    f.seek(SeekFrom::Start(0))
        .context(|| format!("reading {}", file.display()))?;
    each_hit(&mut f, &q, &words, |bucket, line| {
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

/// Calls `hit` with every line of `f` that matches, from where `f` stands, with its bucket.
fn each_hit(
    f: &mut File,
    q: &str,
    words: &[&str],
    mut hit: impl FnMut(Bucket, SearchLine),
) -> io::Result<()> {
    for text in BufReader::new(f).split(b'\n') {
        let Ok(line) = serde_json::from_slice::<SearchLine>(&text?) else {
            continue;
        };
        if line.max_version.is_empty() {
            continue; // every version yanked
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
            continue;
        }
        let bucket = if name == q {
            Bucket::Exact
        } else if !q.is_empty() && name.starts_with(q) {
            Bucket::Prefix
        } else {
            Bucket::Rest
        };
        hit(bucket, line);
    }
    Ok(())
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
        let text = std::fs::read_to_string(path(root)).unwrap();
        let keys: Vec<String> = text
            .lines()
            .map(|l| canonical(&serde_json::from_str::<SearchLine>(l).unwrap().name))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }
}
