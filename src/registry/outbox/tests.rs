//! The outbox's tests: what a change queues, the bound, temp files.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::registry::auth::scratch_registry;
use crate::registry::publish::tarball::testing::simple_crate;
use crate::registry::{Actor, Command};

/// Appends `extra` to the registry's `palletizer.toml`, by hand.
fn configure(reg: &Registry, extra: &str) {
    let path = reg.root().join(SETTINGS_FILE);
    let mut text = fs::read_to_string(&path).unwrap();
    text.push_str(extra);
    fs::write(&path, text).unwrap();
}

fn publish(reg: &Registry, name: &str, vers: &str) {
    let checked = reg
        .check_upload(None, &simple_crate(name, vers, &[])[..])
        .unwrap();
    reg.apply(Command::Publish(checked), &Actor::cli()).unwrap();
}

fn queued(reg: &Registry) -> Vec<Delivery> {
    let outbox = reg.outbox();
    let names = outbox.list().unwrap();
    names.iter().map(|n| outbox.read(n).unwrap()).collect()
}

#[test]
fn each_change_queues_a_signed_delivery_per_webhook_that_wants_it() {
    let (_t, reg) = scratch_registry();
    publish(&reg, "before", "1.0.0");
    assert!(queued(&reg).is_empty(), "no webhook, nothing queued");
    assert!(!reg.outbox().dir().exists());
    configure(
        &reg,
        "\n[[webhook]]\nurl = \"http://127.0.0.1:9/all\"\nsecret = \"s1\"\n\n\
         [[webhook]]\nurl = \"https://chat.example/hook/x\"\nsecret = \"s2\"\n\
         events = [\"yank\"]\nformat = \"slack\"\n",
    );
    publish(&reg, "foo", "1.0.0");
    reg.set_yanked(
        &crate::registry::CrateName::parse("foo").unwrap(),
        "1.0.0",
        true,
    )
    .unwrap();
    let all = queued(&reg);
    let events: Vec<(&str, &str)> = all
        .iter()
        .map(|d| (d.event.as_str(), d.url.as_str()))
        .collect();
    // The shorthand's events are queued too; the chat hook wants only yanks.
    assert_eq!(
        events,
        [
            ("publish", "http://127.0.0.1:9/all"),
            ("yank", "http://127.0.0.1:9/all"),
            ("yank", "https://chat.example/hook/x"),
        ]
    );
    for d in &all {
        let secret = if d.url.contains("chat") { "s2" } else { "s1" };
        assert_eq!(
            d.signature,
            payload::signature(secret.as_bytes(), d.body.as_bytes())
        );
        let now = crate::registry::now();
        assert!(
            d.expires > now + 86_000 && d.expires <= now + 86_400,
            "{d:?}"
        );
        let mode = fs::metadata(reg.outbox().dir().join(format!("{}.json", d.id)))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let body: serde_json::Value = serde_json::from_str(&all[0].body).unwrap();
    assert_eq!(body["id"], all[0].id.as_str());
    assert_eq!(
        (&body["crate"], &body["version"]),
        (&"foo".into(), &"1.0.0".into())
    );
    assert_eq!(body["registry"], "http://127.0.0.1:1");
    let chat: serde_json::Value = serde_json::from_str(&all[2].body).unwrap();
    assert_eq!(
        chat,
        serde_json::json!({ "text": format!("{} yanked foo 1.0.0 on http://127.0.0.1:1", Actor::cli()) })
    );
}

#[test]
fn a_full_queue_drops_its_oldest_deliveries() {
    let (_t, reg) = scratch_registry();
    configure(
        &reg,
        "\nwebhook-queue-limit = 3\nwebhook-retry-for = \"90s\"\n\
         [[webhook]]\nurl = \"http://127.0.0.1:9/\"\nsecret = \"s\"\nevents = [\"publish\"]\n",
    );
    let before = dropped_total();
    for v in 1..=5 {
        publish(&reg, "foo", &format!("{v}.0.0"));
    }
    let versions: Vec<String> = queued(&reg)
        .iter()
        .map(|d| {
            let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
            body["version"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(versions, ["3.0.0", "4.0.0", "5.0.0"]);
    assert!(dropped_total() >= before + 2);
    let d = &queued(&reg)[0];
    assert!(d.expires <= crate::registry::now() + 90);
}

#[test]
fn temp_files_are_not_deliveries_and_stale_ones_go() {
    let (_t, reg) = scratch_registry();
    let outbox = reg.outbox();
    fs::create_dir_all(outbox.dir()).unwrap();
    let stale = outbox.dir().join(".tmp-999999999-0-write");
    let live = crate::registry::temp_path(outbox.dir(), "write");
    fs::write(&stale, "{").unwrap();
    fs::write(&live, "{").unwrap();
    fs::write(outbox.dir().join("0000000000001-0000-aa.json"), "not json").unwrap();
    assert_eq!(outbox.list().unwrap(), ["0000000000001-0000-aa.json"]);
    let e = outbox.read("0000000000001-0000-aa.json").unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    outbox.remove_stale_temps();
    assert!(!stale.exists());
    assert!(live.exists(), "a live writer's temp file stays");
    assert!(outbox.remove("0000000000001-0000-aa.json").unwrap());
    assert!(!outbox.remove("0000000000001-0000-aa.json").unwrap());
}
