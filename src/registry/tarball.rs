//! Checking a `.crate` file: a gzip'd tar whose entries all lie under `{name}-{vers}/`, holding
//! only files and directories and exactly one `Cargo.toml`.
//!
//! The check streams: the tarball is read once, hashed on the way, and never unpacked into
//! memory; only the manifest (capped) is kept.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

/// The largest `Cargo.toml` we keep in memory.
const MAX_MANIFEST: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TarballError {
    #[error("crate file is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("crate file unpacks to more than the limit of {0} bytes")]
    UnpackedTooLarge(u64),
    #[error("crate file is not a valid gzip'd tar archive: {0}")]
    Corrupt(String),
    #[error("crate file entry `{0}` is not a plain file or directory")]
    BadEntryType(String),
    #[error("crate file entry `{0}` has an unsafe path")]
    UnsafePath(String),
    #[error("crate file entry `{0}` is not under `{1}/`")]
    WrongPrefix(String, String),
    #[error("crate file has no `Cargo.toml` at `{0}/Cargo.toml`")]
    NoManifest(String),
    #[error("crate file has more than one manifest (`{0}`)")]
    ManyManifests(String),
    #[error("crate file's Cargo.toml is larger than {MAX_MANIFEST} bytes")]
    ManifestTooLarge,
    #[error("crate file is empty")]
    Empty,
}

/// What the check learned.
#[derive(Debug)]
pub struct Inspected {
    /// The single top-level directory, which must be `{name}-{vers}`.
    pub top_dir: String,
    /// The text of `{top_dir}/Cargo.toml`.
    pub manifest: String,
    /// Lowercase hex SHA-256 of the compressed bytes.
    pub cksum: String,
    /// Compressed size in bytes.
    pub size: u64,
}

/// Limits on a crate file.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_size: u64,
    pub max_unpacked: u64,
}

/// Passes bytes through while hashing and counting them, refusing more than `limit`.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    count: u64,
    limit: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::other(LimitHit));
        }
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

#[derive(Debug)]
struct LimitHit;
impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("size limit")
    }
}
impl std::error::Error for LimitHit {}

fn is_limit(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<LimitHit>())
}

/// Reads a whole crate file from `reader`, checking its structure. `expected_top` (the
/// `{name}-{vers}` a publish announced) is checked when given; otherwise the caller compares
/// `top_dir` with the manifest.
pub fn inspect<R: Read>(reader: R, limits: Limits) -> Result<Inspected, TarballError> {
    let mut hashing = Hashing {
        inner: reader,
        hash: Sha256::new(),
        count: 0,
        limit: limits.max_size,
    };
    let (top_dir, manifest) = match walk(&mut hashing, limits) {
        // The limit error may arrive wrapped by the tar or gzip reader: trust the count.
        Err(_) if hashing.count > limits.max_size => {
            return Err(TarballError::TooLarge(limits.max_size))
        }
        other => other?,
    };
    if hashing.count == 0 {
        return Err(TarballError::Empty);
    }
    Ok(Inspected {
        top_dir,
        manifest,
        cksum: hex(&hashing.hash.finalize()),
        size: hashing.count,
    })
}

