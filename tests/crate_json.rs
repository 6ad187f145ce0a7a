//! `GET /api/v1/crates/{name}`: crates.io's crate JSON, for crates the real cargo published.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use support::{read_one, Sandbox};

fn get(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    read_one(&mut c)
}

/// Every field of `ours` is a field of `theirs` with the same JSON type (`null` stands for
/// any type on either side), recursively through objects and the first array element.
fn same_names_and_types(ours: &Value, theirs: &Value, at: &str) {
    match (ours, theirs) {
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Object(o), Value::Object(t)) => {
            for (k, v) in o {
                let Some(tv) = t.get(k) else {
                    panic!("{at}.{k}: crates.io has no such field");
                };
                same_names_and_types(v, tv, &format!("{at}.{k}"));
            }
        }
        (Value::Array(o), Value::Array(t)) => {
            if let (Some(o), Some(t)) = (o.first(), t.first()) {
                same_names_and_types(o, t, &format!("{at}[0]"));
            }
        }
        (o, t) => assert_eq!(
            std::mem::discriminant(o),
            std::mem::discriminant(t),
            "{at}: {o} where crates.io has {t}"
        ),
    }
}

#[test]
fn crate_json_as_crates_io_answers_it() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    s.cargo_config(&format!(
        "[registries.local]\nindex = \"sparse+{}/index/\"\n[net]\nretry = 0\n",
        srv.url()
    ));
    let publish = [
        "publish",
        "--registry",
        "local",
        "--allow-dirty",
        "--no-verify",
    ];
    for vers in ["0.1.0", "0.2.0-rc.1", "0.1.1"] {
        s.cargo_as(&s.test_crate("leaf", Some(vers)), &publish, &s.token());
    }
    let yank = ["yank", "--registry", "local", "leaf@0.1.1"];
    s.cargo_as(&s.test_crate("leaf", None), &yank, &s.token());

    let (status, body) = get(srv.addr(), "GET", "/api/v1/crates/leaf");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let k = &v["crate"];
    assert_eq!(k["name"], "leaf");
    // 0.1.1 is yanked; the pre-release is the highest left, and no stable is higher than 0.1.0.
    assert_eq!(k["max_version"], "0.2.0-rc.1");
    assert_eq!(k["max_stable_version"], "0.1.0");
    assert_eq!(k["newest_version"], "0.1.1");
    assert_eq!(k["description"], "A leaf crate with no dependencies");
    let versions = v["versions"].as_array().unwrap();
    let nums: Vec<&str> = versions
        .iter()
        .map(|v| v["num"].as_str().unwrap())
        .collect();
    assert_eq!(nums, ["0.2.0-rc.1", "0.1.1", "0.1.0"]);
    let yanked: Vec<bool> = versions
        .iter()
        .map(|v| v["yanked"].as_bool().unwrap())
        .collect();
    assert_eq!(yanked, [false, true, false]);
    for ver in versions {
        let num = ver["num"].as_str().unwrap();
        assert_eq!(ver["license"], "MIT", "{num}");
        let file = s.reg().join(format!("crates/leaf/leaf-{num}.crate"));
        let size = std::fs::metadata(&file).map(|m| m.len()).ok();
        if let Some(size) = size {
            assert_eq!(ver["crate_size"].as_u64(), Some(size), "{num}");
        }
        assert!(ver["crate_size"].as_u64().is_some_and(|n| n > 0), "{num}");
        let line = s.index_line("le/af/leaf", num);
        assert_eq!(ver["checksum"], line["cksum"], "{num}");
        let created = ver["created_at"].as_str().unwrap();
        assert!(
            humantime::parse_rfc3339(created).is_ok(),
            "{num}: created_at {created} is no RFC 3339 time"
        );
    }
    assert_eq!(
        k["updated_at"], versions[1]["created_at"],
        "updated at the last publish"
    );
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/crates-io-crate.json"
        ))
        .unwrap(),
    )
    .unwrap();
    same_names_and_types(&v, &fixture, "");

    // The name is found whatever its spelling; a HEAD has no body.
    let (status, _) = get(srv.addr(), "GET", "/api/v1/crates/LEAF");
    assert_eq!(status, 200);
    let mut c = TcpStream::connect(srv.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "HEAD /api/v1/crates/leaf HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    std::io::Read::read_to_string(&mut c, &mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200 "), "{raw}");
    assert!(
        raw.ends_with("\r\n\r\n"),
        "a HEAD answer with a body: {raw}"
    );
    for (method, path, want) in [
        ("GET", "/api/v1/crates/nope", 404),
        ("GET", "/api/v1/crates/no%20pe", 400),
        ("GET", "/api/v1/crates/%FF", 400),
        ("PUT", "/api/v1/crates/leaf", 405),
        ("DELETE", "/api/v1/crates/leaf", 405),
    ] {
        let (status, body) = get(srv.addr(), method, path);
        assert_eq!(status, want, "{method} {path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["errors"][0]["detail"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{method} {path}: {body}"
        );
    }
}
