use super::*;
use crate::registry::auth::scratch_registry;
use crate::registry::publish::tarball::testing::simple_crate;
use crate::registry::{Actor, AuthView, Command, Need, NewToken};

fn all(reg: &Registry) -> Vec<AuditRecord> {
    let mut out = Vec::new();
    let skipped = reg
        .audit(&AuditQuery::default(), &mut |r| out.push(r))
        .unwrap();
    assert_eq!(skipped, 0);
    out
}

fn lines(reg: &Registry) -> Vec<AuditRecord> {
    fs::read_to_string(reg.root().join(AUDIT_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A token holder with every scope: (actor, secret).
fn holder(reg: &Registry, user: &str) -> (Actor, String) {
    reg.add_user(user, false, crate::registry::now()).unwrap();
    let req = NewToken {
        user: user.into(),
        ..NewToken::default()
    };
    let (_, secret) = reg.create_token(req, crate::registry::now()).unwrap();
    let view = AuthView::load(reg.root()).unwrap();
    let p = view
        .authorize(Some(&secret), Need::Publish, None, crate::registry::now())
        .unwrap();
    (
        Actor::remote(Some(&p), Some("192.0.2.7".parse().unwrap())),
        secret,
    )
}

fn publish(reg: &Registry, name: &str, vers: &str, actor: &Actor) -> bool {
    let checked = reg
        .check_upload(None, &simple_crate(name, vers, &[])[..])
        .unwrap();
    reg.apply(Command::Publish(checked), actor).is_ok()
}

#[test]
fn every_change_has_its_intent_and_its_outcome_and_no_secret() {
    let (_t, reg) = scratch_registry();
    let (alice, secret) = holder(&reg, "alice");
    let (bob, _) = holder(&reg, "bob");
    assert!(publish(&reg, "Foo", "1.0.0", &alice));
    assert!(!publish(&reg, "foo", "1.1.0", &bob), "bob owns nothing");
    let text = fs::read_to_string(reg.root().join(AUDIT_FILE)).unwrap();
    assert!(!text.contains(&secret[4..]), "a secret in the log: {text}");

    let raw = lines(&reg);
    let outcomes: Vec<_> = raw.iter().map(|r| (r.action.as_str(), r.outcome)).collect();
    use AuditOutcome::{Ok as Done, Refused, Started};
    assert_eq!(
        outcomes,
        [
            ("user_add", Started),
            ("user_add", Done),
            ("token_create", Started),
            ("token_create", Done),
            ("user_add", Started),
            ("user_add", Done),
            ("token_create", Started),
            ("token_create", Done),
            ("publish", Started),
            ("publish", Done),
            ("publish", Started),
            ("publish", Refused),
        ]
    );
    // Read back, each change once, as its outcome tells it.
    let read = all(&reg);
    assert_eq!(read.len(), 6);
    let published = &read[4];
    assert_eq!(
        (published.krate.as_deref(), published.version.as_deref()),
        (Some("Foo"), Some("1.0.0"))
    );
    assert_eq!(published.actor.kind, "token");
    assert_eq!(published.actor.user.as_deref(), Some("alice"));
    assert_eq!(published.peer.as_deref(), Some("192.0.2.7"));
    assert_eq!(published.changes[0]["change"], "published");
    let refused = &read[5];
    assert_eq!(refused.outcome, AuditOutcome::Refused);
    assert_eq!(refused.actor.user.as_deref(), Some("bob"));
    assert!(
        refused.reason.as_deref().unwrap().contains("not an owner"),
        "{refused:?}"
    );
    let token = &read[1];
    assert_eq!(token.actor.kind, "cli");
    assert_eq!(
        (token.user.as_deref(), token.token),
        (Some("alice"), Some(1))
    );

    // Filters: crate in any spelling, the acting user, the time.
    let mut n = 0;
    let q = AuditQuery {
        krate: Some("FOO".into()),
        user: Some("alice".into()),
        since: Some(crate::registry::now() - 60),
    };
    reg.audit(&q, &mut |_| n += 1).unwrap();
    assert_eq!(n, 1);
    let future = AuditQuery {
        since: Some(crate::registry::now() + 3600),
        ..AuditQuery::default()
    };
    reg.audit(&future, &mut |_| panic!("nothing is that new"))
        .unwrap();
}

#[test]
fn a_change_cut_short_gets_its_outcome_at_the_next_open() {
    let (_t, reg) = scratch_registry();
    let (alice, _) = holder(&reg, "alice");
    assert!(publish(&reg, "kept", "1.0.0", &alice));
    // As a kill after the intent, before the change (nothing in the index) ...
    let intent = |action: &str, krate: Option<&str>| {
        let mut r = AuditRecord::new(crate::registry::now(), action, AuditActor::kind("cli"));
        r.krate = krate.map(str::to_owned);
        r.version = krate.map(|_| "1.0.0".to_owned());
        r
    };
    let cut_short = |r: AuditRecord| {
        let _lock = reg.lock().unwrap();
        reg.audit_log().unwrap().append(&[r], true).unwrap();
    };
    cut_short(intent("publish", Some("lost")));
    let reopened = Registry::open(reg.root()).unwrap();
    let last = all(&reopened).pop().unwrap();
    assert_eq!(
        (last.action.as_str(), last.outcome),
        ("publish", AuditOutcome::Failed)
    );
    assert!(last.reason.unwrap().contains("undone"));
    // ... after the change, before its outcome line ...
    cut_short(intent("publish", Some("kept")));
    Registry::open(reg.root()).unwrap();
    assert_eq!(all(&reg).pop().unwrap().outcome, AuditOutcome::Ok);
    // ... a change the index does not tell, settled by the next write instead of an open.
    cut_short(intent("user_add", None));
    reg.add_user("carol", false, crate::registry::now())
        .unwrap();
    let read = all(&reg);
    let n = read.len();
    assert_eq!(read[n - 2].outcome, AuditOutcome::Interrupted);
    assert_eq!(read[n - 1].user.as_deref(), Some("carol"));
    let raw = lines(&reg);
    assert!(
        raw.windows(2).all(|w| w[0].outcome != AuditOutcome::Started
            || w[1].outcome != AuditOutcome::Started),
        "every intent is followed by its outcome"
    );

    // A torn last line (a power loss mid-write) is cut off.
    let path = reg.root().join(AUDIT_FILE);
    let before = fs::read(&path).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"time\":\"2026-")
        .unwrap();
    let done = reg.recover().unwrap();
    assert!(done.iter().any(|d| d.contains("torn")), "{done:?}");
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn the_log_rotates_at_its_cap_and_reads_across_both_files() {
    let (_t, reg) = scratch_registry();
    let settings = reg.root().join(crate::registry::SETTINGS_FILE);
    let text = fs::read_to_string(&settings).unwrap();
    let text = text.replace("audit-max-bytes = 8388608", "audit-max-bytes = 4096");
    fs::write(&settings, text).unwrap();
    let reg = Registry::open(reg.root()).unwrap();
    assert_eq!(reg.settings().audit_max_bytes, 4096);
    for i in 0..60 {
        reg.add_user(&format!("user{i}"), false, crate::registry::now())
            .unwrap();
    }
    let (new, old) = (reg.root().join(AUDIT_FILE), reg.root().join(AUDIT_OLD_FILE));
    for f in [&new, &old] {
        let len = fs::metadata(f).unwrap().len();
        assert!(len <= 4096 + 512, "{}: {len}", f.display());
    }
    let read = all(&reg);
    assert!(read.len() > 10, "{}", read.len());
    assert_eq!(read.last().unwrap().user.as_deref(), Some("user59"));
    let users: Vec<_> = read.iter().map(|r| r.user.clone().unwrap()).collect();
    let mut sorted = users.clone();
    sorted.sort_by_key(|u| u[4..].parse::<u32>().unwrap());
    assert_eq!(users, sorted, "oldest first, across the rotation");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&new).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn the_servers_own_checks_that_change_nothing_leave_no_line() {
    let (_t, reg) = scratch_registry();
    assert!(!reg.sync_config_json().unwrap());
    reg.record_last_used(&[(1, 1)]).unwrap();
    let len = fs::metadata(reg.root().join(AUDIT_FILE)).map_or(0, |m| m.len());
    assert_eq!(len, 0);
    // The CLI's own no-op stays: someone asked for it.
    reg.add_user("alice", false, 1).unwrap();
    let (alice, _) = holder(&reg, "alice2");
    publish(&reg, "y", "1.0.0", &alice);
    let yank = || Command::Yank {
        name: CrateName::parse("y").unwrap(),
        vers: "1.0.0".into(),
        yanked: false,
    };
    reg.apply(yank(), &Actor::cli()).unwrap();
    let last = all(&reg).pop().unwrap();
    assert_eq!(
        (last.action.as_str(), last.outcome),
        ("unyank", AuditOutcome::Unchanged)
    );
}

#[test]
fn refusals_name_their_token_holder_and_a_full_batch_is_counted() {
    let (_t, reg) = scratch_registry();
    holder(&reg, "alice");
    let refusal = |token| WriteRefusal {
        at: 1_800_000_000,
        action: "yank",
        krate: Some("x".repeat(500)),
        version: Some("1.0.0".into()),
        token,
        peer: Some("2001:db8::1".parse().unwrap()),
        reason: "scope".into(),
    };
    reg.audit_refusals(&[refusal(Some(1)), refusal(None)], 3)
        .unwrap();
    let read = all(&reg);
    let [by_alice, anonymous, dropped] = &read[read.len() - 3..] else {
        panic!("{read:?}")
    };
    assert_eq!(by_alice.actor.to_string(), "alice (token 1)");
    assert_eq!(by_alice.krate.as_ref().unwrap().len(), MAX_FIELD);
    assert_eq!(by_alice.peer.as_deref(), Some("2001:db8::1"));
    assert_eq!(by_alice.time, "2027-01-15T08:00:00Z");
    assert_eq!(anonymous.actor.kind, "anonymous");
    assert_eq!(anonymous.outcome, AuditOutcome::Refused);
    assert_eq!(dropped.action, "refusals_dropped");
    assert!(dropped.reason.as_deref().unwrap().starts_with("3 more"));
}
