//! A commit's objects built and written by hand: the changed index files' blobs, the trees
//! on their paths and the commit, written as one pack with its index (two files, not one
//! per object), and the branch's ref, with no syncs (see [`super::deferred`] for what makes
//! them durable).
//!
//! libgit2 wrote the same objects with about 180 system calls a publish: for each object it
//! looked in every pack first (rescanning the pack folder when the object was not there,
//! which a new object never is), read each tree entry's object back to check it exists,
//! staged through git's index file (reading `.gitattributes` three times) and re-read HEAD
//! and the ref a dozen times. Here a commit of one file three folders deep is five objects
//! of four system calls each and the ref's four (now one pack of two files), and the trees
//! it starts from are the ones the last commit wrote, kept in memory.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use git2::{ObjectType, Oid, Repository};

/// A git object to write: its id, kind and content.
pub(super) struct Object {
    pub(super) oid: Oid,
    pub(super) kind: ObjectType,
    pub(super) data: Vec<u8>,
}

impl Object {
    fn new(kind: ObjectType, data: Vec<u8>) -> Result<Object, git2::Error> {
        Ok(Object {
            oid: Oid::hash_object(kind, &data)?,
            kind,
            data,
        })
    }
}

/// One change to a tree: the file at `path` (slash-separated) becomes `blob`, or goes.
pub(super) struct Change<'a> {
    pub(super) path: &'a str,
    pub(super) blob: Option<Oid>,
}

/// A tree entry as git stores it.
#[derive(Clone)]
struct Entry {
    mode: Vec<u8>,
    name: Vec<u8>,
    oid: Oid,
}

const TREE_MODE: &[u8] = b"40000";
const FILE_MODE: &[u8] = b"100644";

impl Entry {
    fn is_tree(&self) -> bool {
        self.mode == TREE_MODE
    }

    /// Git's order of a tree's entries: by name, a tree's name as if it ended in `/`.
    fn sort_key(&self) -> impl Iterator<Item = u8> + '_ {
        let slash: &[u8] = if self.is_tree() { b"/" } else { b"" };
        self.name.iter().chain(slash).copied()
    }
}

fn corrupt(what: &str) -> git2::Error {
    git2::Error::new(
        git2::ErrorCode::Invalid,
        git2::ErrorClass::Object,
        format!("a tree of the index does not parse: {what}"),
    )
}

fn parse_tree(mut data: &[u8]) -> Result<Vec<Entry>, git2::Error> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| corrupt("no mode"))?;
        let nul = data
            .iter()
            .position(|&b| b == 0)
            .filter(|&n| n > space)
            .ok_or_else(|| corrupt("no name"))?;
        let id = data
            .get(nul + 1..nul + 21)
            .ok_or_else(|| corrupt("no id"))?;
        out.push(Entry {
            mode: data[..space].to_vec(),
            name: data[space + 1..nul].to_vec(),
            oid: Oid::from_bytes(id)?,
        });
        data = &data[nul + 21..];
    }
    Ok(out)
}

fn tree_bytes(entries: &mut [Entry]) -> Vec<u8> {
    entries.sort_by(|a, b| a.sort_key().cmp(b.sort_key()));
    let mut out = Vec::with_capacity(entries.len() * 40);
    for e in entries.iter() {
        out.extend_from_slice(&e.mode);
        out.push(b' ');
        out.extend_from_slice(&e.name);
        out.push(0);
        out.extend_from_slice(e.oid.as_bytes());
    }
    out
}

/// The trees a writer read or wrote last, by id (content-addressed, so never stale): the
/// next commit starts from them. Replaced by each commit's own, so it holds one path's trees.
#[derive(Default)]
pub(super) struct Trees(HashMap<Oid, Vec<u8>>);

impl Trees {
    fn read(&self, repo: &Repository, oid: Oid) -> Result<Vec<Entry>, git2::Error> {
        match self.0.get(&oid) {
            Some(data) => parse_tree(data),
            None => {
                let odb = repo.odb()?;
                let object = odb.read(oid)?;
                if object.kind() != ObjectType::Tree {
                    return Err(corrupt("an entry named a tree is not one"));
                }
                parse_tree(object.data())
            }
        }
    }

