//! The index as a git repository over smart HTTP (protocol v0, stateless RPC), as libgit2
//! (cargo's default git backend) and the git CLI fetch it.
//!
//! - The advertisement lists `HEAD` and the branches, with `multi_ack_detailed` (without it,
//!   libgit2 drops its `want`s from later negotiation rounds and a grown index can no longer
//!   be fetched) and `side-band-64k`.
//! - A negotiation round without `done` is answered `ACK <oid> common` for each `have` the
//!   repository holds, then `NAK`.
//! - The final round (`done`) gets `ACK <last common>` or `NAK`, then a pack of everything
//!   reachable from the wants and not from the common haves, in side-band frames.
//!
//! Output is written to a file, never held whole in memory.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use git2::{ObjectType, Oid, PackBuilder, Repository, Tree};

/// Largest data part of a side-band-64k frame (65520 minus the length and band bytes).
const SIDEBAND_DATA: usize = 65515;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{0}")]
    BadRequest(String),
    #[error("index repository: {0}")]
    Git(#[from] git2::Error),
    #[error("writing the response: {0}")]
    Io(#[from] io::Error),
}

impl GitError {
    /// See [`crate::registry::storage_trouble`]: a full or failing disk, not the request.
    pub fn storage_trouble(&self) -> Option<&'static str> {
        match self {
            GitError::Io(io) => crate::registry::storage_trouble(io),
            GitError::Git(g) => crate::registry::git_storage_trouble(g),
            GitError::BadRequest(_) => None,
        }
    }
}

/// Appends one pkt-line.
fn pkt(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(format!("{:04x}", line.len() + 4).as_bytes());
    out.extend_from_slice(line.as_bytes());
}

/// The response to `GET info/refs?service=git-upload-pack`.
pub fn advertise(index_dir: &Path) -> Result<Vec<u8>, GitError> {
    let repo = Repository::open(index_dir)?;
    let head = repo.head()?;
    let head_oid = head.peel_to_commit()?.id();
    let branch = head.name().unwrap_or("refs/heads/master").to_owned();
    let mut out = Vec::new();
    pkt(&mut out, "# service=git-upload-pack\n");
    out.extend_from_slice(b"0000");
    let caps =
        format!("multi_ack_detailed side-band-64k ofs-delta symref=HEAD:{branch} agent=palletizer");
    pkt(&mut out, &format!("{head_oid} HEAD\0{caps}\n"));
    let mut refs: Vec<(String, Oid)> = Vec::new();
    for r in repo.references_glob("refs/heads/*")? {
        let r = r?;
        if let (Ok(name), Ok(commit)) = (r.name(), r.peel_to_commit()) {
            refs.push((name.to_owned(), commit.id()));
        }
    }
    refs.sort();
    for (name, oid) in refs {
        pkt(&mut out, &format!("{oid} {name}\n"));
    }
    out.extend_from_slice(b"0000");
    Ok(out)
}

/// What an upload-pack request asks for.
#[derive(Debug, Default, PartialEq)]
struct Request {
    wants: Vec<Oid>,
    haves: Vec<Oid>,
    done: bool,
    side_band: bool,
}

fn parse_request(body: &[u8]) -> Result<Request, GitError> {
    let bad = |m: &str| GitError::BadRequest(m.to_owned());
    let mut req = Request::default();
    let mut rest = body;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(bad("truncated pkt-line"));
        }
        let len = std::str::from_utf8(&rest[..4])
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .ok_or_else(|| bad("invalid pkt-line length"))?;
        if len == 0 {
            rest = &rest[4..];
            continue; // flush
        }
        if len < 4 || len > rest.len() {
            return Err(bad("pkt-line length beyond the body"));
        }
        let line = std::str::from_utf8(&rest[4..len]).map_err(|_| bad("pkt-line is not UTF-8"))?;
        let line = line.trim_end_matches('\n');
        rest = &rest[len..];
        let oid = |s: &str| {
            Oid::from_str(s.get(..40).unwrap_or("")).map_err(|_| bad("invalid object id"))
        };
        if let Some(w) = line.strip_prefix("want ") {
            if req.wants.is_empty() {
                req.side_band = w
                    .split(' ')
                    .skip(1)
                    .any(|c| c == "side-band-64k" || c == "side-band");
            }
            req.wants.push(oid(w)?);
        } else if let Some(h) = line.strip_prefix("have ") {
            req.haves.push(oid(h)?);
        } else if line == "done" {
            req.done = true;
        } else if line.starts_with("shallow ") || line.starts_with("deepen") {
            return Err(bad("shallow fetches are not supported"));
        }
    }
    if req.wants.is_empty() {
        return Err(bad("no `want` in the request"));
    }
    Ok(req)
}

