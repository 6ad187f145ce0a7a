//! Crate files built to make the checker hold or inflate far more than their size (tar
//! extension entries of 256 MiB, a gzip bomb after the archive, thousands of extension
//! headers), sent to a running server and to `palletizer add`: each is refused with a short
//! message, the registry is unchanged, and the server's peak memory stays flat.

mod support;

use std::fs;
use std::path::Path;

use palletizer::registry::testing::{hostile_crates, publish_body, renaming_crates, simple_crate};
use support::{publish_json, raw_publish, show, snapshot, vm_hwm_kib, Sandbox};

/// How far the server's peak resident set may rise while it refuses every hostile crate.
const FLAT_KIB: u64 = 1024;

fn assert_short_error(what: &str, status: u16, body: &str) {
    assert!((400..500).contains(&status), "{what}: {status} {body}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let detail = v["errors"][0]["detail"].as_str().unwrap();
    assert!(
        detail.len() < 300 && !detail.chars().any(char::is_control),
        "{what}: {detail:?}"
    );
}

#[test]
fn hostile_crates_leave_the_servers_memory_flat() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    let pid = srv.child.id();
    let at_start = vm_hwm_kib(pid);
    // One good publish first, so the baseline includes what any publish needs (git, buffers).
    let good = simple_crate("warm", "1.0.0", &[]);
    let (st, body) = raw_publish(
        srv.addr(),
        &s.token(),
        &publish_body(&publish_json("warm", "1.0.0", serde_json::json!({})), &good),
    );
    assert_eq!(st, 200, "{body}");
    let before = snapshot(&s.reg());
    let baseline = vm_hwm_kib(pid);
    eprintln!("VmHWM at start {at_start} KiB, after one good publish {baseline} KiB");
    for (what, krate) in hostile_crates() {
        let body = publish_body(&publish_json("foo", "1.0.0", serde_json::json!({})), &krate);
        let (st, answer) = raw_publish(srv.addr(), &s.token(), &body);
        let hwm = vm_hwm_kib(pid);
        eprintln!(
            "{what}: {} KB sent, {st} {:.200}, VmHWM {hwm} KiB",
            krate.len() / 1000,
            answer.trim()
        );
        assert!(
            hwm <= baseline + FLAT_KIB,
            "{what}: the server's VmHWM went from {baseline} KiB to {hwm} KiB"
        );
        assert_short_error(what, st, &answer);
    }
    assert!(
        snapshot(&s.reg()) == before,
        "a hostile crate changed the registry"
    );
}

#[test]
fn hostile_crates_fail_palletizer_add_in_one_line() {
    let s = Sandbox::new();
    let url = format!("file://{}", s.reg().display());
    s.palletizer_ok(&["init", "--url", &url]);
    let before = snapshot(&s.reg());
    let dir = s.path().join("hostile");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("foo-1.0.0.crate");
    for (what, krate) in hostile_crates() {
        fs::write(&path, &krate).unwrap();
        let out = s.palletizer(&["add", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what} was added:\n{}", show(&out));
        assert_eq!(stderr.trim().lines().count(), 1, "{what}: {stderr}");
        assert!(stderr.len() < 400, "{what}: {stderr}");
        assert!(snapshot(&s.reg()) == before, "{what} changed the registry");
    }
}

/// Crate files with a header another tar reader would use to place an entry elsewhere (a PAX
/// global header with `path=../evil`, GNU sparse names, link names on files, a header name
/// outside): a 400 that says which, from the server and from `palletizer add`, and nothing
/// stored.
#[test]
fn crates_with_headers_that_would_rename_an_entry_are_refused() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    let before = snapshot(&s.reg());
    let path = s.path().join("foo-1.0.0.crate");
    for (what, krate) in renaming_crates() {
        let body = publish_body(&publish_json("foo", "1.0.0", serde_json::json!({})), &krate);
        let (st, answer) = raw_publish(srv.addr(), &s.token(), &body);
        assert_eq!(st, 400, "{what}: {answer}");
        assert_short_error(what, st, &answer);
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
        let detail = v["errors"][0]["detail"].as_str().unwrap();
        assert!(detail.starts_with("crate file"), "{what}: {detail}");
        if what.contains("global") {
            assert!(detail.contains("PAX global header"), "{what}: {detail}");
        }
        fs::write(&path, &krate).unwrap();
        let out = s.palletizer(&["add", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what} was added:\n{}", show(&out));
        assert!(stderr.contains(detail), "{what}: {stderr}");
    }
    assert!(snapshot(&s.reg()) == before, "a renaming crate was stored");
}

#[test]
fn sixty_thousand_features_are_refused_by_the_server() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    let before = snapshot(&s.reg());
    let features: serde_json::Map<String, serde_json::Value> = (0..60_000)
        .map(|i| (format!("f{i}"), serde_json::json!([])))
        .collect();
    let json = publish_json("foo", "1.0.0", features.into());
    let krate = simple_crate("foo", "1.0.0", &[]);
    let (st, body) = raw_publish(srv.addr(), &s.token(), &publish_body(&json, &krate));
    assert_short_error("60,000 features", st, &body);
    assert!(body.contains("more than the limit of 300"), "{body}");
    assert!(snapshot(&s.reg()) == before);
}

/// Writes a crate whose files include one at a path over 100 bytes, which `cargo package`
/// stores as a GNU long-name entry.
fn long_path_crate(root: &Path) -> String {
    let long_dir = format!("assets/{}", "a_rather_long_directory_name_".repeat(4));
    fs::create_dir_all(root.join("src")).unwrap();
    fs::create_dir_all(root.join(&long_dir)).unwrap();
    fs::write(
        root.join("Cargo.toml"),
        "[package]\nname = \"longpath\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
         description = \"a crate with a long path\"\nlicense = \"MIT\"\n",
    )
    .unwrap();
    fs::write(root.join("src/lib.rs"), "").unwrap();
    let file = format!("{long_dir}/data.txt");
    fs::write(root.join(&file), "long").unwrap();
    file
}

#[test]
fn long_paths_written_by_cargo_package_are_accepted() {
    let s = Sandbox::new();
    let dir = s.path().join("longpath");
    let file = long_path_crate(&dir);
    assert!(format!("longpath-0.1.0/{file}").len() > 100);
    s.cargo_ok(&dir, &["package", "--no-verify", "--allow-dirty"]);
    let packaged = s.path().join("target/package/longpath-0.1.0.crate");
    let bytes = fs::read(&packaged).unwrap();
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut tar).unwrap();
    assert!(
        tar.windows(13).any(|w| w == b"././@LongLink"),
        "cargo did not write a GNU long name"
    );

    let srv = s.serve(&[]);
    let (st, body) = raw_publish(
        srv.addr(),
        &s.token(),
        &publish_body(
            &publish_json("longpath", "0.1.0", serde_json::json!({})),
            &bytes,
        ),
    );
    assert_eq!(st, 200, "{body}");
    drop(srv);

    let cli = Sandbox::new();
    let url = format!("file://{}", cli.reg().display());
    cli.palletizer_ok(&["init", "--url", &url]);
    cli.palletizer_ok(&["add", packaged.to_str().unwrap()]);
}
