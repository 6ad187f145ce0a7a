//! `palletizer backup` and `palletizer restore`: a backup taken while the server runs and
//! publishes arrive restores into a registry that `check` finds clean, that serves the same
//! bytes, whose tokens still work, and from which the real cargo resolves the same lockfile
//! over the sparse index, libgit2 and the git CLI. Hostile or broken backup files are refused
//! with one line and leave nothing behind.
//!
//! The full-disk test mounts a small tmpfs and so needs root: without it, it is reported as
//! ignored with the reason, except under `CI=true`, where it fails (tests/support/harness.rs).

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use palletizer::registry::testing::{publish_body, simple_crate};
use support::harness::Tmpfs;
use support::{get_bytes, git_in, meta, raw_publish, read_one, show, snapshot, Sandbox};

support::harness::tests!(
    backup_while_serving_restores_the_same_registry_for_sparse_libgit2_and_git_cli,
    backups_taken_during_publishes_restore_clean,
    restore_refuses_hostile_backup_files_and_writes_nothing_outside,
    restore_never_writes_over_a_directory_with_files,
    backup_refuses_a_registry_that_would_not_restore,
    a_full_disk_leaves_no_backup_file_and_no_restore[Tmpfs],
    a_restored_index_runs_nothing_its_backup_told_git_to_run[Git],
);

/// Runs `palletizer ARGS` (no `-r`).
fn palletizer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palletizer"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed:\n{}", show(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Asserts a refusal: exit 1 and exactly one line on stderr, containing `needle`.
fn refused(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", show(out));
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "wanted `{needle}` in: {err}");
}

/// The index working tree and the crate files, as served.
fn served_files(reg: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    snapshot(reg)
        .into_iter()
        .filter(|(p, _)| {
            let p = p.to_string_lossy();
            (p.starts_with("index/") && !p.starts_with("index/.git/")) || p.starts_with("crates/")
        })
        .collect()
}

fn head(reg: &Path) -> String {
    let repo = git2::Repository::open(reg.join("index")).unwrap();
    let id = repo.head().unwrap().peel_to_commit().unwrap().id();
    id.to_string()
}

/// A `CARGO_HOME` with registry `local` at `index` and `extra` config lines.
fn cargo_home(s: &Sandbox, name: &str, index: &str, extra: &str) -> PathBuf {
    let home = s.path().join(name);
    fs::create_dir_all(&home).unwrap();
    fs::write(
        home.join("config.toml"),
        format!("[registries.local]\nindex = \"{index}\"\n[net]\nretry = 0\n{extra}"),
    )
    .unwrap();
    home
}

/// Resolves the consumer's lockfile from scratch with `home`, fetches what it names, and
/// returns the lockfile.
fn resolve(s: &Sandbox, app: &Path, home: &Path) -> String {
    let _ = fs::remove_file(app.join("Cargo.lock"));
    for args in [&["generate-lockfile"][..], &["fetch"]] {
        let out = s
            .cargo_cmd(app, args)
            .env("CARGO_HOME", home)
            .env("HOME", s.path())
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo {args:?} with {}:\n{}",
            home.display(),
            show(&out)
        );
    }
    fs::read_to_string(app.join("Cargo.lock")).unwrap()
}

/// The three ways cargo reads the index: sparse, git through libgit2, git through the CLI.
fn lockfiles(s: &Sandbox, app: &Path, url: &str, round: &str) -> Vec<String> {
    let homes = [
        cargo_home(
            s,
            &format!("{round}-sparse"),
            &format!("sparse+{url}/index/"),
            "",
        ),
        cargo_home(s, &format!("{round}-libgit2"), &format!("{url}/index"), ""),
        cargo_home(
            s,
            &format!("{round}-git-cli"),
            &format!("{url}/index"),
            "git-fetch-with-cli = true\n",
        ),
    ];
    homes.iter().map(|h| resolve(s, app, h)).collect()
}

fn cargo_publish(s: &Sandbox, home: &Path, name: &str, vers: &str, token: &str) {
    let dir = s.test_crate(name, Some(vers));
    let out = s
        .cargo_cmd(
            &dir,
            &[
                "publish",
                "--registry",
                "local",
                "--allow-dirty",
                "--no-verify",
            ],
        )
        .env("CARGO_HOME", home)
        .env("CARGO_REGISTRIES_LOCAL_TOKEN", token)
        .output()
        .unwrap();
    assert!(out.status.success(), "publish {name}:\n{}", show(&out));
}

