//! What a delivery says: its id, its body (the event as JSON, or a chat message) and the
//! body's HMAC-SHA256 signature with the webhook's secret.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::Delivery;
use crate::registry::publish::tarball::hex;
use crate::registry::{Actor, Change, Event, HookFormat, Settings, Webhook};

/// The delivery of `event` to `hook`, given up after `expires` (unix seconds).
pub(super) fn delivery(
    settings: &Settings,
    hook: &Webhook,
    event: &Event,
    expires: u64,
) -> Delivery {
    let id = new_id();
    let body = match hook.format {
        HookFormat::Json => json_body(&settings.url, event, &id),
        HookFormat::Slack => {
            serde_json::json!({ "text": summary(&settings.url, event) }).to_string()
        }
    };
    Delivery {
        signature: signature(hook.secret.as_bytes(), body.as_bytes()),
        id,
        url: hook.url.clone(),
        event: event.change.action().to_owned(),
        expires,
        body,
    }
}

/// `sha256=` and the lowercase hex HMAC-SHA256 of `body` with `secret`.
pub(super) fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    format!("sha256={}", hex(ring::hmac::sign(&key, body).as_ref()))
}

/// `{unix ms, 13 digits}-{4 digits}-{12 hex}`: sorts by age (the counter orders the
/// deliveries of one change), unique by its random part.
fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) % 10_000;
    let mut random = [0u8; 6];
    if getrandom::getrandom(&mut random).is_err() {
        // No random source: the process id and the counter still tell this one apart.
        random[..4].copy_from_slice(&std::process::id().to_be_bytes());
        random[4..].copy_from_slice(&(n as u16).to_be_bytes());
    }
    format!("{ms:013}-{n:04}-{}", hex(&random))
}

/// The JSON body: what happened, to which crate and version, by whom, when, where; the
/// change itself in `detail` (as the audit log writes it).
fn json_body(registry: &str, event: &Event, id: &str) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        id: &'a str,
        event: &'static str,
        #[serde(rename = "crate")]
        krate: Option<&'a str>,
        version: Option<&'a str>,
        actor: &'a Actor,
        time: String,
        registry: &'a str,
        detail: &'a Change,
    }
    let version = match &event.change {
        Change::Published { vers, .. }
        | Change::Yanked { vers, .. }
        | Change::Unyanked { vers, .. }
        | Change::DocsUploaded { vers, .. } => Some(vers.as_str()),
        Change::Deleted { versions, .. } if versions.len() == 1 => Some(versions[0].as_str()),
        _ => None,
    };
    let body = Body {
        id,
        event: event.change.action(),
        krate: event.krate(),
        version,
        actor: &event.actor,
        time: rfc3339(event.at),
        registry,
        detail: &event.change,
    };
    serde_json::to_string(&body).expect("an event serializes")
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// One line for a chat: `user alice (token 3) published foo 1.0.0 on https://reg`.
fn summary(registry: &str, event: &Event) -> String {
    let what = match &event.change {
        Change::Published {
            name,
            vers,
            new_crate,
            ..
        } => {
            let new = if *new_crate { " (a new crate)" } else { "" };
            format!("published {name} {vers}{new}")
        }
        Change::Yanked { name, vers } => format!("yanked {name} {vers}"),
        Change::Unyanked { name, vers } => format!("unyanked {name} {vers}"),
        Change::Deleted { name, versions } if versions.is_empty() => format!("deleted {name}"),
        Change::Deleted { name, versions } => format!("deleted {name} {}", versions.join(", ")),
        Change::NameReleased { name, .. } => format!("released the name {name}"),
        Change::OwnersAdded { name, users } => {
            format!("added {} as owners of {name}", users.join(", "))
        }
        Change::OwnersRemoved { name, users } => {
            format!("removed {} from the owners of {name}", users.join(", "))
        }
        Change::UserAdded { user, admin: true } => format!("added the admin {user}"),
        Change::UserAdded { user, .. } => format!("added the user {user}"),
        Change::UserRemoved { user, .. } => format!("removed the user {user}"),
        Change::TokenCreated { id, user, .. } => format!("created token {id} for {user}"),
        Change::TokenRevoked { id, user } => format!("revoked token {id} of {user}"),
        Change::AccessSet { access } | Change::ConfigSynced { access } => {
            format!("set access to {access}")
        }
        Change::IndexSquashed { .. } => "squashed the index history".to_owned(),
        Change::DocsUploaded { name, vers, .. } => format!("uploaded the docs of {name} {vers}"),
        Change::DocsRemoved { name, versions } => {
            format!("removed the docs of {name} {}", versions.join(", "))
        }
    };
    format!("{} {what} on {registry}", event.actor)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2: the signature is HMAC-SHA256 as receivers compute it.
    #[test]
    fn the_signature_is_rfc_4231_hmac_sha256() {
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn ids_sort_by_age_and_differ() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 13 + 1 + 4 + 1 + 12, "{a}");
        assert!(a[..13] <= b[..13], "{a} {b}");
    }

    #[test]
    fn bodies_say_what_who_when_and_where() {
        let event = Event {
            at: 1_700_000_000,
            actor: Actor::Cli { user: "pi".into() },
            change: Change::Published {
                name: "Foo".into(),
                vers: "1.2.3".into(),
                cksum: "ab".into(),
                new_crate: true,
            },
        };
        let v: serde_json::Value =
            serde_json::from_str(&json_body("https://reg.example", &event, "id-1")).unwrap();
        assert_eq!(v["id"], "id-1");
        assert_eq!(v["event"], "publish");
        assert_eq!(v["crate"], "Foo");
        assert_eq!(v["version"], "1.2.3");
        assert_eq!(v["actor"]["kind"], "cli");
        assert_eq!(v["actor"]["user"], "pi");
        assert_eq!(v["time"], "2023-11-14T22:13:20Z");
        assert_eq!(v["registry"], "https://reg.example");
        assert_eq!(v["detail"]["change"], "published");
        assert_eq!(v["detail"]["cksum"], "ab");
        assert_eq!(
            summary("https://reg.example", &event),
            "cli user pi published Foo 1.2.3 (a new crate) on https://reg.example"
        );
        let user = Event {
            change: Change::UserAdded {
                user: "bob".into(),
                admin: false,
            },
            ..event
        };
        let v: serde_json::Value = serde_json::from_str(&json_body("h", &user, "i")).unwrap();
        assert!(v["crate"].is_null() && v["version"].is_null(), "{v}");
        assert_eq!(v["event"], "user_add");
    }
}