    /// The tree `root` (none: an empty one) with `changes` made: the new trees on the
    /// changed paths go to `out`, and the new root's id is returned (none: it is empty,
    /// which git never stores but for the root).
    pub(super) fn edit(
        &mut self,
        repo: &Repository,
        root: Option<Oid>,
        changes: &[Change<'_>],
        out: &mut Vec<Object>,
    ) -> Result<Option<Oid>, git2::Error> {
        let split: Vec<(&str, Option<Oid>)> = changes.iter().map(|c| (c.path, c.blob)).collect();
        let root = self.edit_tree(repo, root, &split, out)?;
        self.0 = out
            .iter()
            .filter(|o| o.kind == ObjectType::Tree)
            .map(|o| (o.oid, o.data.clone()))
            .collect();
        Ok(root)
    }

    fn edit_tree(
        &self,
        repo: &Repository,
        tree: Option<Oid>,
        changes: &[(&str, Option<Oid>)],
        out: &mut Vec<Object>,
    ) -> Result<Option<Oid>, git2::Error> {
        let mut entries = match tree {
            Some(oid) => self.read(repo, oid)?,
            None => Vec::new(),
        };
        let mut done = vec![false; changes.len()];
        for i in 0..changes.len() {
            if done[i] {
                continue;
            }
            let (first, rest) = match changes[i].0.split_once('/') {
                Some((first, rest)) => (first, Some(rest)),
                None => (changes[i].0, None),
            };
            if first.is_empty() || first == "." || first == ".." || first == ".git" {
                return Err(corrupt("a path to commit is not a plain relative path"));
            }
            let at = entries.iter().position(|e| e.name == first.as_bytes());
            let new = match rest {
                None => {
                    done[i] = true;
                    changes[i].1.map(|oid| (FILE_MODE, oid))
                }
                Some(_) => {
                    // Every change under this folder, at once.
                    let mut below = Vec::new();
                    for (j, c) in changes.iter().enumerate().skip(i) {
                        if let Some(r) = c.0.strip_prefix(first).and_then(|r| r.strip_prefix('/')) {
                            below.push((r, c.1));
                            done[j] = true;
                        }
                    }
                    let sub = at
                        .map(|n| &entries[n])
                        .filter(|e| e.is_tree())
                        .map(|e| e.oid);
                    self.edit_tree(repo, sub, &below, out)?
                        .map(|oid| (TREE_MODE, oid))
                }
            };
            match (at, new) {
                (Some(n), Some((mode, oid))) => {
                    entries[n].mode = mode.to_vec();
                    entries[n].oid = oid;
                }
                (Some(n), None) => {
                    entries.remove(n);
                }
                (None, Some((mode, oid))) => entries.push(Entry {
                    mode: mode.to_vec(),
                    name: first.as_bytes().to_vec(),
                    oid,
                }),
                (None, None) => {}
            }
        }
        if entries.is_empty() {
            return Ok(None);
        }
        let object = Object::new(ObjectType::Tree, tree_bytes(&mut entries))?;
        let oid = object.oid;
        if Some(oid) != tree {
            out.push(object);
        }
        Ok(Some(oid))
    }
}

/// A blob of `data`.
pub(super) fn blob(data: Vec<u8>) -> Result<Object, git2::Error> {
    Object::new(ObjectType::Blob, data)
}

/// The empty tree, added to `out`: the root of an index with no files.
pub(super) fn empty_tree(out: &mut Vec<Object>) -> Result<Oid, git2::Error> {
    let tree = Object::new(ObjectType::Tree, Vec::new())?;
    let oid = tree.oid;
    out.push(tree);
    Ok(oid)
}

/// A commit of `tree` on `parent`, by the registry, now.
pub(super) fn commit(tree: Oid, parent: Option<Oid>, message: &str) -> Result<Object, git2::Error> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let who = format!("palletizer <palletizer@localhost> {secs} +0000");
    let mut text = format!("tree {tree}\n");
    if let Some(p) = parent {
        text.push_str(&format!("parent {p}\n"));
    }
    text.push_str(&format!("author {who}\ncommitter {who}\n\n{message}"));
    Object::new(ObjectType::Commit, text.into_bytes())
}