fn backup_while_serving_restores_the_same_registry_for_sparse_libgit2_and_git_cli() {
    let s = Sandbox::new();
    let srv = s.serve(&["-q"]);
    let url = srv.url();
    let publisher = cargo_home(&s, "publisher", &format!("sparse+{url}/index/"), "");
    for (name, vers) in [("leaf", "0.1.0"), ("leaf", "0.1.1"), ("ab", "1.0.0")] {
        cargo_publish(&s, &publisher, name, vers, &s.token());
    }
    s.palletizer_ok(&["yank", "leaf", "0.1.1"]);
    s.palletizer_ok(&["user", "add", "alice"]);
    let alice = s
        .palletizer_ok(&[
            "token",
            "create",
            "--user",
            "alice",
            "--scope",
            "publish-new",
        ])
        .trim()
        .to_owned();
    let app = s.consumer();
    let before = lockfiles(&s, &app, &url, "before");
    for lock in &before {
        assert!(
            lock.contains("name = \"leaf\"\nversion = \"0.1.0\""),
            "yanked 0.1.1 skipped: {lock}"
        );
    }

    // A publish in flight: the server has taken its head and half its body when the backup
    // runs, and answers it 200 afterwards. The backup has the registry as it was.
    let body = publish_body(
        &meta("late", "1.0.0", serde_json::json!([])),
        &simple_crate("late", "1.0.0", &[]),
    );
    let mut busy = TcpStream::connect(srv.addr()).unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        busy,
        "PUT /api/v1/crates/new HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        s.token(),
        body.len()
    )
    .unwrap();
    let mut interim = [0u8; 25];
    busy.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    busy.write_all(&body[..body.len() / 2]).unwrap();
    let files = served_files(&s.reg());
    let at = head(&s.reg());
    let backup = s.path().join("reg.backup");
    let out = s.palletizer_ok(&["backup", backup.to_str().unwrap()]);
    assert!(out.contains(&at), "{out}");
    assert!(!PathBuf::from(format!("{}.tmp", backup.display())).exists());
    busy.write_all(&body[body.len() / 2..]).unwrap();
    let (status, text) = read_one(&mut busy);
    assert_eq!(status, 200, "{text}");
    drop(srv);

    // Restored beside the original, served on the same address (the URL is the registry's).
    let r = Sandbox::new();
    let out = ok(
        palletizer(&[
            "restore",
            backup.to_str().unwrap(),
            r.reg().to_str().unwrap(),
        ]),
        "restore",
    );
    assert!(out.contains("registry is consistent"), "{out}");
    assert!(r
        .palletizer_ok(&["check"])
        .contains("registry is consistent"));
    assert_eq!(head(&r.reg()), at);
    assert_eq!(
        served_files(&r.reg()),
        files,
        "index and crate files byte for byte"
    );
    assert!(
        !r.reg().join("index/la/te/late").exists(),
        "the in-flight publish came after"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(r.reg().join("auth.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let addr = url.strip_prefix("http://").unwrap();
    let srv = r.serve(&["--bind", addr]);
    assert_eq!(srv.url(), url);
    // Index files and crate files are served as they are (page files never are).
    let mut served = 0;
    for (path, bytes) in &files {
        let p = path.to_string_lossy();
        if p.starts_with("crates/") && !p.ends_with(".crate") {
            continue;
        }
        let (status, body) = get_bytes(srv.addr(), &format!("/{p}")).unwrap();
        assert!(
            status == 200 && &body == bytes,
            "GET /{p}: {status}, {} bytes",
            body.len()
        );
        served += 1;
    }
    assert_eq!(served, 6, "config.json, 2 index files, 3 crate files");

    let after = lockfiles(&s, &app, &url, "after");
    assert_eq!(
        after, before,
        "sparse, libgit2 and git CLI resolve the same lockfile"
    );
    let log = srv.log_when(0, |l| {
        l.iter()
            .filter(|l| l.contains("POST /index/git-upload-pack 200"))
            .count()
            >= 2
    });
    let fetches = log
        .iter()
        .filter(|l| l.contains("POST /index/git-upload-pack 200"))
        .count();
    assert!(fetches >= 2, "libgit2 and the git CLI fetched: {log:?}");
    assert!(
        log.iter().any(|l| l.contains("GET /index/le/af/leaf 200")),
        "{log:?}"
    );

    // Tokens came along: the admin's and alice's publish on the restored server.
    cargo_publish(&s, &publisher, "tgt", "0.3.0", &s.token());
    let (status, text) = raw_publish(
        srv.addr(),
        &alice,
        &publish_body(
            &meta("alice-crate", "1.0.0", serde_json::json!([])),
            &simple_crate("alice-crate", "1.0.0", &[]),
        ),
    );
    assert_eq!(status, 200, "{text}");
    assert!(r
        .palletizer_ok(&["check"])
        .contains("registry is consistent"));
}

fn backups_taken_during_publishes_restore_clean() {
    const PUBLISHES: usize = 20;
    let s = Sandbox::new();
    let srv = s.serve(&["-q"]);
    let token = s.token();
    let addr = srv.addr().to_owned();
    let publisher = std::thread::spawn(move || {
        for i in 0..PUBLISHES {
            let name = format!("busy{i}");
            let body = publish_body(
                &meta(&name, "1.0.0", serde_json::json!([])),
                &simple_crate(&name, "1.0.0", &[]),
            );
            let (status, text) = raw_publish(&addr, &token, &body);
            assert_eq!(status, 200, "{text}");
        }
    });
    let mut heads = BTreeSet::new();
    // Backups for as long as publishes go on (a bounded number of them).
    for i in 0..40 {
        if publisher.is_finished() && i >= 3 {
            break;
        }
        let backup = s.path().join(format!("b{i}"));
        s.palletizer_ok(&["backup", backup.to_str().unwrap()]);
        let dir = s.path().join(format!("r{i}"));
        ok(
            palletizer(&["restore", backup.to_str().unwrap(), dir.to_str().unwrap()]),
            "restore",
        );
        // Every version in the restored index is a whole publish: line, file, commit.
        let listed = ok(palletizer(&["-r", dir.to_str().unwrap(), "list"]), "list");
        for line in listed.lines() {
            let name = line.split_whitespace().next().unwrap();
            assert!(
                dir.join(format!("crates/{name}/{name}-1.0.0.crate"))
                    .exists(),
                "{line}"
            );
        }
        heads.insert(head(&dir));
    }
    publisher.join().unwrap();
    let last = s.path().join("last");
    s.palletizer_ok(&["backup", last.to_str().unwrap()]);
    let dir = s.path().join("r-last");
    ok(
        palletizer(&["restore", last.to_str().unwrap(), dir.to_str().unwrap()]),
        "restore",
    );
    assert_eq!(
        ok(palletizer(&["-r", dir.to_str().unwrap(), "list"]), "list")
            .lines()
            .count(),
        PUBLISHES
    );
    assert_eq!(served_files(&dir), served_files(&s.reg()));
    eprintln!(
        "{} distinct HEADs among the backups taken during publishes",
        heads.len()
    );
}

/// A registry with one crate and its backup file: (sandbox, backup path).
fn with_backup() -> (Sandbox, PathBuf) {
    let s = Sandbox::new();
    s.palletizer_ok(&["init", "--url", "http://127.0.0.1:1"]);
    let f = s.path().join("foo-1.0.0.crate");
    fs::write(&f, simple_crate("foo", "1.0.0", &[])).unwrap();
    s.palletizer_ok(&["add", f.to_str().unwrap()]);
    s.palletizer_ok(&["user", "add", "bob"]);
    let backup = s.path().join("reg.backup");
    s.palletizer_ok(&["backup", backup.to_str().unwrap()]);
    (s, backup)
}

/// The first entry (the manifest) of a backup, as raw tar blocks.
fn manifest_blocks(backup: &Path) -> Vec<u8> {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(backup).unwrap())
        .read_to_end(&mut tar)
        .unwrap();
    let size = tar::Header::from_byte_slice(&tar[..512])
        .entry_size()
        .unwrap() as usize;
    tar[..512 + size.next_multiple_of(512)].to_vec()
}

/// A GNU tar header with the path written raw (so `../` and `/` survive).
fn raw_header(path: &str, kind: tar::EntryType, size: u64, link: Option<&str>) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    let name = &mut h.as_gnu_mut().unwrap().name;
    name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_size(size);
    h.set_entry_type(kind);
    h.set_mode(0o644);
    if let Some(l) = link {
        h.set_link_name(l).unwrap();
    }
    h.set_cksum();
    h
}

