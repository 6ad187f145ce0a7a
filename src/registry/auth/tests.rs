//! The access control data's tests: the file, tokens, owners, the policy and the view.

use std::fs;
use std::path::Path;

use super::tokens::{MAX_LIFETIME, TOKEN_BYTES};
use super::*;
use crate::registry::index::git;
use crate::registry::publish::tarball::hex;
use crate::registry::publish::tarball::testing::simple_crate;
use crate::registry::settings::{Access, Settings};
use crate::registry::{Actor, Command};

const T0: u64 = 1_800_000_000;

fn registry() -> (tempfile::TempDir, Registry) {
    scratch_registry()
}

fn publish(reg: &Registry, name: &str) {
    reg.publish(None, &simple_crate(name, "1.0.0", &[])[..])
        .unwrap();
}

/// Publishes `name` 1.0.0 as the token holder `p`, through the server's path.
fn publish_as(reg: &Registry, name: &str, p: &Principal) {
    let checked = reg
        .check_upload(None, &simple_crate(name, "1.0.0", &[])[..])
        .unwrap();
    reg.apply(Command::Publish(checked), &Actor::remote(Some(p), None))
        .unwrap();
}

fn token(reg: &Registry, user: &str, scopes: Option<Scopes>, crates: &[&str]) -> String {
    let req = NewToken {
        user: user.into(),
        scopes,
        crates: crates.iter().map(|s| s.to_string()).collect(),
        ..NewToken::default()
    };
    reg.create_token(req, T0).unwrap().1
}

fn view(reg: &Registry) -> AuthView {
    AuthView::load(reg.root()).unwrap()
}

#[test]
fn user_names_follow_one_rule() {
    for ok in ["a", "alice", "Bob-2", "9lives", "x_y", &"a".repeat(64)] {
        validate_user_name(ok).unwrap();
    }
    for bad in ["", "-a", "_a", "a b", "ä", "a/b", "a.b", &"a".repeat(65)] {
        let e = validate_user_name(bad).unwrap_err().to_string();
        assert!(e.contains("ASCII letters, digits"), "{bad}: {e}");
    }
}

#[test]
fn users_are_added_listed_and_removed() {
    let (_t, reg) = registry();
    reg.add_user("alice", true, T0).unwrap();
    let bob = reg.add_user("bob", false, T0).unwrap();
    assert_eq!(bob.id, 2);
    let e = reg.add_user("ALICE", false, T0).unwrap_err();
    assert!(matches!(e, AuthError::Conflict(_)), "{e}");
    let data = AuthFile::load(&reg).unwrap();
    let names: Vec<_> = data.users().iter().map(|u| (&*u.name, u.admin)).collect();
    assert_eq!(names, [("alice", true), ("bob", false)]);
    assert_eq!(data.user("Bob").unwrap().name, "bob");
    assert!(matches!(
        reg.remove_user("carol", T0),
        Err(AuthError::NotFound(_))
    ));
    assert_eq!(reg.remove_user("bob", T0).unwrap(), 0);
    // Ids are never reused, so an old owner list entry cannot name a new user.
    assert_eq!(reg.add_user("carol", false, T0).unwrap().id, 3);
}

