//! Download counts: a known number of crate file downloads shows on the crate and version
//! pages and in `GET /api/v1/crates/{name}` as crates.io names them, and survives
//! restarts (the server writes the counts at shutdown, and once a minute).

mod support;

use palletizer::registry::testing::{publish_body, simple_crate};
use serde_json::Value;
use support::{get_bytes, meta, raw_publish, Sandbox, ServerProc};

fn publish(srv: &ServerProc, token: &str, vers: &str) {
    let body = publish_body(
        &meta("leaf", vers, serde_json::json!([])),
        &simple_crate("leaf", vers, &[]),
    );
    assert_eq!(raw_publish(srv.addr(), token, &body).0, 200);
}

fn download(srv: &ServerProc, vers: &str, times: usize) {
    for _ in 0..times {
        let path = format!("/crates/leaf/leaf-{vers}.crate");
        let (status, bytes) = get_bytes(srv.addr(), &path).unwrap();
        assert_eq!(status, 200);
        assert!(!bytes.is_empty());
    }
}

/// Stops the server the way a service manager does, and waits for it to exit.
fn stop(mut srv: ServerProc) {
    srv.signal(libc::SIGTERM);
    assert!(srv.wait_exit(30).is_some(), "the server did not stop");
}

fn crate_json(srv: &ServerProc) -> Value {
    let (status, body) = get_bytes(srv.addr(), "/api/v1/crates/leaf").unwrap();
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap()
}

fn page(srv: &ServerProc, path: &str) -> String {
    let (status, body) = get_bytes(srv.addr(), path).unwrap();
    assert_eq!(status, 200, "{path}");
    String::from_utf8(body).unwrap()
}

/// The API's counts: (crate downloads, crate recent downloads, [(version, downloads)]).
fn counts(srv: &ServerProc) -> (Value, Value, Vec<(String, Value)>) {
    let json = crate_json(srv);
    let versions = json["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["num"].as_str().unwrap().to_owned(),
                v["downloads"].clone(),
            )
        })
        .collect();
    (
        json["crate"]["downloads"].clone(),
        json["crate"]["recent_downloads"].clone(),
        versions,
    )
}

fn one_raw(addr: &str, request: &str) -> u16 {
    support::status_of(&support::send_until_close(addr, request.as_bytes()))
}

#[test]
fn download_counts_show_on_the_pages_and_the_api_across_restarts() {
    let s = Sandbox::new();
    let srv = s.serve(&[]);
    let token = s.token();
    publish(&srv, &token, "1.0.0");
    publish(&srv, &token, "2.0.0");
    let none = counts(&srv);
    assert_eq!((none.0.as_u64(), none.1.as_u64()), (Some(0), Some(0)));
    download(&srv, "1.0.0", 3);
    download(&srv, "2.0.0", 1);
    // Not downloads: a HEAD, a 404, a revalidation answered 304.
    let head = "HEAD /crates/leaf/leaf-1.0.0.crate HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    assert_eq!(one_raw(srv.addr(), head), 200);
    assert_eq!(
        get_bytes(srv.addr(), "/crates/leaf/leaf-9.0.0.crate")
            .unwrap()
            .0,
        404
    );
    let since = "GET /crates/leaf/leaf-1.0.0.crate HTTP/1.1\r\nHost: localhost\r\n\
                 If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\nConnection: close\r\n\r\n";
    assert_eq!(one_raw(srv.addr(), since), 304);
    stop(srv);
    assert!(s.reg().join("downloads/leaf.json").is_file());

    let srv = s.serve(&[]);
    let (total, recent, versions) = counts(&srv);
    assert_eq!((total, recent), (4.into(), 4.into()));
    assert_eq!(
        versions,
        [
            ("2.0.0".to_owned(), 1.into()),
            ("1.0.0".to_owned(), 3.into())
        ]
    );
    let crate_page = page(&srv, "/crates/leaf");
    assert!(
        crate_page
            .contains("<dt>Downloads</dt><dd>4 <span class=\"muted\">(4 in the last 90 days)"),
        "{crate_page}"
    );
    assert!(
        crate_page.contains("<dt>Of this version</dt><dd>1 "),
        "{crate_page}"
    );
    let version_page = page(&srv, "/crates/leaf/1.0.0");
    assert!(
        version_page.contains("<dt>Of this version</dt><dd>3 "),
        "{version_page}"
    );

    // More after the restart add to what was kept.
    download(&srv, "1.0.0", 2);
    stop(srv);
    let srv = s.serve(&[]);
    let (total, _, versions) = counts(&srv);
    assert_eq!(total, Value::from(6));
    assert_eq!(versions[1], ("1.0.0".to_owned(), 5.into()));
    // A backup carries them.
    let restored = s.backup_and_restore();
    let kept = std::fs::read_to_string(restored.join("downloads/leaf.json")).unwrap();
    assert!(kept.contains("\"total\":5"), "{kept}");
    let log = std::fs::read_to_string(restored.join("audit.jsonl")).unwrap();
    let last: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(
        (&last["action"], &last["outcome"]),
        (&"restore".into(), &"ok".into())
    );
    assert!(
        log.contains("\"action\":\"publish\""),
        "the log came along: {log}"
    );
    drop(srv);
}
