//! The audit log end to end: every kind of change, through the real cargo with a token and
//! through the CLI, leaves its line with its actor; refused writes leave refusal lines;
//! `palletizer audit` filters and prints them, and refuses bad input in one line.
//! (The crash loop in tests/reliability.rs checks that no acknowledged publish is ever
//! without its line.)

mod support;

use std::time::{Duration, Instant};

use palletizer::registry::testing::{publish_body, simple_crate};
use serde_json::Value;
use support::{meta, raw_publish, send_until_close, show, Sandbox, ServerProc, PUBLISH};

/// Every record `palletizer audit --json ARGS` prints.
fn audit(s: &Sandbox, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["audit", "--json"];
    all.extend_from_slice(args);
    s.palletizer_ok(&all)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The newest record `pred` accepts, waiting a few seconds for it (refusals at the server
/// reach the log within a second).
fn wait_record(s: &Sandbox, pred: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(r) = audit(s, &[]).into_iter().rev().find(&pred) {
            return r;
        }
        assert!(
            Instant::now() < until,
            "no such line in:\n{:#?}",
            audit(s, &[])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `METHOD path` with `Authorization: token`: the status.
fn status(addr: &str, method: &str, path: &str, token: &str) -> u16 {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {token}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    support::status_of(&send_until_close(addr, request.as_bytes()))
}

/// Waits until the server has loaded a token the CLI just made: `/metrics` answers a known
/// token that is not an admin's with 403, an unknown one with 401 (and it is no write, so
/// it leaves no audit line).
fn wait_known(srv: &ServerProc, token: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    while status(srv.addr(), "GET", "/metrics", token) == 401 {
        assert!(Instant::now() < until, "the server never loaded the token");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn setup() -> (Sandbox, ServerProc) {
    let s = Sandbox::new();
    let srv = s.serve_for_cargo();
    (s, srv)
}

/// `cargo ARGS` in `dir` as `token`.
fn cargo(s: &Sandbox, dir: &std::path::Path, args: &[&str], token: &str) -> std::process::Output {
    s.cargo_cmd(dir, args)
        .env("CARGO_REGISTRIES_LOCAL_TOKEN", token)
        .output()
        .unwrap()
}

fn new_token(s: &Sandbox, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    s.palletizer_ok(&all).trim().to_owned()
}

/// The one record of `action` (on `krate`, if given): it must be there, once.
fn one<'a>(records: &'a [Value], action: &str, krate: Option<&str>) -> &'a Value {
    let found: Vec<&Value> = records
        .iter()
        .filter(|r| r["action"] == action && krate.is_none_or(|k| r["crate"] == k))
        .collect();
    assert_eq!(found.len(), 1, "{action} {krate:?}: {found:#?}");
    found[0]
}

#[test]
fn every_change_leaves_its_line_with_its_actor_through_cargo_and_the_cli() {
    let (s, srv) = setup();
    let admin = s.token();
    let leaf = s.test_crate("leaf", None);
    let out = cargo(&s, &leaf, &PUBLISH, &admin);
    assert!(out.status.success(), "{}", show(&out));
    s.palletizer_ok(&["user", "add", "bob"]);
    s.palletizer_ok(&["user", "add", "carol"]);
    for args in [
        &["yank", "--registry", "local", "leaf@0.1.0"][..],
        &["yank", "--undo", "--registry", "local", "leaf@0.1.0"],
        &["owner", "--registry", "local", "--add", "bob", "leaf"],
    ] {
        let out = cargo(&s, &leaf, args, &admin);
        assert!(out.status.success(), "cargo {args:?}: {}", show(&out));
    }
    let bob = new_token(&s, &["--user", "bob", "--scope", "change-owners"]);
    wait_known(&srv, &bob);
    let out = cargo(
        &s,
        &leaf,
        &["owner", "--registry", "local", "--remove", "admin", "leaf"],
        &bob,
    );
    assert!(out.status.success(), "{}", show(&out));
    s.palletizer_ok(&["owner", "add", "leaf", "carol"]);
    s.palletizer_ok(&["owner", "remove", "leaf", "carol"]);
    s.palletizer_ok(&["yank", "leaf", "0.1.0"]);
    s.palletizer_ok(&["unyank", "leaf", "0.1.0"]);
    s.palletizer_ok(&["token", "revoke", "2"]);
    s.palletizer_ok(&["user", "remove", "bob"]);
    s.palletizer_ok(&["delete", "leaf", "0.1.0"]);
    s.palletizer_ok(&["access", "private"]);
    s.palletizer_ok(&["squash-index"]);

    let records = audit(&s, &[]);
    let by_cargo = |action: &str| {
        let r = one(&records, action, Some("leaf"));
        assert_eq!(r["outcome"], "ok", "{r}");
        assert_eq!(r["actor"]["kind"], "token", "{r}");
        assert_eq!(r["peer"], "127.0.0.1", "{r}");
        r.clone()
    };
    let p = by_cargo("publish");
    assert_eq!(
        (&p["version"], &p["actor"]["user"]),
        (&"0.1.0".into(), &"admin".into())
    );
    assert_eq!(p["actor"]["token"], 1);
    assert_eq!(p["changes"][0]["change"], "published");
    assert!(p["time"].as_str().unwrap().ends_with('Z'));
    let yanks: Vec<&Value> = records
        .iter()
        .filter(|r| r["action"] == "yank" || r["action"] == "unyank")
        .collect();
    let kinds: Vec<(&str, &str)> = yanks
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["actor"]["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("yank", "token"),
            ("unyank", "token"),
            ("yank", "cli"),
            ("unyank", "cli")
        ]
    );
    let owners: Vec<(&str, &str, &str)> = records
        .iter()
        .filter(|r| r["action"].as_str().unwrap().starts_with("owner_"))
        .map(|r| {
            let who = r["actor"]["user"].as_str().unwrap();
            let kind = r["actor"]["kind"].as_str().unwrap();
            (
                r["action"].as_str().unwrap(),
                kind,
                if kind == "cli" { "-" } else { who },
            )
        })
        .collect();
    assert_eq!(
        owners,
        [
            ("owner_add", "token", "admin"),
            ("owner_remove", "token", "bob"),
            ("owner_add", "cli", "-"),
            ("owner_remove", "cli", "-"),
        ]
    );
    let cli = |action: &str| {
        let r = one(&records, action, None);
        assert_eq!(r["actor"]["kind"], "cli", "{r}");
        assert!(!r["actor"]["user"].as_str().unwrap().is_empty(), "{r}");
        assert!(r.get("peer").is_none(), "{r}");
        assert_eq!(r["outcome"], "ok", "{r}");
        r.clone()
    };
    let added: Vec<&Value> = records
        .iter()
        .filter(|r| r["action"] == "user_add")
        .collect();
    assert_eq!(added.len(), 2, "{added:#?}");
    assert_eq!(
        (&added[0]["user"], &added[1]["user"]),
        (&"bob".into(), &"carol".into())
    );
    assert!(added
        .iter()
        .all(|r| r["actor"]["kind"] == "cli" && r["outcome"] == "ok"));
    let made = cli("token_create");
    assert_eq!((&made["user"], &made["token"]), (&"bob".into(), &2.into()));
    assert_eq!(cli("token_revoke")["token"], 2);
    assert_eq!(cli("user_remove")["user"], "bob");
    assert_eq!(cli("delete")["version"], "0.1.0");
    assert_eq!(cli("access")["access"], "private");
    cli("squash_index");
    let first = one(&records, "first_admin", None);
    assert_eq!(first["actor"]["kind"], "server");
    assert!(records.iter().all(|r| r["outcome"] != "started"));

    // Secrets never reach the log, whatever it holds.
    let raw = std::fs::read_to_string(s.reg().join("audit.jsonl")).unwrap();
    for secret in [&admin, &bob] {
        assert!(!raw.contains(&secret[4..]), "a token in the audit log");
    }
    // The table: a header and one row per change.
    let table = s.palletizer_ok(&["audit", "--crate", "LEAF"]);
    let rows: Vec<&str> = table.lines().collect();
    assert!(rows[0].starts_with("TIME"), "{table}");
    assert!(
        rows.iter().any(|r| r.contains("publish")
            && r.contains("admin (token 1)")
            && r.contains("127.0.0.1")
            && r.ends_with("ok")),
        "{table}"
    );
    let leaf_lines = records.iter().filter(|r| r["crate"] == "leaf").count();
    assert_eq!(rows.len(), 1 + leaf_lines, "{table}");
}

#[test]
fn refused_writes_leave_refusal_lines_and_the_reader_filters_them() {
    let (s, srv) = setup();
    let admin = s.token();
    let body = publish_body(
        &meta("leaf", "0.1.0", serde_json::json!([])),
        &simple_crate("leaf", "0.1.0", &[]),
    );
    assert_eq!(raw_publish(srv.addr(), &admin, &body).0, 200);
    s.palletizer_ok(&["user", "add", "bob"]);
    let bob = new_token(&s, &["--user", "bob"]);
    wait_known(&srv, &bob);

    // Refused under the registry lock: bob owns no leaf (the real cargo, with his token).
    let leaf = s.test_crate("leaf", Some("0.1.1"));
    let out = cargo(&s, &leaf, &PUBLISH, &bob);
    assert!(!out.status.success(), "{}", show(&out));
    let r = wait_record(&s, |r| {
        r["action"] == "publish" && r["outcome"] == "refused"
    });
    assert_eq!(
        (&r["actor"]["user"], &r["version"]),
        (&"bob".into(), &"0.1.1".into())
    );
    assert_eq!(r["crate"], "leaf");
    assert!(
        r["reason"].as_str().unwrap().contains("not an owner"),
        "{r}"
    );
    assert_eq!(r["peer"], "127.0.0.1");

    // Refused at the door: a token without the scope (403), an unknown one (401).
    let yank_only = new_token(&s, &["--user", "bob", "--scope", "yank"]);
    wait_known(&srv, &yank_only);
    let other = publish_body(
        &meta("other", "1.0.0", serde_json::json!([])),
        &simple_crate("other", "1.0.0", &[]),
    );
    assert_eq!(raw_publish(srv.addr(), &yank_only, &other).0, 403);
    let r = wait_record(&s, |r| r["action"] == "publish" && r["reason"] == "scope");
    assert_eq!(r["outcome"], "refused", "{r}");
    assert_eq!(r["actor"]["kind"], "token", "{r}");
    assert_eq!(
        (&r["actor"]["user"], &r["actor"]["token"]),
        (&"bob".into(), &3.into())
    );
    let unknown = format!("pal_{}", "0".repeat(64));
    assert_eq!(
        status(
            srv.addr(),
            "DELETE",
            "/api/v1/crates/leaf/0.1.0/yank",
            &unknown
        ),
        401
    );
    let r = wait_record(&s, |r| r["action"] == "yank" && r["outcome"] == "refused");
    assert_eq!(r["crate"], "leaf");
    assert_eq!(
        (&r["actor"]["kind"], &r["reason"]),
        (&"anonymous".into(), &"unknown".into())
    );
    assert_eq!(r["version"], "0.1.0");
    // A read refused is no write: not in the log.
    let before = audit(&s, &[]).len();
    assert_eq!(status(srv.addr(), "GET", "/metrics", &unknown), 401);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(audit(&s, &[]).len(), before);

    // Filters.
    let bobs = audit(&s, &["--user", "bob"]);
    assert_eq!(bobs.len(), 2, "{bobs:#?}");
    assert!(bobs.iter().all(|r| r["actor"]["user"] == "bob"));
    assert!(audit(&s, &["--crate", "LEAF"])
        .iter()
        .all(|r| r["crate"] == "leaf"));
    assert_eq!(audit(&s, &["--since", "1d"]).len(), audit(&s, &[]).len());
    assert!(audit(&s, &["--since", "2999-01-01"]).is_empty());
    for bad in [
        &["audit", "--since", "last week"][..],
        &["audit", "--crate", "no/such"],
        &["audit", "--user"],
        &["audit", "extra"],
    ] {
        let out = s.palletizer(bad);
        assert!(!out.status.success(), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{bad:?}: {err}");
        assert!(err.starts_with("error: "), "{bad:?}: {err}");
    }
}

/// `audit-max-bytes` bounds the log: a flood of refused writes rotates it and never grows
/// the two files past about twice the cap.
#[test]
fn a_flood_of_refused_writes_stays_within_the_cap() {
    let s = Sandbox::new();
    s.palletizer_ok(&["init", "--url", "http://127.0.0.1:1"]);
    let settings = s.reg().join("palletizer.toml");
    let text = std::fs::read_to_string(&settings).unwrap();
    std::fs::write(
        &settings,
        text.replace("audit-max-bytes = 8388608", "audit-max-bytes = 8192"),
    )
    .unwrap();
    let srv = s.serve(&[]);
    // No token at all: refused (401) without counting as a failed login, so the
    // auth-failure limit does not stop the flood first.
    for _round in 0..4 {
        for _ in 0..100 {
            status(srv.addr(), "DELETE", "/api/v1/crates/leaf/1.0.0/yank", "");
        }
        // One batch a second: up to 64 lines, the rest counted in one.
        std::thread::sleep(Duration::from_millis(1200));
    }
    let dropped = wait_record(&s, |r| r["action"] == "refusals_dropped");
    assert!(dropped["reason"]
        .as_str()
        .unwrap()
        .contains("more refused writes"));
    let size = |name: &str| std::fs::metadata(s.reg().join(name)).map_or(0, |m| m.len());
    assert!(size("audit.jsonl.1") > 0, "never rotated");
    for name in ["audit.jsonl", "audit.jsonl.1"] {
        assert!(size(name) <= 8192 + 512, "{name}: {}", size(name));
    }
    drop(srv);
    let bad = std::fs::read_to_string(&settings)
        .unwrap()
        .replace("audit-max-bytes = 8192", "audit-max-bytes = 10");
    std::fs::write(&settings, bad).unwrap();
    let out = s.palletizer(&["yank", "leaf", "1.0.0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("audit-max-bytes"),
        "{err}"
    );
}