/// A backup file: the real manifest, then `entries` (header, data), gzipped.
fn forged(manifest: &[u8], entries: &[(tar::Header, &[u8])]) -> Vec<u8> {
    let mut tar = manifest.to_vec();
    for (h, data) in entries {
        tar.extend_from_slice(h.as_bytes());
        tar.extend_from_slice(data);
        tar.resize(tar.len().next_multiple_of(512), 0);
    }
    tar.extend_from_slice(&[0; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// The names in `dir` (not recursive).
fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn restore_refuses_hostile_backup_files_and_writes_nothing_outside() {
    let (s, backup) = with_backup();
    let manifest = manifest_blocks(&backup);
    // Restores go to work/place/restored, extracting in work/place/.restored.restore-PID:
    // three levels below the sandbox, where `outside` is.
    let work = s.path().join("work");
    fs::create_dir_all(work.join("place")).unwrap();
    let outside = s.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let escaped = outside.join("escaped");
    let abs = escaped.to_str().unwrap().to_owned();
    let file = |p: &str| raw_header(p, tar::EntryType::Regular, 6, None);
    let link = |p: &str, kind, to: &str| raw_header(p, kind, 0, Some(to));
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "traversal",
            forged(&manifest, &[(file("../../../outside/escaped"), b"pwned\n")]),
            "is not a plain relative path",
        ),
        (
            "traversal inside a registry name",
            forged(
                &manifest,
                &[(file("index/../../../../outside/escaped"), b"pwned\n")],
            ),
            "is not a plain relative path",
        ),
        (
            "absolute path",
            forged(&manifest, &[(file(&abs), b"pwned\n")]),
            "is not a plain relative path",
        ),
        (
            "symlink, then a file through it",
            forged(
                &manifest,
                &[
                    (
                        link("crates", tar::EntryType::Symlink, outside.to_str().unwrap()),
                        b"",
                    ),
                    (file("crates/escaped"), b"pwned\n"),
                ],
            ),
            "is a symbolic link",
        ),
        (
            "hard link",
            forged(
                &manifest,
                &[(link("auth.json", tar::EntryType::Link, "/etc/passwd"), b"")],
            ),
            "is a hard link",
        ),
        (
            "device",
            forged(
                &manifest,
                &[(raw_header("index/null", tar::EntryType::Char, 0, None), b"")],
            ),
            "is a device",
        ),
        (
            "a name that is not the registry's",
            forged(&manifest, &[(file(".pending"), b"pwned\n")]),
            "is not part of a registry",
        ),
        (
            "not a backup: text",
            b"hello, I am not a backup\n".to_vec(),
            "is not a palletizer backup",
        ),
        (
            "not a backup: a crate file",
            simple_crate("foo", "1.0.0", &[]),
            "is not a palletizer backup",
        ),
        (
            "truncated",
            {
                let b = fs::read(&backup).unwrap();
                b[..b.len() / 2].to_vec()
            },
            "damaged or cut short",
        ),
        (
            "manifest, then nothing",
            forged(&manifest, &[]),
            "damaged or cut short",
        ),
    ];
    // What git would run or follow, each the one entry after the manifest.
    let not_taken = "is not one of the git files a restore takes";
    let dot_git = "`.git` directory or file";
    for (path, needle) in [
        ("index/.git/hooks/post-checkout", "is a git hook"),
        (
            "index/.git/objects/info/alternates",
            "names another object store",
        ),
        (
            "index/.git/objects/info/http-alternates",
            "names another object store",
        ),
        ("index/.git/info/attributes", not_taken),
        ("index/.git/commondir", not_taken),
        ("index/.git/worktrees/w/gitdir", not_taken),
        ("index/.git/modules/m/config", not_taken),
        ("index/.git/index", not_taken),
        ("index/.git", "is a `.git` file"),
        ("index/fo/.git", dot_git),
        ("index/.GIT/config", dot_git),
        ("index/.gitattributes", dot_git),
        ("index/.gitmodules", dot_git),
    ] {
        cases.push((path, forged(&manifest, &[(file(path), b"pwned\n")]), needle));
    }
    for (what, bytes, needle) in cases {
        let f = s.path().join("hostile.backup");
        fs::write(&f, bytes).unwrap();
        let target = work.join("place/restored");
        let before = names(&work.join("place"));
        let out = palletizer(&["restore", f.to_str().unwrap(), target.to_str().unwrap()]);
        assert!(!escaped.exists(), "{what}: wrote outside the target");
        assert!(names(&outside).is_empty(), "{what}");
        refused(&out, needle);
        assert!(!target.exists(), "{what}: target left half-made");
        assert_eq!(
            names(&work.join("place")),
            before,
            "{what}: nothing left beside it"
        );
    }
    // The real backup restores into the same place.
    let target = work.join("place/restored");
    ok(
        palletizer(&[
            "restore",
            backup.to_str().unwrap(),
            target.to_str().unwrap(),
        ]),
        "restore",
    );
    assert!(target.join("crates/foo/foo-1.0.0.crate").exists());
}

/// The backup in `backup` with its entries (paths, directories ending in `/`, and data)
/// changed by `edit`, and the manifest's counts made to match: whole, and hostile.
fn rewritten(backup: &Path, edit: impl FnOnce(&mut Vec<(String, Vec<u8>)>)) -> Vec<u8> {
    let gz = flate2::read::GzDecoder::new(fs::File::open(backup).unwrap());
    let mut archive = tar::Archive::new(gz);
    let mut manifest = serde_json::Value::Null;
    let mut entries = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let mut path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        if path == "palletizer-backup.json" {
            manifest = serde_json::from_slice(&data).unwrap();
            continue;
        }
        if e.header().entry_type().is_dir() && !path.ends_with('/') {
            path.push('/');
        }
        entries.push((path, data));
    }
    edit(&mut entries);
    manifest["entries"] = entries.len().into();
    manifest["bytes"] = entries.iter().map(|(_, d)| d.len()).sum::<usize>().into();
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let json = serde_json::to_vec(&manifest).unwrap();
    let manifest_entry = ("palletizer-backup.json".to_owned(), json);
    for (path, data) in std::iter::once(&manifest_entry).chain(&entries) {
        let mut h = tar::Header::new_gnu();
        let (kind, mode) = match path.ends_with('/') {
            true => (tar::EntryType::Directory, 0o755),
            false => (tar::EntryType::Regular, 0o644),
        };
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, path.trim_end_matches('/'), &data[..])
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// A backup whose index carries a git config that runs a program on `git status`
/// (`core.fsmonitor`), a hook sample and an ignore rule, as a hostile or an old backup may:
/// the restore writes git's config itself and leaves the rest out, and git run in the
/// restored index runs nothing.
fn a_restored_index_runs_nothing_its_backup_told_git_to_run() {
    let (s, backup) = with_backup();
    let pwned = s.path().join("PWNED");
    let hostile = format!(
        "[core]\n\trepositoryformatversion = 0\n\tbare = false\n\
         \tfsmonitor = \"touch {0}\"\n\thooksPath = {1}\n\tsshCommand = touch {0}\n",
        pwned.display(),
        s.path().join("hooks").display()
    );
    // The config does what it says with this git: a repository of its own runs it.
    let scratch = s.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    assert!(git_in(&scratch, &["init", "-q"]).0);
    fs::write(scratch.join(".git/config"), &hostile).unwrap();
    git_in(&scratch, &["status"]);
    assert!(pwned.exists(), "git did not run core.fsmonitor here");
    fs::remove_file(&pwned).unwrap();

    let bytes = rewritten(&backup, |entries| {
        // Older backups hold git's config, hook samples and info/exclude: replaced here.
        let replaced = ["index/.git/config", "index/.git/hooks/", "index/.git/info/"];
        entries.retain(|(p, _)| !replaced.iter().any(|r| p.starts_with(r)));
        let at = entries
            .iter()
            .position(|(p, _)| p == "index/.git/HEAD")
            .unwrap();
        let hook = format!("#!/bin/sh\ntouch {}\n", pwned.display());
        for (path, data) in [
            ("index/.git/config", hostile.as_bytes()),
            ("index/.git/hooks/", b""),
            ("index/.git/hooks/pre-commit.sample", hook.as_bytes()),
            ("index/.git/info/", b""),
            ("index/.git/info/exclude", b"*\n"),
            ("index/.git/objects/info/packs", b"P pack-0.pack\n"),
        ] {
            entries.insert(at, (path.to_owned(), data.to_vec()));
        }
    });
    let file = s.path().join("hostile.backup");
    fs::write(&file, bytes).unwrap();
    let target = s.path().join("restored");
    ok(
        palletizer(&["restore", file.to_str().unwrap(), target.to_str().unwrap()]),
        "restore",
    );
    let git_dir = target.join("index/.git");
    let config = fs::read_to_string(git_dir.join("config")).unwrap();
    for key in ["fsmonitor", "hooksPath", "sshCommand", "touch"] {
        assert!(!config.contains(key), "{key} restored: {config}");
    }
    for left_out in ["hooks", "info", "objects/info/packs"] {
        assert!(!git_dir.join(left_out).exists(), "{left_out} restored");
    }
    let index = target.join("index");
    for args in [&["status"][..], &["log", "-1"], &["fsck", "--no-progress"]] {
        let (ok, stderr) = git_in(&index, args);
        assert!(ok && stderr.is_empty(), "git {args:?}: {stderr}");
    }
    assert!(!pwned.exists(), "git ran what the backup said");
    ok(
        palletizer(&["-r", target.to_str().unwrap(), "check"]),
        "check",
    );
}

fn restore_never_writes_over_a_directory_with_files() {
    let (s, backup) = with_backup();
    let out = palletizer(&[
        "restore",
        backup.to_str().unwrap(),
        s.reg().to_str().unwrap(),
    ]);
    refused(&out, "exists and is not empty");
    let other = s.path().join("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("keep"), "mine").unwrap();
    let out = palletizer(&["restore", backup.to_str().unwrap(), other.to_str().unwrap()]);
    refused(&out, "exists and is not empty");
    assert_eq!(names(&other), BTreeSet::from(["keep".to_owned()]));
    // An empty directory is taken.
    let empty = s.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    ok(
        palletizer(&["restore", backup.to_str().unwrap(), empty.to_str().unwrap()]),
        "restore into an empty directory",
    );
    assert!(empty.join("palletizer.toml").exists());
}

fn backup_refuses_a_registry_that_would_not_restore() {
    let (s, backup) = with_backup();
    let old = fs::read(&backup).unwrap();
    fs::remove_file(s.reg().join("crates/foo/foo-1.0.0.crate")).unwrap();
    let out = s.palletizer(&["backup", backup.to_str().unwrap()]);
    refused(&out, "crate file");
    assert_eq!(
        fs::read(&backup).unwrap(),
        old,
        "the previous backup is kept"
    );
    let inside = s.reg().join("crates/b.backup");
    fs::write(
        s.reg().join("crates/foo/foo-1.0.0.crate"),
        simple_crate("foo", "1.0.0", &[]),
    )
    .unwrap();
    let out = s.palletizer(&["backup", inside.to_str().unwrap()]);
    refused(&out, "which it copies");
}

fn a_full_disk_leaves_no_backup_file_and_no_restore() {
    let (s, backup) = with_backup();
    // Enough crate data that the backup cannot fit in 1 MiB.
    for i in 0..4 {
        let name = format!("big{i}");
        let noise = palletizer::registry::testing::noise(300_000);
        let f = s.path().join(format!("{name}-1.0.0.crate"));
        fs::write(
            &f,
            simple_crate(&name, "1.0.0", &[("src/data.bin", &noise)]),
        )
        .unwrap();
        s.palletizer_ok(&["add", f.to_str().unwrap()]);
    }
    let small = s.path().join("small");
    let _mnt = Tmpfs::mount(&small, "1m");
    let file = small.join("reg.backup");
    let out = s.palletizer(&["backup", file.to_str().unwrap()]);
    refused(&out, "is full; no backup was written");
    assert!(names(&small).is_empty(), "{:?}", names(&small));

    let big = s.path().join("big.backup");
    s.palletizer_ok(&["backup", big.to_str().unwrap()]);
    let target = small.join("restored");
    let out = palletizer(&["restore", big.to_str().unwrap(), target.to_str().unwrap()]);
    refused(&out, "nothing was restored");
    assert!(names(&small).is_empty(), "{:?}", names(&small));
    // The small backup fits and restores there.
    ok(
        palletizer(&[
            "restore",
            backup.to_str().unwrap(),
            target.to_str().unwrap(),
        ]),
        "restore",
    );
}
