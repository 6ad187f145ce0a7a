//! The `palletizer` CLI end to end, with the real cargo reading the registry through a
//! `file://` index (no server).

mod support;

use std::fs;
use std::path::Path;

use palletizer::registry::testing::{crate_bytes, file, noise, simple_crate, Entry};
use support::{show, snapshot, Sandbox};

fn init(s: &Sandbox) {
    let url = format!("file://{}", s.reg().display());
    s.palletizer_ok(&["init", "--url", &url]);
    s.cargo_config(&format!(
        "[registries.local]\nindex = \"file://{}/index\"\n[net]\nretry = 0\n",
        s.reg().display()
    ));
}

fn lock_versions(lock: &str) -> Vec<(String, String)> {
    let lock: toml::Table = toml::from_str(lock).unwrap();
    let mut v: Vec<(String, String)> = lock["package"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

fn commits(s: &Sandbox) -> Vec<String> {
    let repo = git2::Repository::open(s.reg().join("index")).unwrap();
    let mut walk = repo.revwalk().unwrap();
    walk.push_head().unwrap();
    walk.map(|id| {
        repo.find_commit(id.unwrap())
            .unwrap()
            .summary()
            .unwrap()
            .unwrap()
            .to_owned()
    })
    .collect()
}

#[test]
fn real_cargo_builds_from_a_file_registry_and_skips_yanked() {
    let s = Sandbox::new();
    init(&s);
    for (name, vers) in support::RICH_DEPS {
        let file = s.package(name, Some(vers));
        let out = s.palletizer_ok(&["add", file.to_str().unwrap()]);
        assert_eq!(out.trim(), format!("Added {name} {vers}"));
    }
    // rich depends on crates of ours, so it can only be packaged once they are in the index.
    let rich = s.package("rich", None);
    s.palletizer_ok(&["add", rich.to_str().unwrap()]);

    let line = s.index_line("ri/ch/rich", "0.2.0");
    let deps = line["deps"].as_array().unwrap();
    let dep = |n: &str| {
        deps.iter()
            .find(|d| d["name"] == n)
            .unwrap_or_else(|| panic!("no dep {n}: {line}"))
    };
    assert_eq!(dep("abdep")["package"], "ab");
    assert_eq!(dep("abdep")["optional"], true);
    assert_eq!(dep("abdep")["req"], "^1");
    assert_eq!(dep("leaf")["default_features"], false);
    assert_eq!(dep("leaf")["features"], serde_json::json!(["fast"]));
    assert_eq!(dep("tgt")["target"], "cfg(unix)");
    assert_eq!(dep("devonly")["kind"], "dev");
    for d in deps {
        assert!(
            d["registry"].is_null(),
            "same-registry deps carry registry null: {d}"
        );
    }
    assert_eq!(line["features2"]["extra"], serde_json::json!(["dep:abdep"]));
    assert_eq!(line["features2"]["weak"], serde_json::json!(["abdep?/x"]));
    assert_eq!(line["v"], 2);
    assert_eq!(line["rust_version"], "1.70");
    let pubtime = line["pubtime"].as_str().unwrap();
    assert_eq!(pubtime.len(), 20, "{pubtime}");
    let crate_file = s.reg().join("crates/rich/rich-0.2.0.crate");
    let sum =
        palletizer::registry::testing::sha256_hex(fs::File::open(&crate_file).unwrap()).unwrap();
    assert_eq!(line["cksum"], sum);

    let app = s.test_crate("app", None);
    let out = s.cargo_ok(&app, &["run", "-q"]);
    assert!(out.contains("leaf 0.1.1 + ab + tgt"), "{out}");
    let lock = fs::read_to_string(app.join("Cargo.lock")).unwrap();
    let versions = lock_versions(&lock);
    for (n, v) in [
        ("ab", "1.0.0"),
        ("leaf", "0.1.1"),
        ("rich", "0.2.0"),
        ("tgt", "0.3.0"),
    ] {
        assert!(
            versions.contains(&(n.into(), v.into())),
            "{n} {v} in {versions:?}"
        );
    }
    assert!(
        !versions.iter().any(|(n, _)| n == "devonly"),
        "dev deps of deps are not resolved"
    );

    let out = s.palletizer_ok(&["yank", "leaf", "0.1.1"]);
    assert!(out.contains("yanked"), "{out}");
    assert_eq!(s.index_line("le/af/leaf", "0.1.1")["yanked"], true);
    fs::remove_file(app.join("Cargo.lock")).unwrap();
    s.cargo_ok(&app, &["generate-lockfile"]);
    let versions = lock_versions(&fs::read_to_string(app.join("Cargo.lock")).unwrap());
    assert!(
        versions.contains(&("leaf".into(), "0.1.0".into())),
        "{versions:?}"
    );
    assert!(
        !versions.contains(&("leaf".into(), "0.1.1".into())),
        "{versions:?}"
    );

    s.palletizer_ok(&["unyank", "leaf", "0.1.1"]);
    assert_eq!(s.index_line("le/af/leaf", "0.1.1")["yanked"], false);
    let log = commits(&s);
    assert_eq!(log[0], "Unyank leaf 0.1.1");
    assert_eq!(log[1], "Yank leaf 0.1.1");
    assert_eq!(log[2], "Add rich 0.2.0");
    assert_eq!(log.last().unwrap(), "Initialize index");

    let list = s.palletizer_ok(&["list"]);
    assert!(list.contains("leaf 0.1.0\nleaf 0.1.1\n"), "{list}");
    let check = s.palletizer_ok(&["check"]);
    assert!(check.contains("consistent"), "{check}");
}

#[test]
fn bad_input_leaves_the_registry_unchanged() {
    let s = Sandbox::new();
    init(&s);
    let good = s.path().join("foo-bar-1.0.0.crate");
    fs::write(&good, simple_crate("foo-bar", "1.0.0", &[])).unwrap();
    s.palletizer_ok(&["add", good.to_str().unwrap()]);
    let before = snapshot(&s.reg());

    let m = b"[package]\nname = \"evil\"\nversion = \"1.0.0\"\n";
    let big = noise(11 << 20);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "corrupt-1.0.0.crate",
            b"\x1f\x8b\x08\x00garbage".to_vec(),
            "not a valid gzip",
        ),
        (
            "evil-1.0.0.crate",
            crate_bytes(&[
                file("evil-1.0.0/Cargo.toml", m),
                file("evil-1.0.0/../../x", b"x"),
            ]),
            "unsafe path",
        ),
        (
            "evil-1.0.0.crate",
            crate_bytes(&[
                file("evil-1.0.0/Cargo.toml", m),
                Entry {
                    path: "evil-1.0.0/link",
                    data: b"",
                    kind: tar::EntryType::Symlink,
                },
            ]),
            "not a plain file",
        ),
        (
            "other-1.0.0.crate",
            simple_crate("evil", "1.0.0", &[]),
            "does not match its manifest",
        ),
        (
            "evil-2.0.0.crate",
            simple_crate("evil", "1.0.0", &[]),
            "does not match its manifest",
        ),
        (
            "evil-1.0.0.crate",
            crate_bytes(&[file("evil-1.0.1/Cargo.toml", m)]),
            "expected `evil-1.0.0/`",
        ),
        (
            "big-1.0.0.crate",
            simple_crate("big", "1.0.0", &[("blob", &big)]),
            "larger than the limit",
        ),
        (
            "std-1.0.0.crate",
            simple_crate("std", "1.0.0", &[]),
            "reserved",
        ),
        (
            "9x-1.0.0.crate",
            simple_crate("9x", "1.0.0", &[]),
            "must start with an ASCII letter",
        ),
        (
            "foo-bar-1.0.0.crate",
            simple_crate("foo-bar", "1.0.0", &[]),
            "already uploaded",
        ),
        (
            "foo-bar-1.0.0+meta.crate",
            simple_crate("foo-bar", "1.0.0+meta", &[]),
            "already uploaded",
        ),
        (
            "Foo_Bar-1.0.1.crate",
            simple_crate("Foo_Bar", "1.0.1", &[]),
            "too similar",
        ),
        (
            "foo_bar-1.0.1.crate",
            simple_crate("foo_bar", "1.0.1", &[]),
            "too similar",
        ),
    ];
    for (file_name, bytes, want) in cases {
        let dir = s.path().join("bad");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(file_name);
        fs::write(&path, bytes).unwrap();
        let out = s.palletizer(&["add", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{file_name} was accepted:\n{}",
            show(&out)
        );
        assert!(
            stderr.contains(want),
            "{file_name}: want `{want}` in:\n{stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(
            snapshot(&s.reg()) == before,
            "{file_name} changed the registry"
        );
        fs::remove_file(&path).unwrap();
    }
    for args in [
        &["yank", "nope", "1.0.0"][..],
        &["yank", "foo-bar", "9.9.9"],
        &["delete", "nope"],
        &["frobnicate"],
    ] {
        let out = s.palletizer(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("error: "),
            "{}",
            show(&out)
        );
        assert!(
            snapshot(&s.reg()) == before,
            "{args:?} changed the registry"
        );
    }
    // A second init refuses to overwrite the registry.
    let out = s.palletizer(&["init", "--url", "http://x"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already exists")
    );
    assert!(snapshot(&s.reg()) == before);
}

/// crates.io refuses a new publish without a description or a license (tests/api.rs), but
/// serves crates of 2014 that have neither: `add` takes such a crate file, with the setting
/// on.
#[test]
fn add_takes_a_crate_without_a_description_or_a_license() {
    let s = Sandbox::new();
    init(&s);
    let text = fs::read_to_string(s.reg().join("palletizer.toml")).unwrap();
    assert!(
        text.contains("require-description-and-license = true"),
        "{text}"
    );
    for (name, extra) in [
        ("nothing", ""),
        ("blank", "description = \" \"\nlicense = \"MIT\"\n"),
        ("unlicensed", "description = \"d\"\n"),
    ] {
        let manifest = format!("[package]\nname = \"{name}\"\nversion = \"1.0.0\"\n{extra}");
        let (m, l) = (
            format!("{name}-1.0.0/Cargo.toml"),
            format!("{name}-1.0.0/src/lib.rs"),
        );
        let path = s.path().join(format!("{name}-1.0.0.crate"));
        fs::write(
            &path,
            crate_bytes(&[file(&m, manifest.as_bytes()), file(&l, b"")]),
        )
        .unwrap();
        let out = s.palletizer_ok(&["add", path.to_str().unwrap()]);
        assert_eq!(out, format!("Added {name} 1.0.0\n"));
    }
}

/// Adds `abc` 1.0.0 and 1.1.0.
fn add_abc(s: &Sandbox) {
    for v in ["1.0.0", "1.1.0"] {
        let p = s.path().join(format!("abc-{v}.crate"));
        fs::write(&p, simple_crate("abc", v, &[])).unwrap();
        s.palletizer_ok(&["add", p.to_str().unwrap()]);
    }
}

#[test]
fn delete_removes_lines_and_files() {
    let s = Sandbox::new();
    init(&s);
    add_abc(&s);
    s.palletizer_ok(&["delete", "abc", "1.0.0"]);
    assert!(!s.reg().join("crates/abc/abc-1.0.0.crate").exists());
    assert!(s.reg().join("crates/abc/abc-1.1.0.crate").exists());
    assert_eq!(s.palletizer_ok(&["list", "abc"]), "abc 1.1.0\n");
    s.palletizer_ok(&["delete", "abc"]);
    assert!(!s.reg().join("index/3/a/abc").exists());
    assert!(!s.reg().join("crates/abc").exists());
    assert_eq!(
        commits(&s)[..2],
        ["Delete abc (all versions)", "Delete abc 1.0.0"]
    );
    assert!(s.palletizer_ok(&["check"]).contains("consistent"));
}

#[test]
fn check_finds_and_repairs() {
    let s = Sandbox::new();
    init(&s);
    for (n, v) in [("aaaa", "1.0.0"), ("bbbb", "1.0.0"), ("cccc", "1.0.0")] {
        let p = s.path().join(format!("{n}-{v}.crate"));
        fs::write(&p, simple_crate(n, v, &[])).unwrap();
        s.palletizer_ok(&["add", p.to_str().unwrap()]);
    }
    let reg = s.reg();
    fs::remove_file(reg.join("crates/aaaa/aaaa-1.0.0.crate")).unwrap();
    fs::write(
        reg.join("crates/bbbb/bbbb-1.0.0.crate"),
        simple_crate("bbbb", "1.0.0", &[("x", b"x")]),
    )
    .unwrap();
    let cccc = reg.join("index/cc/cc/cccc");
    let edited = fs::read_to_string(&cccc)
        .unwrap()
        .replace("\"yanked\":false", "\"yanked\":true");
    fs::write(&cccc, edited).unwrap();
    fs::write(
        reg.join("crates/.tmp-4000000000-0-upload.crate"),
        b"partial",
    )
    .unwrap();
    fs::write(reg.join("crates/stray.crate"), b"orphan").unwrap();
    // What a writer killed inside a git commit leaves: lock files that fail every later
    // commit, and a search line that was never written.
    fs::write(reg.join("index/.git/index.lock"), b"").unwrap();
    fs::write(reg.join("index/.git/refs/heads/master.lock"), b"").unwrap();
    let search = fs::read_to_string(reg.join("search.jsonl")).unwrap();
    let without_bbbb: String = search
        .lines()
        .filter(|l| !l.contains("\"bbbb\""))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(reg.join("search.jsonl"), without_bbbb).unwrap();

    let out = s.palletizer(&["check"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("aaaa 1.0.0: crate file") && text.contains("is missing"),
        "{text}"
    );
    assert!(
        text.contains("bbbb 1.0.0: crate file")
            && text.contains("does not match the index checksum"),
        "{text}"
    );
    assert!(
        text.contains("index file cc/cc/cccc differs from the last commit"),
        "{text}"
    );
    assert!(
        text.contains("temp file") && text.contains(".tmp-4000000000-0-upload.crate"),
        "{text}"
    );
    assert!(text.contains("stray.crate has no index line"), "{text}");
    assert!(text.contains("index.lock left behind"), "{text}");
    assert!(text.contains("master.lock left behind"), "{text}");
    assert!(
        text.contains("search data for bbbb disagrees with the index"),
        "{text}"
    );
    assert!(
        text.contains("search data for cccc disagrees with the index"),
        "yanking every version changes what search shows: {text}"
    );

    let out = s.palletizer(&["check", "--repair"]);
    assert!(
        !out.status.success(),
        "missing and mismatched files cannot be repaired"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("repaired: committed uncommitted index changes"),
        "{text}"
    );
    assert!(text.contains("repaired: removed temp file"), "{text}");
    assert!(text.contains("not repaired: aaaa 1.0.0"), "{text}");
    assert!(text.contains("not repaired: bbbb 1.0.0"), "{text}");
    assert!(!text.contains("not repaired: index file"), "{text}");
    assert!(!reg.join("crates/.tmp-4000000000-0-upload.crate").exists());
    assert!(!reg.join("index/.git/index.lock").exists());
    assert!(!reg.join("index/.git/refs/heads/master.lock").exists());
    // Orphans are moved aside, never deleted.
    assert!(!reg.join("crates/stray.crate").exists());
    assert_eq!(
        fs::read(reg.join("orphans/stray.crate")).unwrap(),
        b"orphan"
    );
    let search = fs::read_to_string(reg.join("search.jsonl")).unwrap();
    assert!(
        search.contains("\"bbbb\"") && search.contains("test crate bbbb"),
        "the rebuilt line takes its description from the crate file: {search}"
    );
    assert_eq!(commits(&s)[0], "Commit index changes left uncommitted");
    assert!(fs::read_to_string(&cccc)
        .unwrap()
        .contains("\"yanked\":true"));

    // Once the admin deals with the rest, check passes.
    s.palletizer_ok(&["delete", "aaaa"]);
    s.palletizer_ok(&["delete", "bbbb"]);
    assert!(s.palletizer_ok(&["check"]).contains("consistent"));
}

#[test]
fn concurrent_adds_both_land() {
    let s = Sandbox::new();
    init(&s);
    let files: Vec<_> = (0..2)
        .map(|i| {
            let name = format!("conc{i}");
            let p = s.path().join(format!("{name}-1.0.0.crate"));
            fs::write(&p, simple_crate(&name, "1.0.0", &[])).unwrap();
            p
        })
        .collect();
    let children: Vec<_> = files
        .iter()
        .map(|f| {
            std::process::Command::new(env!("CARGO_BIN_EXE_palletizer"))
                .arg("-r")
                .arg(s.reg())
                .args(["add", f.to_str().unwrap()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
    }
    let log = commits(&s);
    assert_eq!(log.len(), 3, "{log:?}");
    let mut added = log[..2].to_vec();
    added.sort();
    assert_eq!(added, ["Add conc0 1.0.0", "Add conc1 1.0.0"]);
    assert!(s.palletizer_ok(&["check"]).contains("consistent"));
    assert!(Path::new(&s.reg()).join("index/co/nc/conc0").exists());
}

#[test]
fn names_from_the_command_line_never_reach_the_file_system() {
    let s = Sandbox::new();
    init(&s);
    // Bait outside the registry that would parse as an index line.
    support::index_line_bait(s.path());
    let before = snapshot(s.path());
    for args in [
        &["list", "aéb"][..],
        &["list", ""],
        &["yank", "../../etc", "1.0.0"],
        &["unyank", "../../etc", "1.0.0"],
        &["delete", "../../etc"],
        &["delete", "a/b", "1.0.0"],
        &["yank", &"x".repeat(5000), "1.0.0"],
    ] {
        let out = s.palletizer(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: crate name"), "{args:?}: {err}");
        assert!(err.len() < 300, "the name is echoed bounded: {err}");
    }
    assert_eq!(snapshot(s.path()), before);
}

#[test]
fn a_deleted_version_cannot_be_added_again() {
    let s = Sandbox::new();
    init(&s);
    let add = |name: &str, vers: &str, extra: &[(&str, &[u8])]| {
        let p = s.path().join(format!("{name}-{vers}.crate"));
        fs::write(&p, simple_crate(name, vers, extra)).unwrap();
        s.palletizer(&["add", p.to_str().unwrap()])
    };
    for v in ["1.0.0", "1.1.0"] {
        assert!(add("abc", v, &[]).status.success());
    }
    let out = s.palletizer_ok(&["delete", "abc", "1.0.0"]);
    assert!(
        out.contains("Deleted abc 1.0.0") && out.contains("abc 1.0.0 cannot be published again"),
        "{out}"
    );
    let before = snapshot(&s.reg());
    // Other bytes under the deleted number, and the same release with build metadata.
    for vers in ["1.0.0", "1.0.0+rebuilt"] {
        let out = add("abc", vers, &[("fix", b"other bytes")]);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("crate version `") && err.contains("of `abc` was deleted on"),
            "{err}"
        );
        assert!(err.contains("version numbers cannot be reused"), "{err}");
        assert!(
            snapshot(&s.reg()) == before,
            "a refused add changed the registry"
        );
    }
    assert_eq!(s.palletizer_ok(&["list", "abc"]), "abc 1.1.0\n");
    assert!(
        add("abc", "1.2.0", &[]).status.success(),
        "new versions are fine"
    );
    assert!(s.palletizer_ok(&["check"]).contains("consistent"));

    // Deleting every version keeps every number taken, but not the name.
    let out = s.palletizer_ok(&["delete", "abc"]);
    assert!(
        out.contains("abc 1.1.0, 1.2.0 cannot be published again; new versions can"),
        "{out}"
    );
    for (name, vers) in [("abc", "1.1.0"), ("abc", "1.2.0"), ("Abc", "1.2.0")] {
        let out = add(name, vers, &[]);
        assert_eq!(out.status.code(), Some(1), "{name} {vers}: {}", show(&out));
        assert!(show(&out).contains("was deleted"), "{}", show(&out));
    }
    assert!(add("abc", "2.0.0", &[]).status.success());
    assert!(s.palletizer_ok(&["check"]).contains("consistent"));
    let deleted = fs::read_to_string(s.reg().join("deleted.jsonl")).unwrap();
    assert_eq!(deleted.lines().count(), 3, "{deleted}");
    let first: serde_json::Value = serde_json::from_str(deleted.lines().next().unwrap()).unwrap();
    assert_eq!(first["name"], "abc");
    assert_eq!(first["vers"], "1.0.0");
    assert_eq!(
        first["cksum"].as_str().unwrap(),
        palletizer::registry::testing::sha256_hex(&simple_crate("abc", "1.0.0", &[])[..]).unwrap()
    );

    // Tombstones travel with a backup.
    let restored = s.backup_and_restore();
    let p = s.path().join("abc-1.1.0.crate");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_palletizer"))
        .arg("-r")
        .arg(&restored)
        .args(["add", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("was deleted"));
}

#[test]
fn check_reports_damaged_tombstones() {
    let s = Sandbox::new();
    init(&s);
    let p = s.path().join("abc-1.0.0.crate");
    fs::write(&p, simple_crate("abc", "1.0.0", &[])).unwrap();
    s.palletizer_ok(&["add", p.to_str().unwrap()]);
    s.palletizer_ok(&["delete", "abc", "1.0.0"]);
    let file = s.reg().join("deleted.jsonl");
    let mut text = fs::read(&file).unwrap();
    text.extend_from_slice(b"{\"name\":\"ab\xff\n");
    fs::write(&file, text).unwrap();
    let out = s.palletizer(&["check", "--repair"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("not repaired: deleted.jsonl line(s) 2 cannot be read"),
        "{text}"
    );
    // The readable tombstone still counts.
    let out = s.palletizer(&["add", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
}

/// Asserts that `palletizer ARGS` exits with status 1, nothing on stdout and `want` alone on
/// stderr.
fn assert_refused(s: &Sandbox, args: &[&str], want: &str) {
    let out = s.palletizer(args);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {}", show(&out));
    assert!(out.stdout.is_empty(), "{args:?}: {}", show(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("{want}\n"),
        "{args:?}"
    );
}

/// A wrong command line is refused with one line on stderr, nothing on stdout and exit
/// status 1, and changes nothing.
#[test]
fn argument_errors_are_one_line_and_change_nothing() {
    let s = Sandbox::new();
    init(&s);
    let before = snapshot(s.path());
    for (args, want) in [
        (&["list", "--bogus"][..], "error: invalid option '--bogus'"),
        (&["-x", "list"], "error: invalid option '-x'"),
        (
            &["frobnicate"],
            "error: unknown command `frobnicate` (see `palletizer --help`)",
        ),
        (&[], "error: no command given (see `palletizer --help`)"),
        (
            &["add", "--pubtime"],
            "error: missing argument for option '--pubtime'",
        ),
        (
            &["token", "create", "--user"],
            "error: missing argument for option '--user'",
        ),
        (
            &["check", "--repair=yes"],
            "error: unexpected argument for option '--repair': \"yes\"",
        ),
        (
            &["list", "--url", "http://x"],
            "error: `--url` does not apply to `list`",
        ),
        (
            &["yank", "leaf"],
            "error: usage: palletizer yank NAME VERSION",
        ),
        (
            &["user", "rename"],
            "error: unknown `user` subcommand `rename`: use add, list or remove",
        ),
        (
            &["token", "list", "--admin"],
            "error: `--admin` does not apply to `token list`",
        ),
        (
            &["token", "revoke", "one"],
            "error: token id `one` is not a number",
        ),
    ] {
        assert_refused(&s, args, want);
    }
    assert_eq!(snapshot(s.path()), before);
}

#[test]
fn help_is_printed_wherever_it_is_asked_for() {
    let s = Sandbox::new();
    let top = s.palletizer_ok(&["--help"]);
    assert!(
        top.starts_with("usage: palletizer [-r DIR] COMMAND [ARGS]\n"),
        "{top}"
    );
    assert!(
        top.contains("\naccess control:\n  user add NAME [--admin]"),
        "{top}"
    );
    assert_eq!(s.palletizer_ok(&["list", "-h"]), top, "after a command too");
    let access = s.palletizer_ok(&["token", "--help"]);
    assert!(
        access.starts_with("usage: palletizer [-r DIR] COMMAND\n\n  user add"),
        "{access}"
    );
}

/// `--release-name` is `delete`'s alone and may stand anywhere on its line; a wrong use is
/// one line on stderr and changes nothing.
#[test]
fn release_name_applies_to_delete_alone_and_stands_anywhere() {
    let s = Sandbox::new();
    init(&s);
    add_abc(&s);
    let before = snapshot(&s.reg());
    for (args, want) in [
        (
            &["delete", "abc", "--release-name=yes"][..],
            "error: unexpected argument for option '--release-name': \"yes\"",
        ),
        (
            &["delete", "--release-name"],
            "error: usage: palletizer delete NAME [VERSION] [--release-name]",
        ),
        (
            &["yank", "abc", "1.0.0", "--release-name"],
            "error: `--release-name` does not apply to `yank`",
        ),
        (
            &["--release-name", "list"],
            "error: `--release-name` does not apply to `list`",
        ),
        (
            &["user", "list", "--release-name"],
            "error: invalid option '--release-name'",
        ),
    ] {
        assert_refused(&s, args, want);
    }
    // The name is the whole crate's: with a version, the registry refuses it.
    let out = s.palletizer(&["delete", "abc", "1.0.0", "--release-name"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        err.lines().count() == 1 && err.contains("every version"),
        "{err}"
    );
    assert!(snapshot(&s.reg()) == before);

    let out = s.palletizer_ok(&["--release-name", "delete", "abc"]);
    assert_eq!(
        out,
        "Deleted abc 1.0.0\nDeleted abc 1.1.0\n\
         The name abc is free: its owners were forgotten, and anyone who may publish new \
         crates may take it\n\
         Deleted version numbers are never reused: abc 1.0.0, 1.1.0 cannot be published \
         again; new versions can\n"
    );
    assert_eq!(s.palletizer_ok(&["list"]), "");
}

/// A hand edit that leaves `auth.json` unparsable makes the server refuse every token
/// (tests/fail_closed.rs): `check` reports it with the file and the parse error, and
/// `--repair`, run for a problem it does fix, leaves the file as it is for a person to mend.
#[test]
fn check_reports_a_broken_auth_json_and_repair_leaves_it_alone() {
    let s = Sandbox::new();
    init(&s);
    s.palletizer_ok(&["user", "add", "bob"]);
    let auth = s.reg().join("auth.json");
    let good = fs::read(&auth).unwrap();
    let broken = &good[..good.len() / 2];
    fs::write(&auth, broken).unwrap();
    fs::write(s.reg().join("crates/stray.crate"), b"orphan").unwrap();

    let out = s.palletizer(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("problem: access control does not load"))
        .unwrap_or_else(|| panic!("not reported: {text}"));
    assert!(line.contains(auth.to_str().unwrap()), "{line}");
    assert!(
        line.contains("EOF while parsing"),
        "the parse error: {line}"
    );

    let out = s.palletizer(&["check", "--repair"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("repaired: moved crate file"), "{text}");
    assert!(
        text.contains("not repaired: access control does not load"),
        "{text}"
    );
    assert_eq!(
        fs::read(&auth).unwrap(),
        broken,
        "--repair rewrote auth.json"
    );

    fs::write(&auth, &good).unwrap();
    assert!(s.palletizer_ok(&["check"]).contains("consistent"));
}