fn walk<R: Read>(
    hashing: &mut Hashing<R>,
    limits: Limits,
) -> Result<(String, String), TarballError> {
    let io_err = |e: io::Error, limits: Limits| {
        if is_limit(&e) {
            TarballError::TooLarge(limits.max_size)
        } else {
            TarballError::Corrupt(e.to_string())
        }
    };
    let gz = flate2::read::GzDecoder::new(&mut *hashing);
    let mut archive = tar::Archive::new(gz);
    let mut top: Option<String> = None;
    let mut manifest: Option<String> = None;
    let mut unpacked: u64 = 0;
    for entry in archive.entries().map_err(|e| io_err(e, limits))? {
        let mut entry = entry.map_err(|e| io_err(e, limits))?;
        let path_bytes = entry.path_bytes().into_owned();
        let path = String::from_utf8(path_bytes).map_err(|e| {
            TarballError::UnsafePath(String::from_utf8_lossy(e.as_bytes()).into_owned())
        })?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            return Err(TarballError::BadEntryType(path));
        }
        let mut parts = path.split('/').filter(|p| !p.is_empty() && *p != ".");
        if path.starts_with('/') || path.contains('\\') || path.split('/').any(|p| p == "..") {
            return Err(TarballError::UnsafePath(path));
        }
        let first = parts
            .next()
            .ok_or_else(|| TarballError::UnsafePath(path.clone()))?;
        match &top {
            None => top = Some(first.to_owned()),
            Some(t) if t != first => return Err(TarballError::WrongPrefix(path, t.clone())),
            Some(_) => {}
        }
        let rest: Vec<&str> = parts.collect();
        unpacked = unpacked.saturating_add(entry.size());
        if unpacked > limits.max_unpacked {
            return Err(TarballError::UnpackedTooLarge(limits.max_unpacked));
        }
        if kind.is_file() && rest.len() == 1 && rest[0].eq_ignore_ascii_case("Cargo.toml") {
            if rest[0] != "Cargo.toml" || manifest.is_some() {
                return Err(TarballError::ManyManifests(path));
            }
            if entry.size() > MAX_MANIFEST {
                return Err(TarballError::ManifestTooLarge);
            }
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| io_err(e, limits))?;
            manifest = Some(text);
        }
    }
    // The tar reader stops at the end-of-archive blocks; read the rest so that gzip's CRC and
    // length trailer are checked and the hash covers every byte.
    let mut gz = archive.into_inner();
    io::copy(&mut gz, &mut io::sink()).map_err(|e| io_err(e, limits))?;
    drop(gz);
    io::copy(hashing, &mut io::sink()).map_err(|e| io_err(e, limits))?;
    let top = top.ok_or(TarballError::Empty)?;
    let manifest = manifest.ok_or_else(|| TarballError::NoManifest(top.clone()))?;
    Ok((top, manifest))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// SHA-256 of everything `reader` yields, as lowercase hex.
pub fn sha256_hex(mut reader: impl Read) -> io::Result<String> {
    let mut hash = Sha256::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&hash.finalize()));
        }
        hash.update(&buf[..n]);
    }
}

/// Builders for test crate files, shared by unit and integration tests.
#[doc(hidden)]
pub mod testing {
    use std::io::Write;