/// What answers an upload-pack request.
pub enum Answer {
    /// The answer was written to the output.
    Written,
    /// The answer is this file, whole: the kept full-clone answer for the current HEAD.
    Kept(File),
}

/// Answers a `POST git-upload-pack` body: a negotiation round, an incremental pack, or a
/// full clone. A full clone of the current HEAD (the common case, and the costly one: every
/// object in the history) is answered from the file [`keep_clone`] made for that HEAD when
/// `kept` names the directory it lives in; everything else is written to `out`.
pub fn upload_pack(
    index_dir: &Path,
    kept: Option<&Path>,
    body: &[u8],
    out: &mut impl Write,
) -> Result<Answer, GitError> {
    let req = parse_request(body)?;
    let repo = Repository::open(index_dir)?;
    for w in &req.wants {
        if repo.find_commit(*w).is_err() {
            return Err(GitError::BadRequest(format!("not our ref {w}")));
        }
    }
    let common: Vec<Oid> = req
        .haves
        .iter()
        .copied()
        .filter(|h| repo.find_commit(*h).is_ok())
        .collect();
    if !req.done {
        let mut head = Vec::new();
        for c in &common {
            pkt(&mut head, &format!("ACK {c} common\n"));
        }
        pkt(&mut head, "NAK\n");
        out.write_all(&head)?;
        return Ok(Answer::Written);
    }
    if let (Some(dir), true, true) = (kept, common.is_empty(), req.side_band) {
        let head = repo.head()?.peel_to_commit()?.id();
        if req.wants.iter().all(|w| *w == head) {
            return Ok(Answer::Kept(keep_clone_of(&repo, dir, head)?));
        }
    }
    write_answer(&repo, &req.wants, &common, req.side_band, out)?;
    Ok(Answer::Written)
}

