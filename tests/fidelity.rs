//! Fidelity to crates.io: `palletizer add` of real crates.io crate files writes crates.io's
//! own index lines (as crates.io recorded each version at its publish time), takes what
//! crates.io serves (a manifest written twice, `*` requirements, more than the caps of a new
//! publish), and the search API pages like crates.io's.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use palletizer::registry::testing::{crate_bytes, file, publish_body};
use palletizer::registry::CRATES_IO_INDEX;
use support::{get_bytes, meta, raw_publish, show, snapshot, Sandbox};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crates-io")
}

/// crates.io's lines for the fixture crate files, each with its crate file.
fn crates_io_lines() -> Vec<(String, PathBuf)> {
    let text = fs::read_to_string(fixtures().join("index-lines.jsonl")).unwrap();
    let lines: Vec<(String, PathBuf)> = text
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let file = format!("{}-{}.crate", v["name"].as_str().unwrap(), v["vers"]);
            let file = fixtures().join(file.replace('"', ""));
            assert!(file.exists(), "{}", file.display());
            (line.to_owned(), file)
        })
        .collect();
    assert_eq!(lines.len(), 11);
    lines
}

/// Whether crates.io recorded the line as an add without `--pubtime` (at the time of the
/// add) records it: its requirements printed by semver 1 (published since July 2021; none of
/// these lines has a target whose manifest spelling differs from cargo's before October 2023).
fn recorded_as_today(line: &serde_json::Value) -> bool {
    line["pubtime"].as_str().unwrap() >= "2021-07-29"
}

fn index_path(name: &str) -> String {
    match name.len() {
        1 | 2 => format!("{}/{name}", name.len()),
        3 => format!("3/{}/{name}", &name[..1]),
        _ => format!("{}/{}/{name}", &name[..2], &name[2..4]),
    }
}