/// Writes `object` as a loose file under `objects` (the `.git/objects` folder): compressed
/// into a temp file named as libgit2 names its own (so recovery sweeps a torn one), then
/// renamed into its fan-out folder, made when missing. Not synced.
#[cfg(test)]
pub(super) fn write_loose(objects: &Path, object: &Object) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut z = flate2::write::ZlibEncoder::new(
        Vec::with_capacity(object.data.len() / 2 + 64),
        flate2::Compression::fast(),
    );
    write!(z, "{} {}\0", object.kind, object.data.len())?;
    z.write_all(&object.data)?;
    let bytes = z.finish()?;
    let hex = object.oid.to_string();
    let (fan, rest) = hex.split_at(2);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = objects.join(format!("tmp_object_palletizer_{}_{n}", std::process::id()));
    let result = (|| {
        let mut f = File::options()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        drop(f);
        let dest = objects.join(fan).join(rest);
        match fs::rename(&tmp, &dest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match fs::create_dir(objects.join(fan)) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                    _ => {}
                }
                fs::rename(&tmp, &dest)
            }
            other => other,
        }
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes `objects` as one pack in `objects/pack`, with its index, without syncs (see
/// [`super::deferred`]): two files for a commit instead of one per object. The pack goes in
/// under its final name first; its index, which is what makes git see the pack, follows
/// through a temp file and a rename, so a reader never finds an index without its whole
/// pack. Returns the index's path.
pub(super) fn write_pack(objects: &Path, list: &[Object]) -> io::Result<PathBuf> {
    use sha1::{Digest, Sha1};
    let mut seen = std::collections::HashSet::new();
    let list: Vec<&Object> = list.iter().filter(|o| seen.insert(o.oid)).collect();
    let count = u32::try_from(list.len()).map_err(|_| io::Error::other("too many objects"))?;
    let mut pack =
        Vec::with_capacity(64 + list.iter().map(|o| o.data.len() / 2 + 32).sum::<usize>());
    pack.extend_from_slice(b"PACK");
    pack.extend_from_slice(&2u32.to_be_bytes());
    pack.extend_from_slice(&count.to_be_bytes());
    // (oid, crc32 of the entry, offset), sorted by oid for the index.
    let mut entries = Vec::with_capacity(list.len());
    for o in &list {
        let offset = u32::try_from(pack.len()).map_err(|_| io::Error::other("pack too large"))?;
        let start = pack.len();
        let kind: u8 = match o.kind {
            ObjectType::Commit => 1,
            ObjectType::Tree => 2,
            ObjectType::Blob => 3,
            _ => return Err(io::Error::other("unexpected object kind")),
        };
        // Type and size: 3 bits of type, the size's low 4 bits, then 7 bits a byte.
        let mut size = o.data.len();
        let mut byte = (kind << 4) | (size & 0x0f) as u8;
        size >>= 4;
        while size > 0 {
            pack.push(byte | 0x80);
            byte = (size & 0x7f) as u8;
            size >>= 7;
        }
        pack.push(byte);
        let mut z = flate2::write::ZlibEncoder::new(&mut pack, flate2::Compression::fast());
        z.write_all(&o.data)?;
        z.finish()?;
        let mut crc = flate2::Crc::new();
        crc.update(&pack[start..]);
        entries.push((o.oid, crc.sum(), offset));
    }
    let checksum: [u8; 20] = Sha1::digest(&pack).into();
    pack.extend_from_slice(&checksum);
    let idx = pack_index(&mut entries, &checksum);
    let dir = objects.join("pack");
    let name = format!("pack-{}", hex(&checksum));
    let pack_path = dir.join(format!("{name}.pack"));
    let idx_path = dir.join(format!("{name}.idx"));
    let write_new = |path: &Path, bytes: &[u8]| -> io::Result<()> {
        let mut f = File::options()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(path)?;
        f.write_all(bytes)
    };
    match write_new(&pack_path, &pack) {
        Ok(()) => {}
        // The same objects packed before (a commit made again): that pack is whole.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && idx_path.exists() => {
            return Ok(idx_path)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(&dir)?;
            write_new(&pack_path, &pack)?;
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Left by a write cut short: written again.
            fs::remove_file(&pack_path)?;
            write_new(&pack_path, &pack)?;
        }
        Err(e) => return Err(e),
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(
        "tmp_pack_idx_palletizer_{}_{n}",
        std::process::id()
    ));
    let placed = write_new(&tmp, &idx).and_then(|()| fs::rename(&tmp, &idx_path));
    if let Err(e) = placed {
        let _ = fs::remove_file(&tmp);
        let _ = fs::remove_file(&pack_path);
        return Err(e);
    }
    Ok(idx_path)
}