/// The final round's answer: `ACK <last common>` or `NAK`, then the pack of everything
/// reachable from `wants` and not from `common`.
fn write_answer(
    repo: &Repository,
    wants: &[Oid],
    common: &[Oid],
    side_band: bool,
    out: &mut impl Write,
) -> Result<(), GitError> {
    let mut head = Vec::new();
    match common.last() {
        Some(c) => pkt(&mut head, &format!("ACK {c}\n")),
        None => pkt(&mut head, "NAK\n"),
    }
    out.write_all(&head)?;
    let mut pb = repo.packbuilder()?;
    insert_missing(repo, &mut pb, wants, common)?;
    let mut failed: Option<io::Error> = None;
    pb.foreach(|chunk| {
        let r = if side_band {
            sideband(out, chunk)
        } else {
            out.write_all(chunk)
        };
        match r {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    if side_band {
        out.write_all(b"0000")?;
    }
    Ok(())
}

/// Puts into `pb` every object reachable from `wants` and not from `common`, and no more
/// than a few besides.
///
/// Each new commit's tree is compared with its first parent's: an entry with the same id as
/// at the same path in the parent is reachable from the parent, which is either common (the
/// client has it) or new itself (its objects go in when it is walked). Only entries that
/// changed are descended into, so a fetch costs what changed, not the size of the tree.
/// (libgit2's own walk marks every object of every common commit's whole tree first: 130 ms
/// for a one-commit fetch of a 20,000-crate index.)
fn insert_missing(
    repo: &Repository,
    pb: &mut PackBuilder<'_>,
    wants: &[Oid],
    common: &[Oid],
) -> Result<(), git2::Error> {
    let mut walk = repo.revwalk()?;
    for w in wants {
        walk.push(*w)?;
    }
    for c in common {
        walk.hide(*c)?;
    }
    let mut seen = HashSet::new();
    for oid in walk {
        let commit = repo.find_commit(oid?)?;
        pb.insert_object(commit.id(), None)?;
        let base = match commit.parent_count() {
            0 => None,
            _ => Some(commit.parent(0)?.tree()?),
        };
        insert_changed(repo, pb, &commit.tree()?, base.as_ref(), "", &mut seen)?;
    }
    Ok(())
}

/// Inserts `tree` and what in it differs from `base` (the same path in the parent commit).
///
/// A tree met again is still compared with this commit's base: what it shares with the
/// base it first came with is only known to be sent if that commit's parent is, and that
/// chain may lead back here.
fn insert_changed(
    repo: &Repository,
    pb: &mut PackBuilder<'_>,
    tree: &Tree<'_>,
    base: Option<&Tree<'_>>,
    path: &str,
    seen: &mut HashSet<Oid>,
) -> Result<(), git2::Error> {
    if seen.insert(tree.id()) {
        pb.insert_object(tree.id(), Some(path))?;
    }
    for entry in tree.iter() {
        let before = base.and_then(|b| b.get_name_bytes(entry.name_bytes()));
        if before.as_ref().map(|e| e.id()) == Some(entry.id()) {
            continue;
        }
        let name = String::from_utf8_lossy(entry.name_bytes());
        let sub = if path.is_empty() {
            name.into_owned()
        } else {
            format!("{path}/{name}")
        };
        match entry.kind() {
            Some(ObjectType::Tree) => {
                let old = match before {
                    Some(e) if e.kind() == Some(ObjectType::Tree) => Some(repo.find_tree(e.id())?),
                    _ => None,
                };
                let new = repo.find_tree(entry.id())?;
                insert_changed(repo, pb, &new, old.as_ref(), &sub, seen)?;
            }
            Some(ObjectType::Blob) if seen.insert(entry.id()) => {
                pb.insert_object(entry.id(), Some(&sub))?;
            }
            // Submodule links name commits of other repositories: nothing to send.
            _ => {}
        }
    }
    Ok(())
}

/// Prefix of kept full-clone answers in their directory; the rest of the name is the commit.
const KEPT_PREFIX: &str = "clone-";

/// Makes sure the full-clone answer for the current HEAD is kept in `dir`, and removes the
/// ones for older HEADs. Run in the background after the index changed, so that the next
/// clone is one file send. Nothing is made until someone has cloned (a kept answer exists):
/// a registry used through the sparse index never spends the time.
pub fn keep_clone(index_dir: &Path, dir: &Path) -> Result<(), GitError> {
    let cloned = fs::read_dir(dir).is_ok_and(|mut d| {
        d.any(|e| {
            e.is_ok_and(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with(KEPT_PREFIX) && !name.ends_with(".tmp")
            })
        })
    });
    if !cloned {
        return Ok(());
    }
    let repo = Repository::open(index_dir)?;
    let head = repo.head()?.peel_to_commit()?.id();
    keep_clone_of(&repo, dir, head).map(drop)
}

/// The kept answer for `head`, made first when missing. It is written to a temp file,
/// synced and renamed, so a crash never leaves a torn answer under the final name.
fn keep_clone_of(repo: &Repository, dir: &Path, head: Oid) -> Result<File, GitError> {
    let path = dir.join(format!("{KEPT_PREFIX}{head}"));
    if let Ok(f) = File::open(&path) {
        return Ok(f);
    }
    fs::create_dir_all(dir)?;
    // Named for this process: two servers on one registry (an overlapping restart) must
    // never write into the same temp file, or one of them renames a torn answer into place.
    let tmp = dir.join(format!("{KEPT_PREFIX}{head}.{}.tmp", std::process::id()));
    let mut out = io::BufWriter::new(File::create(&tmp)?);
    let written = write_answer(repo, &[head], &[], true, &mut out)
        .and_then(|()| Ok(out.into_inner().map_err(|e| e.into_error())?))
        .and_then(|f| Ok(f.sync_all()?));
    if let Err(e) = written.and_then(|()| Ok(fs::rename(&tmp, &path)?)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    for entry in fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Another process's temp file may be in the middle of being written; one left by a
        // process that is gone (killed mid-write) is removed.
        let writer_alive = |name: &str| {
            name.strip_suffix(".tmp")
                .and_then(|n| n.rsplit('.').next())
                .is_some_and(|pid| Path::new("/proc").join(pid).exists())
        };
        if name.starts_with(KEPT_PREFIX) && entry.path() != path && !writer_alive(&name) {
            // A response being sent holds its file open: removing it here is safe.
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(File::open(&path)?)
}

/// Writes `data` as band-1 frames.
fn sideband(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    for part in data.chunks(SIDEBAND_DATA) {
        out.write_all(format!("{:04x}", part.len() + 5).as_bytes())?;
        out.write_all(&[1])?;
        out.write_all(part)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        let oid = "0123456789abcdef0123456789abcdef01234567";
        let mut body = Vec::new();
        pkt(
            &mut body,
            &format!("want {oid} multi_ack_detailed side-band-64k thin-pack ofs-delta\n"),
        );
        body.extend_from_slice(b"0000");
        pkt(&mut body, &format!("have {oid}\n"));
        pkt(&mut body, "done\n");
        let r = parse_request(&body).unwrap();
        assert_eq!(r.wants.len(), 1);
        assert_eq!(r.haves.len(), 1);
        assert!(r.done && r.side_band);
        assert!(parse_request(b"0000").is_err(), "no want");
        assert!(parse_request(b"00zzwant").is_err());
        assert!(parse_request(b"0032want 0123").is_err());
        assert!(parse_request(b"0009want x\n").is_err());
    }

    /// Every object reachable from `from` (test oracle: the plain definition).
    fn reachable(repo: &Repository, from: &[Oid]) -> HashSet<Oid> {
        fn tree(repo: &Repository, id: Oid, out: &mut HashSet<Oid>) {
            if !out.insert(id) {
                return;
            }
            for e in repo.find_tree(id).unwrap().iter() {
                match e.kind() {
                    Some(ObjectType::Tree) => tree(repo, e.id(), out),
                    _ => {
                        out.insert(e.id());
                    }
                }
            }
        }
        let mut out = HashSet::new();
        let mut walk = repo.revwalk().unwrap();
        for f in from {
            walk.push(*f).unwrap();
        }
        for c in walk {
            let c = repo.find_commit(c.unwrap()).unwrap();
            out.insert(c.id());
            tree(repo, c.tree_id(), &mut out);
        }
        out
    }

    /// A history that adds, changes, removes and brings back files (old contents reappear,
    /// as after a yank and an unyank), with a squash-like root in the middle.
    fn history(dir: &Path) -> (Repository, Vec<Oid>) {
        let repo = Repository::init(dir).unwrap();
        let sig = git2::Signature::now("t", "t@t").unwrap();
        let mut commits: Vec<Oid> = Vec::new();
        let mut files: std::collections::BTreeMap<String, String> = Default::default();
        for i in 0..60u32 {
            let name = format!("{}/{}/f{}", i % 3, (i / 3) % 4, i % 7);
            match i % 5 {
                0..=2 => files.insert(name, format!("v{}", i % 4)),
                3 => files.remove(&name),
                _ => files.insert(name, "v0".to_owned()),
            };
            let tree = crate::registry::index::objects::tree_of_files(
                &repo,
                files.iter().map(|(p, t)| (p.as_str(), t.as_bytes())),
            );
            let tree = repo.find_tree(tree).unwrap();
            let parents: Vec<git2::Commit<'_>> = match commits.last() {
                Some(p) if i != 30 => vec![repo.find_commit(*p).unwrap()],
                _ => vec![],
            };
            let parents: Vec<&git2::Commit<'_>> = parents.iter().collect();
            let c = repo
                .commit(None, &sig, &sig, &format!("c{i}"), &tree, &parents)
                .unwrap();
            commits.push(c);
        }
        (repo, commits)
    }

    /// Objects a pack from `insert_missing` holds, read back through a pack written to disk.
    fn packed(repo: &Repository, wants: &[Oid], common: &[Oid]) -> HashSet<Oid> {
        let mut pb = repo.packbuilder().unwrap();
        insert_missing(repo, &mut pb, wants, common).unwrap();
        let dir = tempfile::tempdir().unwrap();
        pb.write(dir.path(), 0).unwrap();
        let idx = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "idx"))
            .unwrap();
        // Pack index v2: magic, version, fanout[256], then the sorted ids.
        let bytes = fs::read(idx).unwrap();
        let n = u32::from_be_bytes(bytes[8 + 255 * 4..8 + 256 * 4].try_into().unwrap()) as usize;
        let ids = &bytes[8 + 256 * 4..8 + 256 * 4 + n * 20];
        ids.chunks(20)
            .map(|c| Oid::from_bytes(c).unwrap())
            .collect()
    }

    #[test]
    fn fetch_packs_hold_everything_the_client_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, commits) = history(dir.path());
        let tip = *commits.last().unwrap();
        let all = reachable(&repo, &[tip]);
        let got = packed(&repo, &[tip], &[]);
        assert_eq!(got, all, "a clone is everything");
        for have in [0, 1, 7, 29, 30, 31, 45, 58, 59] {
            let has = reachable(&repo, &[commits[have]]);
            let needed: HashSet<Oid> = all.difference(&has).copied().collect();
            let sent = packed(&repo, &[tip], &[commits[have]]);
            let missing: Vec<_> = needed.difference(&sent).collect();
            assert!(missing.is_empty(), "have c{have}: missing {missing:?}");
            assert!(sent.is_subset(&all), "have c{have}: foreign objects");
        }
        // Several haves, as libgit2 sends them.
        let has = reachable(&repo, &[commits[10], commits[40]]);
        let sent = packed(&repo, &[tip], &[commits[10], commits[40]]);
        assert!(all.difference(&has).all(|o| sent.contains(o)));
    }
}