#[test]
fn token_secret_is_shown_once_and_stored_as_sha256_outside_the_index() {
    let (_t, reg) = registry();
    reg.add_user("alice", false, T0).unwrap();
    let (stored, secret) = reg
        .create_token(
            NewToken {
                user: "alice".into(),
                label: Some("ci".into()),
                expires_in: Some(parse_duration("90d").unwrap()),
                ..NewToken::default()
            },
            T0,
        )
        .unwrap();
    let hexpart = secret.strip_prefix(TOKEN_PREFIX).unwrap();
    assert_eq!(hexpart.len(), 2 * TOKEN_BYTES);
    assert!(hexpart.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(stored.scopes, Scopes::ALL);
    assert_eq!(stored.expires, Some(T0 + 90 * 86_400));
    assert_eq!(stored.sha256, sha256(secret.as_bytes()));
    let path = reg.root().join(AUTH_FILE);
    let text = fs::read_to_string(&path).unwrap();
    assert!(!text.contains(hexpart), "the secret is in the file");
    assert!(text.contains(&hex(&stored.sha256)));
    let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&path).unwrap().permissions())
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!reg.index_dir().join(AUTH_FILE).exists());
    assert!(git::dirty_paths(reg.index_dir()).unwrap().is_empty());
    // Another token is another secret.
    let (second, other) = reg
        .create_token(
            NewToken {
                user: "alice".into(),
                ..NewToken::default()
            },
            T0,
        )
        .unwrap();
    assert_ne!(other, secret);
    assert_eq!(second.id, stored.id + 1);
}

#[test]
fn token_requests_are_checked() {
    let (_t, reg) = registry();
    reg.add_user("alice", false, T0).unwrap();
    let bad = |req: NewToken| reg.create_token(req, T0).unwrap_err().to_string();
    let base = || NewToken {
        user: "alice".into(),
        ..NewToken::default()
    };
    assert!(bad(NewToken {
        user: "nobody".into(),
        ..base()
    })
    .contains("user `nobody` does not exist"));
    assert!(bad(NewToken {
        scopes: Some(Scopes::NONE),
        ..base()
    })
    .contains("at least one scope"));
    assert!(bad(NewToken {
        crates: vec!["foo**".into()],
        ..base()
    })
    .contains("invalid crate pattern `foo**`"));
    assert!(bad(NewToken {
        label: Some("a\nb".into()),
        ..base()
    })
    .contains("printable"));
    assert!(bad(NewToken {
        expires_in: Some(0),
        ..base()
    })
    .contains("expire"));
    assert!(AuthFile::load(&reg).unwrap().tokens().is_empty());
}

#[test]
fn scopes_parse_by_crates_io_names() {
    let all: Vec<String> = Scopes::ALL.into();
    assert_eq!(
        all,
        [
            "read",
            "publish-new",
            "publish-update",
            "yank",
            "change-owners"
        ]
    );
    assert_eq!(Scopes::try_from(all).unwrap(), Scopes::ALL);
    let e = Scopes::parse("publish").unwrap_err().to_string();
    assert!(e.contains("unknown scope `publish`"), "{e}");
    assert_eq!(
        Need::Publish.scopes().to_string(),
        "publish-new or publish-update"
    );
}