/// A pack's index (version 2) for its `entries` (oid, crc32 of the entry, offset; sorted
/// here) and the pack's `checksum`, with the index's own checksum at the end.
fn pack_index(entries: &mut [(Oid, u32, u32)], checksum: &[u8; 20]) -> Vec<u8> {
    use sha1::{Digest, Sha1};
    entries.sort_by_key(|e| e.0);
    let mut idx = Vec::with_capacity(8 + 1024 + entries.len() * 28 + 40);
    idx.extend_from_slice(b"\xfftOc");
    idx.extend_from_slice(&2u32.to_be_bytes());
    let mut fan = [0u32; 256];
    for (oid, _, _) in entries.iter() {
        fan[oid.as_bytes()[0] as usize] += 1;
    }
    let mut total = 0u32;
    for n in fan {
        total += n;
        idx.extend_from_slice(&total.to_be_bytes());
    }
    for (oid, _, _) in entries.iter() {
        idx.extend_from_slice(oid.as_bytes());
    }
    for (_, crc, _) in entries.iter() {
        idx.extend_from_slice(&crc.to_be_bytes());
    }
    for (_, _, offset) in entries.iter() {
        idx.extend_from_slice(&offset.to_be_bytes());
    }
    idx.extend_from_slice(checksum);
    let own: [u8; 20] = Sha1::digest(&idx).into();
    idx.extend_from_slice(&own);
    idx
}

/// Whether the pack of the index file `idx` reads back whole: the index's own checksum,
/// and the pack's checksum over all its bytes, both as written. A pack written without
/// syncs that a power cut tore fails this.
pub(crate) fn pack_is_whole(idx: &Path) -> bool {
    use sha1::{Digest, Sha1};
    let (Ok(i), Ok(p)) = (fs::read(idx), fs::read(idx.with_extension("pack"))) else {
        return false;
    };
    if i.len() < 8 + 1024 + 40 || p.len() < 12 + 20 {
        return false;
    }
    let (i_body, i_sum) = i.split_at(i.len() - 20);
    let (p_body, p_sum) = p.split_at(p.len() - 20);
    Sha1::digest(i_body).as_slice() == i_sum
        && Sha1::digest(p_body).as_slice() == p_sum
        && &i_body[i_body.len() - 20..] == p_sum
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes the 256 fan-out folders of the object folder `objects` that are missing. A new
/// repository has none, and each first object of a prefix would cost a publish a folder
/// creation (on a file system slow to create, as much as the object's own file); git's own
/// tools keep working with them there, empty or not. Errors are left to the writes.
pub(super) fn fan_out(objects: &Path) {
    let Ok(dir) = fs::read_dir(objects) else {
        return;
    };
    let mut have = [false; 256];
    for e in dir.flatten() {
        let name = e.file_name();
        let lower_hex = |n: &&str| {
            n.len() == 2
                && n.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if let Some(i) = name
            .to_str()
            .filter(lower_hex)
            .and_then(|n| u8::from_str_radix(n, 16).ok())
        {
            have[usize::from(i)] = true;
        }
    }
    for (i, _) in have.iter().enumerate().filter(|(_, h)| !**h) {
        let _ = fs::create_dir(objects.join(format!("{i:02x}")));
    }
}

/// Points the loose ref `name` (e.g. `refs/heads/master`) of the git folder `git` at `oid`:
/// its lock file, as libgit2 and git name it (so a stale one is swept), renamed over it.
/// Not synced. Fails when the lock file exists: another writer is at it.
pub(super) fn write_ref(git: &Path, name: &str, oid: Oid) -> io::Result<()> {
    let path = git.join(name);
    let lock = git.join(format!("{name}.lock"));
    let mut f = match File::options().write(true).create_new(true).open(&lock) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(io::Error::new(
                e.kind(),
                format!("the ref's lock file {} is taken", lock.display()),
            ))
        }
        Err(e) => return Err(e),
    };
    let result = f.write_all(format!("{oid}\n").as_bytes()).and_then(|()| {
        drop(f);
        fs::rename(&lock, &path)
    });
    if result.is_err() {
        let _ = fs::remove_file(&lock);
    }
    result
}

/// The loose ref `name` of the git folder `git`, when it is one and reads whole.
pub(super) fn read_loose_ref(git: &Path, name: &str) -> Option<Oid> {
    let text = fs::read(git.join(name)).ok()?;
    let hex = std::str::from_utf8(&text).ok()?.strip_suffix('\n')?;
    (hex.len() == 40).then(|| Oid::from_str(hex).ok()).flatten()
}

