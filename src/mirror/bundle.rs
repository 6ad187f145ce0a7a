//! `mirror export FILE` and `mirror import FILE`: the cache as one tar file, for machines
//! that never reach the upstream (air-gapped builds).
//!
//! A bundle is a plain tar (crate files are gzipped already): `manifest.json` first, then
//! `index/{path}` (index files as the upstream sent them, and its `config.json`) and
//! `crates/{name}/{name}-{vers}.crate`. The manifest lists every file, and every crate
//! file's `cksum`. An import stages every file in `mirror/tmp/` first and checks them all:
//! each crate file's SHA-256 must be the one the manifest and its index line in the
//! bundle name, every path must be a mirror path, nothing may be missing or extra. One
//! failure refuses the bundle whole: nothing of it reaches the cache.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::offline::{cached_cksum, sha256_of};
use super::{is_index_rel, parse_crate_rel, walk_files, Mirror};

const FORMAT: &str = "palletizer-mirror-bundle";
const MANIFEST: &str = "manifest.json";
/// Largest manifest or index file read from a bundle.
const MAX_SMALL: u64 = 64 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    upstream: String,
    /// Index files, relative to `index/`.
    index: Vec<String>,
    /// Crate files, relative to `crates/`, with their `cksum`.
    crates: BTreeMap<String, String>,
}

/// What an export or an import carried.
#[derive(Debug, Default)]
pub struct Carried {
    pub index_files: usize,
    pub crate_files: usize,
    pub bytes: u64,
    /// Cached files left out of an export (no index line to vouch for them).
    pub skipped: Vec<String>,
}

fn is_index_file(rel: &str) -> bool {
    rel == "config.json" || is_index_rel(rel)
}

/// Writes the cache to `out` (through a temp file renamed into place).
pub fn export(mirror: &Mirror, out: &Path) -> Result<Carried, String> {
    let l = mirror.layout();
    let mut carried = Carried::default();
    let index: Vec<String> = walk_files(&l.index_dir())
        .into_iter()
        .map(|(rel, _)| rel)
        .filter(|rel| is_index_file(rel) && l.index_file(rel).is_file())
        .collect();
    let mut crates = BTreeMap::new();
    for (rel, _) in walk_files(&l.crates_dir()) {
        let sum = parse_crate_rel(&rel).and_then(|(n, v)| cached_cksum(mirror, &n, &v).ok());
        match sum {
            Some(sum) => {
                crates.insert(rel, sum);
            }
            None => carried.skipped.push(rel),
        }
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        version: 1,
        upstream: mirror.settings().upstream.clone(),
        index,
        crates,
    };
    let tmp = out.with_extension("partial");
    let result = write_bundle(mirror, &manifest, &tmp, &mut carried);
    match result.and_then(|_| fs::rename(&tmp, out)) {
        Ok(()) => Ok(carried),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(format!("writing {}: {e}", out.display()))
        }
    }
}

fn write_bundle(mirror: &Mirror, m: &Manifest, tmp: &Path, c: &mut Carried) -> io::Result<()> {
    let l = mirror.layout();
    let mut tar = tar::Builder::new(BufWriter::new(File::create(tmp)?));
    let json = serde_json::to_vec_pretty(m).expect("manifest serializes");
    append(&mut tar, MANIFEST, &mut &json[..], json.len() as u64)?;
    for rel in &m.index {
        let mut f = File::open(l.index_file(rel))?;
        let len = f.metadata()?.len();
        append(&mut tar, &format!("index/{rel}"), &mut f, len)?;
        c.index_files += 1;
        c.bytes += len;
    }
    for rel in m.crates.keys() {
        let mut f = File::open(l.crate_file(rel))?;
        let len = f.metadata()?.len();
        append(&mut tar, &format!("crates/{rel}"), &mut f, len)?;
        c.crate_files += 1;
        c.bytes += len;
    }
    let mut w = tar.into_inner()?;
    w.flush()?;
    w.get_ref().sync_all()
}

fn append(
    tar: &mut tar::Builder<BufWriter<File>>,
    path: &str,
    data: &mut impl Read,
    len: u64,
) -> io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(len);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mtime(0);
    tar.append_data(&mut h, path, data)
}