/// The raw line of `name` `vers` in the registry's index.
fn raw_line(s: &Sandbox, name: &str, vers: &str) -> String {
    let text = fs::read_to_string(s.reg().join("index").join(index_path(name))).unwrap();
    let want = format!(r#""vers":"{vers}""#);
    text.lines()
        .find(|l| l.contains(&want))
        .unwrap_or_else(|| panic!("no {name} {vers} in:\n{text}"))
        .to_owned()
}

fn init(s: &Sandbox) {
    let url = format!("file://{}", s.reg().display());
    s.palletizer_ok(&["init", "--url", &url]);
}

/// A registry standing in for crates.io (`index-aliases` names crates.io's index), so that
/// dependencies on crates.io are dependencies on this registry, written as crates.io does.
fn init_mirror(s: &Sandbox) {
    init(s);
    let settings = s.reg().join("palletizer.toml");
    let text = fs::read_to_string(&settings).unwrap();
    let text = text.replace(
        "index-aliases = []",
        &format!("index-aliases = [\"{CRATES_IO_INDEX}\"]"),
    );
    assert!(text.contains(CRATES_IO_INDEX));
    fs::write(&settings, text).unwrap();
}

#[test]
fn palletizer_add_writes_crates_ios_index_lines() {
    let s = Sandbox::new();
    init_mirror(&s);
    // Every line compared before any failure, so that one run names all that differ.
    let mut differ = Vec::new();
    for (want, file) in crates_io_lines() {
        let v: serde_json::Value = serde_json::from_str(&want).unwrap();
        let (name, vers) = (v["name"].as_str().unwrap(), v["vers"].as_str().unwrap());
        let pubtime = v["pubtime"].as_str().unwrap();
        let out = s.palletizer_ok(&["add", "--pubtime", pubtime, file.to_str().unwrap()]);
        assert_eq!(out.trim(), format!("Added {name} {vers}"));
        // Our keys are in crates.io's order, so the bytes are the same, not just the JSON.
        let got = raw_line(&s, name, vers);
        if got != want {
            differ.push(format!(
                "{name} {vers}:\n  ours:      {got}\n  crates.io: {want}"
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

#[test]
fn a_private_registry_names_crates_io_in_the_same_lines() {
    // The default registry: crates.io is another (allowed) registry, so each dependency says
    // so; that and the time of the add (no `--pubtime`) are the only differences in the
    // lines crates.io recorded as it does today. (Older lines hold what it recorded then.)
    let s = Sandbox::new();
    init(&s);
    let lines = crates_io_lines();
    let recent: Vec<_> = lines
        .iter()
        .filter(|(l, _)| recorded_as_today(&serde_json::from_str(l).unwrap()))
        .collect();
    assert_eq!(recent.len(), 5);
    for (want, file) in recent {
        let mut want: serde_json::Value = serde_json::from_str(want).unwrap();
        let (name, vers) = (want["name"].clone(), want["vers"].clone());
        s.palletizer_ok(&["add", file.to_str().unwrap()]);
        let mut got: serde_json::Value = serde_json::from_str(&raw_line(
            &s,
            name.as_str().unwrap(),
            vers.as_str().unwrap(),
        ))
        .unwrap();
        for d in got["deps"].as_array_mut().unwrap() {
            let d = d.as_object_mut().unwrap();
            assert_eq!(d.remove("registry").unwrap(), CRATES_IO_INDEX, "{name}");
        }
        let now = got.as_object_mut().unwrap().remove("pubtime").unwrap();
        let was = want.as_object_mut().unwrap().remove("pubtime").unwrap();
        assert_ne!(now, was, "{name}: no --pubtime, the time of the add");
        assert_eq!(now.as_str().unwrap().len(), 20, "{now}");
        assert_eq!(got, want, "{name} {vers}");
    }
}

#[test]
fn a_bad_pubtime_is_one_line_and_adds_nothing() {
    let s = Sandbox::new();
    init(&s);
    let before = snapshot(&s.reg());
    let (_, file) = crates_io_lines().remove(0);
    for bad in [
        "2024-05-01",
        "2024-05-01T12:30:00+02:00",
        "2023-02-29T00:00:00Z",
        "",
    ] {
        let out = s.palletizer(&["add", "--pubtime", bad, file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad}: {}", show(&out));
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("invalid publish time") && stderr.contains("YYYY-MM-DDTHH:MM:SSZ"),
            "{stderr}"
        );
    }
    let out = s.palletizer(&["list", "--pubtime", "2024-05-01T12:30:00Z"]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        snapshot(&s.reg()) == before,
        "a refused add changed the registry"
    );
}

const MANIFEST: &str = "[package]\nname = \"twice\"\nversion = \"0.1.0\"\nedition = \"2015\"\n\
                        description = \"written twice\"\nlicense = \"MIT\"\n";

fn add_bytes(s: &Sandbox, file_name: &str, bytes: &[u8]) -> std::process::Output {
    let dir = s.path().join("files");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(file_name);
    fs::write(&path, bytes).unwrap();
    s.palletizer(&["add", path.to_str().unwrap()])
}

#[test]
fn a_manifest_written_twice_alike_is_added() {
    let s = Sandbox::new();
    init(&s);
    let krate = crate_bytes(&[
        file("twice-0.1.0/Cargo.toml", MANIFEST.as_bytes()),
        file("twice-0.1.0/src/lib.rs", b""),
        file("twice-0.1.0/Cargo.toml", MANIFEST.as_bytes()),
    ]);
    let out = add_bytes(&s, "twice-0.1.0.crate", &krate);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(s.index_line("tw/ic/twice", "0.1.0")["name"], "twice");
}

#[test]
fn a_manifest_written_twice_differently_is_refused() {
    let s = Sandbox::new();
    init(&s);
    let before = snapshot(&s.reg());
    let other = MANIFEST.replace("edition = \"2015\"", "edition = \"2018\"\nbuild = \"x.rs\"");
    let krate = crate_bytes(&[
        file("twice-0.1.0/Cargo.toml", MANIFEST.as_bytes()),
        file("twice-0.1.0/Cargo.toml", other.as_bytes()),
    ]);
    let out = add_bytes(&s, "twice-0.1.0.crate", &krate);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("two different `twice-0.1.0/Cargo.toml` entries"),
        "{stderr}"
    );
    assert!(
        snapshot(&s.reg()) == before,
        "a refused add changed the registry"
    );
}

/// A crate as crates.io accepted them before 2016: a `*` requirement on a crates.io crate.
fn wildcard_crate() -> Vec<u8> {
    let manifest =
        "[package]\nname = \"starry\"\nversion = \"0.5.0\"\ndescription = \"old\"\nlicense = \"MIT\"\n\n\
         [dependencies]\nlibc = \"*\"\n";
    crate_bytes(&[
        file("starry-0.5.0/Cargo.toml", manifest.as_bytes()),
        file("starry-0.5.0/src/lib.rs", b""),
    ])
}

#[test]
fn a_wildcard_requirement_is_added_but_not_published() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    let deps = serde_json::json!([{
        "name": "libc", "version_req": "*", "features": [], "optional": false,
        "default_features": true, "target": null, "kind": "normal",
        "registry": CRATES_IO_INDEX
    }]);
    let body = publish_body(&meta("starry", "0.5.0", deps), &wildcard_crate());
    let before = snapshot(&s.reg().join("index"));
    let (status, answer) = raw_publish(srv.addr(), &s.token(), &body);
    assert_eq!(status, 400, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let detail = answer["errors"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("wildcard (`*`) dependency constraints are not allowed")
            && detail.contains("libc"),
        "{detail}"
    );
    assert!(snapshot(&s.reg().join("index")) == before);
    drop(srv);

    let out = add_bytes(&s, "starry-0.5.0.crate", &wildcard_crate());
    assert!(out.status.success(), "{}", show(&out));
    let line = s.index_line("st/ar/starry", "0.5.0");
    assert_eq!(line["deps"][0]["name"], "libc");
    assert_eq!(line["deps"][0]["req"], "*");
}

/// A crate over every cap crates.io puts on a new publish: 7 keywords (strsim 0.1.0, on
/// crates.io, has as many), 6 categories, 600 dependencies on crates.io, 301 features.
fn roomy_crate(vers: &str) -> Vec<u8> {
    let mut manifest = format!(
        "[package]\nname = \"roomy\"\nversion = \"{vers}\"\ndescription = \"big\"\n\
         license = \"MIT\"\nkeywords = [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\", \"g\"]\n\
         categories = [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\"]\n\n[dependencies]\n"
    );
    for i in 0..600 {
        manifest.push_str(&format!("dep{i} = \"1\"\n"));
    }
    manifest.push_str("\n[features]\n");
    for i in 0..301 {
        manifest.push_str(&format!("f{i} = []\n"));
    }
    let top = format!("roomy-{vers}");
    crate_bytes(&[
        file(&format!("{top}/Cargo.toml"), manifest.as_bytes()),
        file(&format!("{top}/src/lib.rs"), b""),
    ])
}

/// The caps of a new publish are settings, named in the refusal cargo prints; `add` takes a
/// crate file over them, since crates.io applies them to new publishes only.
#[test]
fn a_crate_over_the_publish_caps_is_added_and_published_once_the_setting_allows_it() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    let mut json: serde_json::Value =
        serde_json::from_slice(&meta("roomy", "1.0.0", serde_json::json!([]))).unwrap();
    json["keywords"] = serde_json::json!(["a", "b", "c", "d", "e", "f", "g"]);
    let body = publish_body(&serde_json::to_vec(&json).unwrap(), &roomy_crate("1.0.0"));
    let before = snapshot(&s.reg().join("index"));
    let (status, answer) = raw_publish(srv.addr(), &s.token(), &body);
    assert_eq!(status, 400, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        answer["errors"][0]["detail"],
        "too many keywords: 7, more than the limit of 5 (this registry's `max-keywords`; an \
         admin can raise it in palletizer.toml)"
    );
    assert!(snapshot(&s.reg().join("index")) == before);
    drop(srv);

    let out = add_bytes(&s, "roomy-2.0.0.crate", &roomy_crate("2.0.0"));
    assert!(out.status.success(), "{}", show(&out));
    let line = s.index_line("ro/om/roomy", "2.0.0");
    assert_eq!(line["deps"].as_array().unwrap().len(), 600);
    assert_eq!(line["features"].as_object().unwrap().len(), 301);

    let settings = s.reg().join("palletizer.toml");
    let text = fs::read_to_string(&settings).unwrap();
    assert!(text.contains("max-keywords = 5\n"), "{text}");
    fs::write(
        &settings,
        text.replace("max-keywords = 5\n", "max-keywords = 7\n"),
    )
    .unwrap();
    let srv = s.serve(&[]);
    let (status, answer) = raw_publish(srv.addr(), &s.token(), &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(s.index_line("ro/om/roomy", "1.0.0")["name"], "roomy");
}

fn search(addr: &str, query: &str) -> (u16, serde_json::Value) {
    let (status, body) = get_bytes(addr, &format!("/api/v1/crates?{query}")).unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

fn names(v: &serde_json::Value) -> Vec<String> {
    v["crates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn search_page_two_is_the_second_page() {
    let s = Sandbox::new();
    // The server's zero-config start creates the registry; the CLI adds beside it.
    let srv = s.serve(&[]);
    let dir = s.path().join("files");
    fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    // `pager` itself ranks first (exact name), `pager-*` next (prefix), the rest last.
    for name in [
        "pager", "pager-b", "pager-a", "a-pager", "z-pager", "m-pager", "other",
    ] {
        let krate = palletizer::registry::testing::simple_crate(name, "1.0.0", &[]);
        let path = dir.join(format!("{name}-1.0.0.crate"));
        fs::write(&path, krate).unwrap();
        files.push(path.to_str().unwrap().to_owned());
    }
    let mut args = vec!["add"];
    args.extend(files.iter().map(String::as_str));
    s.palletizer_ok(&args);

    let (status, all) = search(srv.addr(), "q=pager&per_page=10");
    assert_eq!(status, 200);
    let all = names(&all);
    assert_eq!(
        all,
        ["pager", "pager-a", "pager-b", "a-pager", "m-pager", "z-pager"]
    );
    let mut paged = Vec::new();
    for page in 1..=4 {
        let (status, v) = search(srv.addr(), &format!("q=pager&per_page=2&page={page}"));
        assert_eq!(status, 200);
        assert_eq!(v["meta"]["total"], 6, "page {page}");
        let got = names(&v);
        let want: Vec<String> = all.iter().skip((page - 1) * 2).take(2).cloned().collect();
        assert_eq!(got, want, "page {page}");
        paged.extend(got);
    }
    assert_eq!(paged, all);
    for bad in ["page=0", "page=two", "page=-1", "page="] {
        let (status, v) = search(srv.addr(), &format!("q=pager&{bad}"));
        assert_eq!(status, 400, "{bad}");
        let detail = v["errors"][0]["detail"].as_str().unwrap();
        assert!(
            detail.contains("page must be a positive number"),
            "{detail}"
        );
    }
    let (status, v) = search(srv.addr(), "q=pager&per_page=2&page=18446744073709551615");
    assert_eq!(status, 200);
    assert!(names(&v).is_empty());
    assert_eq!(v["meta"]["total"], 6);
}