/// The tree libgit2 builds of `files` (path, content), for tests to compare with.
#[cfg(test)]
pub(super) fn tree_of_files<'a>(
    repo: &Repository,
    files: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Oid {
    let mut index = git2::Index::new().unwrap();
    for (path, data) in files {
        let entry = git2::IndexEntry {
            ctime: git2::IndexTime::new(0, 0),
            mtime: git2::IndexTime::new(0, 0),
            dev: 0,
            ino: 0,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            file_size: 0,
            id: repo.blob(data).unwrap(),
            flags: 0,
            flags_extended: 0,
            path: path.as_bytes().to_vec(),
        };
        index.add(&entry).unwrap();
    }
    index.write_tree_to(repo).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fan_out_folders_are_made_once_and_objects_land_in_them() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let objects = repo.path().join("objects");
        fs::create_dir(objects.join("AB")).unwrap();
        fan_out(&objects);
        for i in 0..=255u8 {
            assert!(objects.join(format!("{i:02x}")).is_dir(), "{i:02x}");
        }
        let blob = blob(b"hello\n".to_vec()).unwrap();
        write_loose(&objects, &blob).unwrap();
        assert_eq!(repo.find_blob(blob.oid).unwrap().content(), b"hello\n");
        // Nothing else was made: 256 folders, `info`, `pack` and the upper-case stranger.
        assert_eq!(fs::read_dir(&objects).unwrap().count(), 259);
        fan_out(&objects);
        assert_eq!(fs::read_dir(&objects).unwrap().count(), 259);
    }

    /// Trees built here are the trees libgit2 builds from the same files, entry for entry
    /// and id for id, through additions, changes, removals and folders that empty.
    #[test]
    fn hand_built_trees_are_the_trees_libgit2_builds() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let files = |list: &[(&str, &str)]| -> Oid {
            tree_of_files(&repo, list.iter().map(|(p, d)| (*p, d.as_bytes())))
        };
        let mut trees = Trees::default();
        let mut state: Vec<(String, String)> = Vec::new();
        let mut root: Option<Oid> = None;
        // Names chosen to hit git's order: `a-b` sorts between the file `a` and the folder
        // `a/`, `a.b` before both.
        let steps: &[(&str, Option<&str>)] = &[
            ("config.json", Some("{}")),
            ("a/b/ab", Some("1")),
            ("a-b", Some("2")),
            ("a.b", Some("3")),
            ("a/b/ac", Some("4")),
            ("3/a/abc", Some("5")),
            ("a/b/ab", Some("6")),
            ("a/b/ab", None),
            ("a/b/ac", None),
            ("3/a/abc", None),
            ("1/x", Some("7")),
        ];
        for (path, data) in steps {
            state.retain(|(p, _)| p != path);
            let blob = data.map(|d| {
                state.push((path.to_string(), d.to_string()));
                let b = super::blob(d.as_bytes().to_vec()).unwrap();
                write_loose(&dir.path().join(".git/objects"), &b).unwrap();
                b.oid
            });
            let mut out = Vec::new();
            root = trees
                .edit(&repo, root, &[Change { path, blob }], &mut out)
                .unwrap();
            for o in &out {
                write_loose(&dir.path().join(".git/objects"), o).unwrap();
            }
            let list: Vec<(&str, &str)> = state
                .iter()
                .map(|(p, d)| (p.as_str(), d.as_str()))
                .collect();
            assert_eq!(root, Some(files(&list)), "after {path}");
            // Each tree written reads back through libgit2.
            for o in &out {
                assert_eq!(repo.find_tree(o.oid).unwrap().id(), o.oid);
            }
        }
        // A commit written by hand reads back through libgit2 as written.
        let c = commit(root.unwrap(), None, "Add a 1.0.0").unwrap();
        write_loose(&dir.path().join(".git/objects"), &c).unwrap();
        write_ref(&dir.path().join(".git"), "refs/heads/master", c.oid).unwrap();
        let head = repo.head().unwrap().peel_to_commit().unwrap();
        assert_eq!(head.id(), c.oid);
        assert_eq!(head.message().ok(), Some("Add a 1.0.0"));
        assert_eq!(head.author().name().ok(), Some("palletizer"));
        assert_eq!(head.tree_id(), root.unwrap());
        assert_eq!(
            read_loose_ref(&dir.path().join(".git"), "refs/heads/master"),
            Some(c.oid)
        );
    }

    #[test]
    fn a_path_that_leaves_the_tree_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        for path in ["../x", "a/../../x", ".git/config", "/x", "a//x"] {
            let mut out = Vec::new();
            let blob = Some(Oid::ZERO_SHA1);
            let r = Trees::default().edit(&repo, None, &[Change { path, blob }], &mut out);
            assert!(r.is_err(), "{path}");
        }
    }
}