    /// One tar entry: path, contents, and the raw entry type byte.
    pub struct Entry<'a> {
        pub path: &'a str,
        pub data: &'a [u8],
        pub kind: tar::EntryType,
    }

    pub fn file<'a>(path: &'a str, data: &'a [u8]) -> Entry<'a> {
        Entry {
            path,
            data,
            kind: tar::EntryType::Regular,
        }
    }

    /// A gzip'd tar of the entries, paths written raw (so `../` can be tested).
    pub fn crate_bytes(entries: &[Entry<'_>]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            {
                let name = &mut h.as_gnu_mut().unwrap().name;
                name[..e.path.len()].copy_from_slice(e.path.as_bytes());
            }
            h.set_size(e.data.len() as u64);
            h.set_entry_type(e.kind);
            h.set_mode(0o644);
            if e.kind == tar::EntryType::Symlink {
                h.set_link_name("/etc/passwd").unwrap();
            }
            h.set_cksum();
            tar.append(&h, e.data).unwrap();
        }
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap()
    }

    /// A publish request body: `u32 LE json_len | json | u32 LE crate_len | crate`.
    pub fn publish_body(json: &[u8], krate: &[u8]) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + json.len() + krate.len());
        b.extend_from_slice(&(json.len() as u32).to_le_bytes());
        b.extend_from_slice(json);
        b.extend_from_slice(&(krate.len() as u32).to_le_bytes());
        b.extend_from_slice(krate);
        b
    }

    /// `n` incompressible bytes (xorshift), the same for every call.
    pub fn noise(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A minimal valid crate file for `name` `vers`, plus extra files.
    pub fn simple_crate(name: &str, vers: &str, extra: &[(&str, &[u8])]) -> Vec<u8> {
        let dir = format!("{name}-{vers}");
        let manifest = format!(
            "[package]\nname = \"{name}\"\nversion = \"{vers}\"\nedition = \"2021\"\ndescription = \"test crate {name}\"\n"
        );
        let m_path = format!("{dir}/Cargo.toml");
        let lib_path = format!("{dir}/src/lib.rs");
        let extra_paths: Vec<String> = extra.iter().map(|(p, _)| format!("{dir}/{p}")).collect();
        let mut entries = vec![file(&m_path, manifest.as_bytes()), file(&lib_path, b"")];
        for (i, (_, data)) in extra.iter().enumerate() {
            entries.push(file(&extra_paths[i], data));
        }
        crate_bytes(&entries)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    const LIMITS: Limits = Limits {
        max_size: 1 << 20,
        max_unpacked: 4 << 20,
    };

    #[test]
    fn good_crate() {
        let bytes = simple_crate("foo", "1.0.0", &[]);
        let i = inspect(&bytes[..], LIMITS).unwrap();
        assert_eq!(i.top_dir, "foo-1.0.0");
        assert!(i.manifest.contains("name = \"foo\""));
        assert_eq!(i.cksum, sha256_hex(&bytes[..]).unwrap());
        assert_eq!(i.size, bytes.len() as u64);
    }

    #[test]
    fn refusals() {
        let m = b"[package]\nname='foo'\nversion='1.0.0'\n";
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not gzip at all".to_vec(), "Corrupt"),
            (
                crate_bytes(&[
                    file("foo-1.0.0/Cargo.toml", m),
                    file("foo-1.0.0/../evil", b"x"),
                ]),
                "UnsafePath",
            ),
            (
                crate_bytes(&[file("/foo-1.0.0/Cargo.toml", m)]),
                "UnsafePath",
            ),
            (
                crate_bytes(&[file("foo-1.0.0/Cargo.toml", m), file("bar-1.0.0/x", b"x")]),
                "WrongPrefix",
            ),
            (
                crate_bytes(&[file("foo-1.0.0/src/lib.rs", b"")]),
                "NoManifest",
            ),
            (
                crate_bytes(&[
                    file("foo-1.0.0/Cargo.toml", m),
                    file("foo-1.0.0/cargo.toml", m),
                ]),
                "ManyManifests",
            ),
            (
                crate_bytes(&[
                    file("foo-1.0.0/Cargo.toml", m),
                    Entry {
                        path: "foo-1.0.0/link",
                        data: b"",
                        kind: tar::EntryType::Symlink,
                    },
                ]),
                "BadEntryType",
            ),
            (
                simple_crate("foo", "1.0.0", &[("big", &vec![7u8; 5 << 20])]),
                "UnpackedTooLarge",
            ),
        ];
        for (bytes, want) in cases {
            let err = inspect(&bytes[..], LIMITS).unwrap_err();
            assert!(
                format!("{err:?}").starts_with(want),
                "want {want}, got {err:?}"
            );
        }
    }

    #[test]
    fn truncated_gzip_is_corrupt() {
        let bytes = simple_crate("foo", "1.0.0", &[("data", &[1u8; 4096])]);
        let err = inspect(&bytes[..bytes.len() - 6], LIMITS).unwrap_err();
        assert!(matches!(err, TarballError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn compressed_limit() {
        let noise = noise(300_000);
        let bytes = simple_crate("foo", "1.0.0", &[("noise", &noise)]);
        let small = Limits {
            max_size: 100_000,
            ..LIMITS
        };
        assert!(bytes.len() > 100_000, "{}", bytes.len());
        let r = inspect(&bytes[..], small);
        assert!(matches!(r, Err(TarballError::TooLarge(100_000))), "{r:?}");
    }
}