#[test]
fn durations() {
    for (text, secs) in [
        ("90d", 90 * 86_400),
        ("90", 90 * 86_400),
        ("12h", 12 * 3_600),
        ("30s", 30),
        ("36500d", MAX_LIFETIME),
    ] {
        assert_eq!(parse_duration(text).unwrap(), secs, "{text}");
    }
    for bad in [
        "",
        "d",
        "0",
        "0s",
        "-1d",
        "1.5d",
        "1w",
        "1m",
        " 1d",
        "1 d",
        "36501",
        "99999999999999999999d",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn crate_globs_match_canonical_names() {
    for (glob, krate, want) in [
        ("foo", "foo", true),
        ("foo", "Foo", true),
        ("foo-bar", "foo_bar", true),
        ("foo", "foobar", false),
        ("foo*", "foobar", true),
        ("foo*", "foo", true),
        ("foo-*", "Foo_bar", true),
        ("foo*", "fo", false),
        ("*", "anything", true),
    ] {
        validate_glob(glob).unwrap();
        assert_eq!(glob_matches(glob, krate), want, "{glob} {krate}");
    }
    for bad in ["", "**", "*foo", "f*o", "9foo", "foo/bar", "fö*"] {
        assert!(validate_glob(bad).is_err(), "{bad}");
    }
}

#[test]
fn view_authorizes_by_scope_crate_and_state() {
    let (_t, reg) = registry();
    reg.add_user("alice", false, T0).unwrap();
    reg.add_user("root", true, T0).unwrap();
    let all = token(&reg, "alice", None, &[]);
    let read = token(&reg, "alice", Some(Scopes::READ), &[]);
    let foo = token(&reg, "alice", Some(Scopes::YANK), &["foo*"]);
    let admin = token(&reg, "root", Some(Scopes::READ), &[]);
    let v = view(&reg);
    assert_eq!(v.access(), Access::Public);
    assert_eq!((v.user_count(), v.token_count()), (2, 4));

    let p = v.authorize(Some(&all), Need::Publish, None, T0).unwrap();
    assert_eq!((&*p.user, p.admin, p.scopes), ("alice", false, Scopes::ALL));
    assert_eq!(
        v.authorize(None, Need::Read, None, T0),
        Err(Refusal::NoToken)
    );
    // A wrong token, a prefix of a right one, and garbage take the same path.
    for wrong in [
        "pal_0000",
        &all[..all.len() - 1],
        "",
        "Bearer x",
        &"x".repeat(300),
    ] {
        assert_eq!(
            v.authorize(Some(wrong), Need::Read, None, T0),
            Err(Refusal::Unknown),
            "{wrong}"
        );
    }
    assert_eq!(
        v.authorize(Some(&read), Need::Publish, None, T0),
        Err(Refusal::Scope {
            token: 2,
            needed: Need::Publish.scopes()
        })
    );
    v.authorize(Some(&read), Need::Read, Some("anything"), T0)
        .unwrap();
    v.authorize(Some(&foo), Need::Yank, Some("Foo-Bar"), T0)
        .unwrap();
    assert_eq!(
        v.authorize(Some(&foo), Need::Yank, Some("bar"), T0),
        Err(Refusal::CrateScope {
            token: 3,
            krate: "bar".into()
        })
    );
    // Crate patterns limit writes, never reads; scopes limit reads.
    assert!(matches!(
        v.authorize(Some(&foo), Need::Read, Some("bar"), T0),
        Err(Refusal::Scope { .. })
    ));
    assert_eq!(
        v.authorize(Some(&all), Need::Admin, None, T0),
        Err(Refusal::NotAdmin {
            user: "alice".into()
        })
    );
    assert!(
        v.authorize(Some(&admin), Need::Admin, None, T0)
            .unwrap()
            .admin
    );
}

#[test]
fn expired_and_revoked_tokens_are_refused_with_their_reason() {
    let (_t, reg) = registry();
    reg.add_user("alice", false, T0).unwrap();
    reg.add_user("bob", false, T0).unwrap();
    let (_, short) = reg
        .create_token(
            NewToken {
                user: "alice".into(),
                expires_in: Some(30),
                ..NewToken::default()
            },
            T0,
        )
        .unwrap();
    let gone = token(&reg, "alice", None, &[]);
    let bobs = token(&reg, "bob", None, &[]);
    let before = view(&reg);
    before
        .authorize(Some(&short), Need::Read, None, T0 + 29)
        .unwrap();
    assert_eq!(
        before.authorize(Some(&short), Need::Read, None, T0 + 30),
        Err(Refusal::Expired { token: 1 })
    );
    let (t, fresh) = reg.revoke_token(2, T0).unwrap();
    assert!(fresh && t.revoked == Some(T0));
    assert!(!reg.revoke_token(2, T0 + 5).unwrap().1);
    assert!(matches!(
        reg.revoke_token(99, T0),
        Err(AuthError::NotFound(_))
    ));
    // The view is immutable: the change shows only in a reloaded one.
    before.authorize(Some(&gone), Need::Read, None, T0).unwrap();
    assert_ne!(Stamp::current(reg.root()), before.stamp());
    let after = view(&reg);
    assert_eq!(Stamp::current(reg.root()), after.stamp());
    assert_eq!(
        after.authorize(Some(&gone), Need::Read, None, T0),
        Err(Refusal::Revoked { token: 2 })
    );
    // Removing a user revokes their tokens.
    assert_eq!(reg.remove_user("bob", T0).unwrap(), 1);
    assert_eq!(
        view(&reg).authorize(Some(&bobs), Need::Read, None, T0),
        Err(Refusal::Revoked { token: 3 })
    );
    let refusals = [
        Refusal::NoToken,
        Refusal::Unknown,
        Refusal::Expired { token: 1 },
        Refusal::Revoked { token: 2 },
    ];
    assert!(refusals.iter().all(Refusal::is_unauthenticated));
    assert_eq!(
        Refusal::Unknown.detail(),
        Refusal::Revoked { token: 2 }.detail()
    );
}

#[test]
fn stamp_changes_with_every_write_and_with_the_settings() {
    let (_t, reg) = registry();
    let empty = Stamp::current(reg.root());
    assert_eq!(view(&reg).stamp(), empty);
    reg.add_user("alice", false, T0).unwrap();
    let one = Stamp::current(reg.root());
    assert_ne!(one, empty);
    reg.add_user("bobby", false, T0).unwrap();
    reg.remove_user("bobby", T0).unwrap();
    assert_ne!(Stamp::current(reg.root()), one);
    let before = Stamp::current(reg.root());
    reg.set_access(Access::Private).unwrap();
    assert_ne!(Stamp::current(reg.root()), before);
    assert_eq!(view(&reg).access(), Access::Private);
}

#[test]
fn owners_are_recorded_listed_and_checked() {
    let (_t, reg) = registry();
    reg.add_user("alice", false, T0).unwrap();
    reg.add_user("bob", false, T0).unwrap();
    reg.add_user("root", true, T0).unwrap();
    let secrets = ["alice", "bob", "root"].map(|u| token(&reg, u, None, &[]));
    let v = view(&reg);
    let [alice, bob, root] =
        secrets.map(|s| v.authorize(Some(&s), Need::Publish, None, T0).unwrap());

    // A new crate: anyone with publish-new; the publisher becomes its owner.
    let data = AuthFile::load(&reg).unwrap();
    authorize_publish(&data, &alice, "Foo-Bar", NameState::Free).unwrap();
    publish_as(&reg, "Foo-Bar", &alice);
    let data = AuthFile::load(&reg).unwrap();
    assert_eq!(data.recorded_owners("foo_bar"), ["alice"]);
    authorize_publish(&data, &alice, "Foo-Bar", NameState::Published).unwrap();
    authorize_publish(&data, &root, "Foo-Bar", NameState::Published).unwrap();
    assert_eq!(
        authorize_publish(&data, &bob, "Foo-Bar", NameState::Published),
        Err(Refusal::NotOwner {
            user: "bob".into(),
            krate: "Foo-Bar".into()
        })
    );
    assert!(authorize_owner(&data, &bob, "foo_bar").is_err());

    // Bob cannot make himself an owner; alice can.
    let e = reg
        .add_owners("foo_bar", &["bob".into()], Some(&bob))
        .unwrap_err();
    assert!(
        matches!(e, AuthError::Refused(Refusal::NotOwner { .. })),
        "{e}"
    );
    let msg = reg
        .add_owners("foo_bar", &["BOB".into()], Some(&alice))
        .unwrap();
    assert_eq!(msg, "user bob has been added as an owner of crate Foo-Bar");
    let logins = |v: Vec<User>| v.into_iter().map(|u| u.name).collect::<Vec<_>>();
    assert_eq!(
        logins(reg.list_owners("foo-bar").unwrap()),
        ["alice", "bob"]
    );
    let data = AuthFile::load(&reg).unwrap();
    authorize_publish(&data, &bob, "Foo-Bar", NameState::Published).unwrap();
    let again = reg
        .add_owners("Foo-Bar", &["bob".into()], None)
        .unwrap_err();
    assert!(matches!(again, AuthError::Conflict(_)), "{again}");
    let nobody = reg
        .add_owners("Foo-Bar", &["carol".into()], None)
        .unwrap_err();
    assert!(matches!(nobody, AuthError::NotFound(_)), "{nobody}");
    let missing = reg.list_owners("nothere").unwrap_err();
    assert!(missing
        .to_string()
        .contains("crate `nothere` does not exist"));

    // Removal: never the last owner.
    reg.remove_owners("Foo-Bar", &["alice".into()], Some(&bob))
        .unwrap();
    let last = reg
        .remove_owners("Foo-Bar", &["bob".into()], None)
        .unwrap_err();
    assert!(
        last.to_string().contains("cannot remove every owner"),
        "{last}"
    );
    let not = reg
        .remove_owners("Foo-Bar", &["alice".into()], None)
        .unwrap_err();
    assert!(matches!(not, AuthError::NotFound(_)), "{not}");

    // A crate published before owners were recorded belongs to the admins.
    publish(&reg, "legacy");
    let data = AuthFile::load(&reg).unwrap();
    assert!(data.recorded_owners("legacy").is_empty());
    assert_eq!(logins(reg.list_owners("legacy").unwrap()), ["root"]);
    authorize_publish(&data, &root, "legacy", NameState::Published).unwrap();
    assert!(authorize_publish(&data, &alice, "legacy", NameState::Published).is_err());

    // Removing a user drops them from owner lists; an emptied crate goes to the admins.
    reg.remove_user("bob", T0).unwrap();
    let data = AuthFile::load(&reg).unwrap();
    assert!(data.recorded_owners("Foo-Bar").is_empty());
    assert_eq!(
        authorize_publish(&data, &bob, "Foo-Bar", NameState::Published),
        Err(Refusal::Revoked { token: 2 })
    );
    assert_eq!(
        authorize_publish(&data, &bob, "brand-new", NameState::Free),
        Err(Refusal::Revoked { token: 2 })
    );
}

/// What broke: the hint said `cargo owner --add bob foo`, which, pasted as given, goes to
/// crates.io.
#[test]
fn the_not_owner_hint_names_the_registry() {
    let detail = Refusal::NotOwner {
        user: "bob".into(),
        krate: "foo".into(),
    }
    .detail();
    assert!(
        detail.contains("`cargo owner --registry palletizer --add bob foo`"),
        "{detail}"
    );
}

#[test]
fn publish_scopes_split_new_from_update() {
    let (_t, reg) = registry();
    reg.add_user("alice", false, T0).unwrap();
    let new_only = token(&reg, "alice", Some(Scopes::PUBLISH_NEW), &[]);
    let update_only = token(&reg, "alice", Some(Scopes::PUBLISH_UPDATE), &["foo"]);
    let v = view(&reg);
    let new_only = v
        .authorize(Some(&new_only), Need::Publish, None, T0)
        .unwrap();
    let update_only = v
        .authorize(Some(&update_only), Need::Publish, None, T0)
        .unwrap();
    publish_as(&reg, "foo", &new_only);
    let data = AuthFile::load(&reg).unwrap();
    authorize_publish(&data, &new_only, "bar", NameState::Free).unwrap();
    assert!(matches!(
        authorize_publish(&data, &new_only, "foo", NameState::Published),
        Err(Refusal::Scope { .. })
    ));
    authorize_publish(&data, &update_only, "foo", NameState::Published).unwrap();
    assert!(matches!(
        authorize_publish(&data, &update_only, "bar", NameState::Free),
        Err(Refusal::Scope { .. })
    ));
    let mut foo_new = update_only.clone();
    foo_new.scopes = Scopes::ALL;
    assert!(matches!(
        authorize_publish(&data, &foo_new, "bar", NameState::Free),
        Err(Refusal::CrateScope { .. })
    ));
}

#[test]
fn bootstrap_creates_one_admin_token_once() {
    let (_t, reg) = registry();
    let secret = reg.bootstrap_admin(T0).unwrap().unwrap();
    assert!(secret.starts_with(TOKEN_PREFIX));
    assert_eq!(reg.bootstrap_admin(T0).unwrap(), None);
    let v = view(&reg);
    for need in [
        Need::Read,
        Need::Publish,
        Need::Yank,
        Need::ChangeOwners,
        Need::Admin,
    ] {
        let p = v.authorize(Some(&secret), need, Some("x"), T0).unwrap();
        assert_eq!(&*p.user, FIRST_ADMIN);
    }
    let data = AuthFile::load(&reg).unwrap();
    assert_eq!(data.tokens()[0].expires, None);
}

#[test]
fn access_mode_and_config_json_never_disagree() {
    let (_t, reg) = registry();
    let committed = |reg: &Registry| {
        let repo = git2::Repository::open(reg.index_dir()).unwrap();
        let tree = repo.head().unwrap().peel_to_tree().unwrap();
        let blob = tree
            .get_path(Path::new("config.json"))
            .unwrap()
            .to_object(&repo)
            .unwrap();
        let text = String::from_utf8(blob.as_blob().unwrap().content().to_vec()).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["auth-required"] == true
    };
    assert!(!committed(&reg));
    for (mode, private) in [
        (Access::Private, true),
        (Access::Open, false),
        (Access::Public, false),
        (Access::Private, true),
    ] {
        let s = reg.set_access(mode).unwrap();
        assert_eq!(s.access, mode);
        let reopened = Registry::open(reg.root()).unwrap();
        assert_eq!(reopened.settings().access, mode);
        assert_eq!(committed(&reg), private, "{mode}");
        assert!(git::dirty_paths(reg.index_dir()).unwrap().is_empty());
    }
    // A crash between the two writes left them apart: sync puts config.json right.
    fs::write(
        reg.index_dir().join("config.json"),
        Settings::default().config_json(),
    )
    .unwrap();
    assert!(reg.sync_config_json().unwrap());
    assert!(committed(&reg));
    assert!(!reg.sync_config_json().unwrap());
}

#[test]
fn last_used_is_recorded_and_never_goes_back() {
    let (_t, reg) = registry();
    reg.add_user("alice", false, T0).unwrap();
    token(&reg, "alice", None, &[]);
    reg.record_last_used(&[(1, T0 + 10), (77, T0)]).unwrap();
    reg.record_last_used(&[(1, T0 + 5)]).unwrap();
    let data = AuthFile::load(&reg).unwrap();
    assert_eq!(data.tokens()[0].last_used, Some(T0 + 10));
}

#[test]
fn concurrent_writers_lose_no_change() {
    let (_t, reg) = registry();
    std::thread::scope(|s| {
        for w in 0..2 {
            let reg = &reg;
            s.spawn(move || {
                for i in 0..15 {
                    reg.add_user(&format!("w{w}-{i}"), false, T0).unwrap();
                }
            });
        }
    });
    let data = AuthFile::load(&reg).unwrap();
    assert_eq!(data.users().len(), 30);
    let mut ids: Vec<_> = data.users().iter().map(|u| u.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 30);
}

#[test]
fn a_bad_file_is_an_error_not_an_empty_registry() {
    let (_t, reg) = registry();
    let path = reg.root().join(AUTH_FILE);
    fs::write(&path, "{not json").unwrap();
    let e = AuthFile::load(&reg).unwrap_err();
    assert!(matches!(e, AuthError::Corrupt { .. }), "{e}");
    assert!(reg.add_user("alice", false, T0).is_err());
    assert_eq!(fs::read_to_string(&path).unwrap(), "{not json");
    fs::write(&path, r#"{"format":9,"next_user_id":1,"next_token_id":1}"#).unwrap();
    let e = AuthView::load(reg.root()).unwrap_err().to_string();
    assert!(e.contains("newer palletizer"), "{e}");
}

/// The server parses `auth.json` on its event loop: a file past the cap is refused
/// unread (the old view stays), and the CLI never writes one.
#[test]
fn auth_files_past_the_cap_are_neither_read_nor_written() {
    let (_t, reg) = registry();
    reg.add_user("alice", false, T0).unwrap();
    let path = reg.root().join(AUTH_FILE);
    let text = fs::read_to_string(&path).unwrap();
    let padded = format!("{text}{}", " ".repeat(MAX_AUTH_FILE as usize));
    fs::write(&path, &padded).unwrap();
    let e = AuthView::load(reg.root()).unwrap_err().to_string();
    assert!(e.contains("larger than"), "{e}");
    fs::write(&path, &text).unwrap();
    // A file just under the cap (tokens copied in directly), then one token more.
    let mut data: AuthFile = serde_json::from_str(&text).unwrap();
    let one = NewToken {
        user: "alice".into(),
        label: Some("x".repeat(MAX_LABEL_LEN)),
        ..NewToken::default()
    };
    reg.create_token(one, T0).unwrap();
    let with_one: AuthFile = AuthFile::load(&reg).unwrap();
    let token = with_one.tokens[0].clone();
    let size = |n: usize| {
        let mut d = data.clone();
        d.tokens = vec![token.clone(); n];
        serde_json::to_vec_pretty(&d).unwrap().len()
    };
    let each = (size(100) - size(0)) / 100;
    let fill = (MAX_AUTH_FILE as usize - size(0)) / each;
    data.tokens = vec![token; fill];
    let full = serde_json::to_vec_pretty(&data).unwrap();
    assert!(full.len() as u64 <= MAX_AUTH_FILE, "{}", full.len());
    fs::write(&path, &full).unwrap();
    AuthView::load(reg.root()).expect("a file within the cap loads");
    let more = NewToken {
        user: "alice".into(),
        label: Some("x".repeat(MAX_LABEL_LEN)),
        ..NewToken::default()
    };
    let e = reg.create_token(more, T0).unwrap_err().to_string();
    assert!(e.contains("revoke or remove old tokens"), "{e}");
    assert_eq!(fs::read(&path).unwrap(), full, "nothing written");
    AuthView::load(reg.root()).unwrap();
}

#[test]
fn tokens_sharing_a_hash_prefix_are_all_found() {
    let mut data = AuthFile::default();
    data.users.push(User {
        id: 1,
        name: "alice".into(),
        admin: false,
        created: T0,
    });
    let mut hashes = Vec::new();
    for last in 0..3u8 {
        let mut h = [7u8; 32];
        h[31] = last;
        hashes.push(h);
        data.tokens.push(Token {
            id: u64::from(last) + 1,
            user: "alice".into(),
            sha256: h,
            scopes: Scopes::ALL,
            crates: Vec::new(),
            created: T0,
            expires: None,
            label: None,
            last_used: None,
            revoked: None,
        });
    }
    let v = AuthView::new(Access::Public, &data);
    assert_eq!(v.collided.len(), 2);
    for (i, h) in hashes.iter().enumerate() {
        assert_eq!(v.find(h).unwrap().id, i as u64 + 1);
    }
    let mut other = [7u8; 32];
    other[31] = 9;
    assert!(v.find(&other).is_none());
}

/// Counts this thread's live heap bytes, to measure what a view really costs.
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
    }

    fn add(n: isize) {
        let _ = LIVE.try_with(|c| c.set(c.get() + n));
    }

    pub fn live() -> isize {
        LIVE.with(Cell::get)
    }

    struct Counting;

    // SAFETY: every call is forwarded to the system allocator unchanged; the counter is
    // a const-initialized thread-local without destructor, so touching it never allocates.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            add(l.size() as isize);
            unsafe { System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            add(-(l.size() as isize));
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            add(new as isize - l.size() as isize);
            unsafe { System.realloc(p, l, new) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;
}

#[test]
fn a_thousand_tokens_cost_well_under_a_third_of_a_mib() {
    let mut data = AuthFile::default();
    for u in 0..50u32 {
        data.users.push(User {
            id: u + 1,
            name: format!("user-{u}"),
            admin: u == 0,
            created: T0,
        });
    }
    let mut secrets = Vec::new();
    for i in 0..1000u64 {
        let secret = new_secret().unwrap();
        data.tokens.push(Token {
            id: i + 1,
            user: format!("user-{}", i % 50),
            sha256: sha256(secret.as_bytes()),
            scopes: Scopes::ALL,
            // One in ten restricted to a crate pattern, as a busy registry might have.
            crates: if i % 10 == 0 {
                vec![format!("team-{i}-*")]
            } else {
                Vec::new()
            },
            created: T0,
            expires: Some(T0 + 86_400),
            label: Some(format!("token number {i} for the build farm")),
            last_used: Some(T0),
            revoked: None,
        });
        secrets.push(secret);
    }
    let before = counting::live();
    let v = AuthView::new(Access::Private, &data);
    let bytes = counting::live() - before;
    eprintln!(
        "AuthView with 1000 tokens, 50 users: {bytes} heap bytes ({:.3} MiB)",
        bytes as f64 / (1 << 20) as f64
    );
    assert!(bytes > 1000 * 32, "the counter does not count: {bytes}");
    assert!(bytes < 150 * 1024, "{bytes} bytes");
    for s in &secrets {
        v.authorize(Some(s), Need::Read, None, T0).unwrap();
    }
}

/// The pages list owners from the server's view, and the view says what the file's rule
/// says: recorded owners by their spelling, the admins for a crate with none recorded, and
/// after a hand edit names no user has no one.
#[test]
fn the_view_names_owners_as_the_file_does() {
    let (_t, reg) = registry();
    reg.bootstrap_admin(T0).unwrap();
    reg.add_user("Alice", false, T0).unwrap();
    publish(&reg, "foo");
    publish(&reg, "bar");
    reg.add_owners("foo", &["alice".into()], None).unwrap();
    let names = |v: &AuthView, k: &str| -> Vec<String> {
        v.owners_of(k).into_iter().map(str::to_owned).collect()
    };
    let file = |k: &str| -> Vec<String> {
        let data = AuthFile::load(&reg).unwrap();
        data.effective_owners(k)
            .into_iter()
            .map(|u| u.name.clone())
            .collect()
    };
    let v = view(&reg);
    for k in ["foo", "FOO", "bar", "never-published"] {
        assert_eq!(names(&v, k), file(k), "{k}");
    }
    assert!(names(&v, "Foo").contains(&"Alice".to_string()));
    assert_eq!(names(&v, "never-published"), ["admin"]);
    // A hand edit that names only a user who does not exist leaves the crate with no one.
    let path = reg.root().join("auth.json");
    let mut json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    json["owners"]["bar"] = serde_json::json!(["ghost"]);
    fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let v = view(&reg);
    assert_eq!(names(&v, "bar"), file("bar"));
    assert!(names(&v, "bar").is_empty());
}

#[test]
fn the_access_file_is_never_placed_inside_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("index/sub")).unwrap();
    let with = |index_dir: &str| Settings {
        index_dir: index_dir.into(),
        ..Settings::default()
    };
    // A plain folder below the root: the file is at the root.
    for plain in ["index", "index/sub", "missing"] {
        assert_eq!(
            file::auth_path(root, &with(plain)).unwrap(),
            root.join(AUTH_FILE)
        );
    }
    // The root itself, or a folder that holds it, is refused; so is a link back to the root.
    std::os::unix::fs::symlink(root, root.join("loop")).unwrap();
    let outer = root.parent().unwrap().to_str().unwrap().to_owned();
    for holder in ["", ".", "..", "loop", outer.as_str()] {
        let err = file::auth_path(root, &with(holder)).unwrap_err();
        assert!(
            err.to_string().contains("contains the registry root"),
            "{holder}: {err}"
        );
    }
}