/// A bundle's files staged in the mirror's `tmp/`, removed on drop unless moved in.
struct Staged {
    dir: PathBuf,
    /// Index files, and crate files with the SHA-256 they hashed to.
    index: Vec<String>,
    crates: BTreeMap<String, String>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Reads the bundle at `path` into the cache, or refuses it whole (the reasons, one each).
pub fn import(mirror: &Mirror, path: &Path) -> Result<Carried, Vec<String>> {
    let one = |e: String| vec![e];
    let file = File::open(path).map_err(|e| one(format!("{}: {e}", path.display())))?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let mut entries = archive
        .entries()
        .map_err(|e| one(format!("{}: not a bundle: {e}", path.display())))?;
    let manifest = read_manifest(&mut entries).map_err(one)?;
    let staged = stage(mirror, entries).map_err(one)?;
    let problems = verify(&manifest, &staged);
    if !problems.is_empty() {
        return Err(problems);
    }
    install(mirror, &staged).map_err(|e| one(format!("moving the bundle's files in: {e}")))
}

fn read_manifest<R: Read>(entries: &mut tar::Entries<R>) -> Result<Manifest, String> {
    let mut first = entries
        .next()
        .ok_or("the bundle is empty")?
        .map_err(|e| format!("reading the bundle: {e}"))?;
    let path = first.path().map_err(|e| e.to_string())?.into_owned();
    if path != Path::new(MANIFEST) || first.size() > MAX_SMALL {
        return Err(format!("the bundle does not start with its {MANIFEST}"));
    }
    let mut json = Vec::new();
    first.read_to_end(&mut json).map_err(|e| e.to_string())?;
    let m: Manifest =
        serde_json::from_slice(&json).map_err(|e| format!("the bundle's {MANIFEST}: {e}"))?;
    if m.format != FORMAT || m.version != 1 {
        return Err(format!("not a mirror bundle of version 1 ({})", m.format));
    }
    Ok(m)
}

/// Every entry after the manifest, written below a staging directory.
fn stage<R: Read>(mirror: &Mirror, entries: tar::Entries<R>) -> Result<Staged, String> {
    let tmp = mirror.layout().root.join("tmp");
    fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    let dir = crate::registry::temp_path(&tmp, "import");
    fs::create_dir(&dir).map_err(|e| e.to_string())?;
    let mut staged = Staged {
        dir,
        index: Vec::new(),
        crates: BTreeMap::new(),
    };
    let max_crate = mirror.settings().max_crate_size;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("reading the bundle: {e}"))?;
        let name = entry
            .path()
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .into_owned();
        if !entry.header().entry_type().is_file() {
            return Err(format!("{name}: not a regular file"));
        }
        let (kind, rel) = name.split_once('/').unwrap_or(("", ""));
        let ok = match kind {
            "index" => is_index_file(rel) && entry.size() <= MAX_SMALL,
            "crates" => parse_crate_rel(rel).is_some() && entry.size() <= max_crate,
            _ => false,
        };
        // The path checks above admit no `..`, no empty segment, nothing absolute.
        if !ok {
            return Err(format!("{name}: not a file a mirror bundle holds"));
        }
        let dest = staged.dir.join(&name);
        fs::create_dir_all(dest.parent().expect("staged paths have a parent"))
            .map_err(|e| e.to_string())?;
        let mut out = File::create(&dest).map_err(|e| format!("{name}: {e}"))?;
        let sum = sha256_of(Tee(&mut entry, &mut out)).map_err(|e| format!("{name}: {e}"))?;
        match kind {
            "index" => staged.index.push(rel.to_owned()),
            _ => {
                staged.crates.insert(rel.to_owned(), sum);
            }
        }
    }
    Ok(staged)
}

/// A reader that writes what it reads.
struct Tee<'a, R, W>(&'a mut R, &'a mut W);

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.write_all(&buf[..n])?;
        Ok(n)
    }
}

fn verify(m: &Manifest, s: &Staged) -> Vec<String> {
    let mut problems = Vec::new();
    let mut listed: Vec<&String> = m.index.iter().collect();
    let mut got: Vec<&String> = s.index.iter().collect();
    listed.sort();
    got.sort();
    if listed != got {
        problems.push("the bundle's index files are not those its manifest lists".into());
    }
    if m.crates.keys().ne(s.crates.keys()) {
        problems.push("the bundle's crate files are not those its manifest lists".into());
    }
    for (rel, sum) in &s.crates {
        let Some((name, vers)) = parse_crate_rel(rel) else {
            continue;
        };
        if m.crates.get(rel) != Some(sum) {
            problems.push(format!("{rel}: checksum {sum} is not the manifest's"));
            continue;
        }
        let index = s
            .dir
            .join("index")
            .join(crate::registry::index_path_of(&name));
        let line = fs::read(&index)
            .ok()
            .and_then(|raw| super::line_of(&raw, &name, &vers));
        match line {
            Some(l) if l.cksum == *sum => {}
            Some(l) => problems.push(format!(
                "{rel}: checksum {sum}, but its index line says {}",
                l.cksum
            )),
            None => problems.push(format!("{rel}: no index line in the bundle vouches for it")),
        }
    }
    problems
}

fn install(mirror: &Mirror, s: &Staged) -> io::Result<Carried> {
    let l = mirror.layout();
    let mut c = Carried::default();
    for rel in &s.index {
        let from = s.dir.join("index").join(rel);
        c.bytes += fs::metadata(&from)?.len();
        l.commit(&from, &l.index_file(rel))?;
        // Confirmed by nobody yet: an online mirror asks its upstream at the first use.
        l.write_meta(rel, &super::cache::Meta::default())?;
        c.index_files += 1;
    }
    for rel in s.crates.keys() {
        let from = s.dir.join("crates").join(rel);
        let dest = l.crate_file(rel);
        if !dest.exists() {
            c.bytes += fs::metadata(&from)?.len();
            l.commit(&from, &dest)?;
        }
        c.crate_files += 1;
    }
    Ok(c)
}
