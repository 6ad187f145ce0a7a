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

use std::io::{self, Write};
use std::path::Path;

use git2::{Oid, Repository};

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

/// Answers a `POST git-upload-pack` body, writing the response to `out`.
pub fn upload_pack(index_dir: &Path, body: &[u8], out: &mut impl Write) -> Result<(), GitError> {
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
    let mut head = Vec::new();
    if !req.done {
        for c in &common {
            pkt(&mut head, &format!("ACK {c} common\n"));
        }
        pkt(&mut head, "NAK\n");
        out.write_all(&head)?;
        return Ok(());
    }
    match common.last() {
        Some(c) => pkt(&mut head, &format!("ACK {c}\n")),
        None => pkt(&mut head, "NAK\n"),
    }
    out.write_all(&head)?;
    let mut walk = repo.revwalk()?;
    for w in &req.wants {
        walk.push(*w)?;
    }
    for c in &common {
        walk.hide(*c)?;
    }
    let mut pb = repo.packbuilder()?;
    pb.insert_walk(&mut walk)?;
    let mut failed: Option<io::Error> = None;
    pb.foreach(|chunk| {
        let r = if req.side_band {
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
    if req.side_band {
        out.write_all(b"0000")?;
    }
    Ok(())
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
}
