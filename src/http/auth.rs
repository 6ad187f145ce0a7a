//! Access control on HTTP: the token in the `Authorization` header and the refusals cargo
//! and git understand. What each route needs in each access mode is
//! [`super::Endpoint::required`]. Pure functions: the token check itself is
//! [`AuthView::authorize`], which makes no system call.
//!
//! - `open`: nothing is checked.
//! - `public`: reads (index, downloads, git, search, owner lists) are free; publish, yank,
//!   unyank and owner changes need a token with the matching scope.
//! - `private`: every route below the registry's base path needs at least `read`, except
//!   the login page (how to get a token, and the form that starts a browser session) and
//!   logout.
//! - `/metrics` needs an admin's token in every mode (the event loop renders them).
//!
//! Missing or bad credentials are a 401 with a challenge (`Cargo login_url=...` for cargo,
//! `Basic realm=...` on the git routes, since git only sends credentials after that); good
//! credentials that are not enough are a 403. Bodies are cargo's `{"errors":[{"detail":..}]}`.

use std::borrow::Cow;

use super::response::Response;
use crate::registry::{AuthError, AuthView, Need, Principal, Refusal, User};

/// The realm git shows when it asks for credentials.
pub const GIT_REALM: &str = "palletizer";

/// How a 401 tells the client to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// `WWW-Authenticate: Cargo login_url="<url>/login"`: cargo's sparse index and API.
    Cargo,
    /// `WWW-Authenticate: Basic realm="..."`: the git smart HTTP routes.
    Basic,
}

/// What a request needs besides being well-formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Required {
    pub need: Need,
    /// The crate the route acts on (yank, unyank, owners), percent-decoded; the token's
    /// crate patterns are checked against it. Publish learns its crate from the body.
    pub krate: Option<String>,
    pub challenge: Challenge,
}

/// The token in an `Authorization` header: the raw token (what cargo sends), `Bearer
/// <token>`, or HTTP Basic with the token as password (what git sends; a token given as the
/// user name with an empty password is taken too). A Basic value that does not decode is
/// passed on as is, so it meets the same lookup as any wrong token.
pub fn token_from_header(value: &str) -> Option<Cow<'_, str>> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    // Compared as bytes: the header may hold any UTF-8, and a cut inside a character must
    // not be possible.
    let scheme = |name: &str| {
        let b = value.as_bytes();
        (b.len() > name.len()
            && b[..name.len()].eq_ignore_ascii_case(name.as_bytes())
            && b[name.len()] == b' ')
            .then(|| value[name.len() + 1..].trim())
    };
    if let Some(rest) = scheme("Bearer") {
        return Some(Cow::Borrowed(rest));
    }
    if let Some(rest) = scheme("Basic") {
        let decoded = base64_decode(rest).and_then(|b| String::from_utf8(b).ok());
        let Some(pair) = decoded else {
            return Some(Cow::Borrowed(value));
        };
        let (user, password) = pair.split_once(':').unwrap_or((&pair, ""));
        let token = if password.is_empty() { user } else { password };
        return Some(Cow::Owned(token.to_owned()));
    }
    Some(Cow::Borrowed(value))
}

/// Standard base64 with padding (RFC 4648 section 4), as HTTP Basic uses it.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let chunks = text.len() / 4;
    for (i, chunk) in text.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return None;
        }
        let mut n: u32 = 0;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | u32::from(value(c)?);
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

/// Checks a request that needs `req` against the server's view.
pub fn authorize(
    view: &AuthView,
    req: &Required,
    authorization: Option<&str>,
    now: u64,
) -> Result<Principal, Refusal> {
    let token = authorization.and_then(token_from_header);
    view.authorize(token.as_deref(), req.need, req.krate.as_deref(), now)
}

/// The answer to a refused request: 401 with the challenge for `challenge` when the
/// credentials are missing or no good, 403 otherwise. `base_url` is the registry's URL.
pub fn refused(refusal: &Refusal, challenge: Challenge, base_url: &str) -> Response {
    if !refusal.is_unauthenticated() {
        return Response::error(403, &refusal.detail());
    }
    let value = match challenge {
        Challenge::Cargo => format!("Cargo login_url=\"{base_url}/login\""),
        Challenge::Basic => format!("Basic realm=\"{GIT_REALM}\""),
    };
    Response::error(401, &refusal.detail()).header("WWW-Authenticate", value)
}

/// Maps an access control error on an API route (owners) to its answer. Internal errors are
/// logged and answered without their detail.
pub fn auth_error(e: AuthError, base_url: &str) -> Response {
    match e {
        AuthError::Refused(r) => refused(&r, Challenge::Cargo, base_url),
        AuthError::Invalid(m) | AuthError::Conflict(m) => Response::error(400, &m),
        AuthError::NotFound(m) => Response::error(404, &m),
        AuthError::Registry(e) => super::errors::registry_error(e),
        e @ (AuthError::Corrupt { .. } | AuthError::Random(_)) => {
            error!("error: access control: {e}");
            Response::error(
                500,
                "internal error in access control; the server log has details",
            )
        }
    }
}

/// `GET /api/v1/crates/{name}/owners`: `{"users":[{"id":..,"login":..,"name":null}]}`.
pub fn owners_response(users: &[User]) -> Response {
    let users: Vec<_> = users
        .iter()
        .map(|u| serde_json::json!({ "id": u.id, "login": u.name, "name": null }))
        .collect();
    Response::json(200, &serde_json::json!({ "users": users }))
}

/// `PUT`/`DELETE` owners: cargo fails without `msg`.
pub fn owners_changed(msg: &str) -> Response {
    Response::json(200, &serde_json::json!({ "ok": true, "msg": msg }))
}

/// Most users one owners request may name.
pub const MAX_OWNERS_PER_REQUEST: usize = 32;

/// The body of an owners `PUT`/`DELETE`: `{"users":["alice","bob"]}`, at most
/// [`MAX_OWNERS_PER_REQUEST`] valid user names (a refusal never repeats the body).
pub fn owners_request(body: &[u8]) -> Result<Vec<String>, Response> {
    #[derive(serde::Deserialize)]
    struct Users {
        users: Vec<String>,
    }
    let bad = |detail: &str| Response::error(400, detail);
    let users = serde_json::from_slice::<Users>(body)
        .map_err(|_| bad("expected a JSON body {\"users\":[\"name\", ...]}"))?
        .users;
    if users.len() > MAX_OWNERS_PER_REQUEST {
        return Err(bad(&format!(
            "at most {MAX_OWNERS_PER_REQUEST} users per request"
        )));
    }
    for u in &users {
        crate::registry::validate_user_name(u).map_err(|e| bad(&e.to_string()))?;
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Body;
    use crate::registry::Scopes;

    /// A multi-byte character where a scheme's space would be used to panic the event loop.
    #[test]
    fn non_ascii_authorization_never_panics() {
        for v in [
            "Basicé",
            "Beareré",
            "pal_é",
            "é",
            "Basic é",
            "Bearer é",
            "ééééééé",
        ] {
            let t = token_from_header(v);
            assert!(t.is_some(), "{v}");
        }
        assert_eq!(token_from_header("Bearer é").as_deref(), Some("é"));
    }

    #[test]
    fn owners_bodies_are_bounded_and_never_echoed() {
        assert_eq!(
            owners_request(br#"{"users":["alice","bob"]}"#).unwrap(),
            ["alice", "bob"]
        );
        let many: Vec<String> = (0..=MAX_OWNERS_PER_REQUEST)
            .map(|i| format!("u{i}"))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "users": many })).unwrap();
        assert_eq!(owners_request(&body).unwrap_err().status, 400);
        let bad = owners_request(br#"{"users":["a[31m"]}"#).unwrap_err();
        assert_eq!(bad.status, 400);
        let Body::Bytes(b) = &bad.body else { panic!() };
        assert!(!b.contains(&0x1b), "the name is escaped");
        let junk = owners_request(b"{\"users\": 5, \"x\": \"<secret>\"}").unwrap_err();
        let Body::Bytes(b) = &junk.body else { panic!() };
        assert!(!String::from_utf8_lossy(b).contains("secret"));
    }

    #[test]
    fn tokens_from_the_authorization_header() {
        // base64("x:pal_abc") and base64("pal_abc:") and base64("user:")
        for (header, want) in [
            ("pal_abc", Some("pal_abc")),
            ("  pal_abc  ", Some("pal_abc")),
            ("Bearer pal_abc", Some("pal_abc")),
            ("bearer   pal_abc", Some("pal_abc")),
            ("Basic eDpwYWxfYWJj", Some("pal_abc")),
            ("basic cGFsX2FiYzo=", Some("pal_abc")),
            ("Basic dXNlcjo=", Some("user")),
            ("Basic !!!!", Some("Basic !!!!")),
            ("Basic eDpw", Some("p")),
            ("Bearerpal_abc", Some("Bearerpal_abc")),
            ("", None),
            ("   ", None),
        ] {
            assert_eq!(token_from_header(header).as_deref(), want, "{header:?}");
        }
    }

    #[test]
    fn base64_decodes_what_git_sends() {
        for (text, want) in [
            ("", &b""[..]),
            ("YQ==", b"a"),
            ("YWI=", b"ab"),
            ("YWJj", b"abc"),
            (
                "dG9rZW46cGFsXzAxMjM0NTY3ODlhYmNkZWY=",
                b"token:pal_0123456789abcdef",
            ),
            ("+/+/", &[0xfb, 0xff, 0xbf]),
        ] {
            assert_eq!(base64_decode(text).as_deref(), Some(want), "{text}");
        }
        for bad in ["Y", "YQ=", "Y===", "YQ==YQ==", "a b=", "YQ-_"] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    fn body_detail(r: &Response) -> String {
        let Body::Bytes(b) = &r.body else {
            panic!("no body")
        };
        let v: serde_json::Value = serde_json::from_slice(b).unwrap();
        v["errors"][0]["detail"].as_str().unwrap().to_owned()
    }

    fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    #[test]
    fn refusals_answer_401_with_a_challenge_or_403() {
        let url = "https://reg.example/sub";
        let r = refused(&Refusal::NoToken, Challenge::Cargo, url);
        assert_eq!(r.status, 401);
        assert_eq!(
            header(&r, "WWW-Authenticate"),
            Some("Cargo login_url=\"https://reg.example/sub/login\"")
        );
        assert!(body_detail(&r).contains("needs a token"));
        let r = refused(&Refusal::Unknown, Challenge::Basic, url);
        assert_eq!(r.status, 401);
        assert_eq!(
            header(&r, "WWW-Authenticate"),
            Some("Basic realm=\"palletizer\"")
        );
        for refusal in [Refusal::Expired { token: 1 }, Refusal::Revoked { token: 1 }] {
            assert_eq!(refused(&refusal, Challenge::Cargo, url).status, 401);
        }
        let r = refused(
            &Refusal::NotOwner {
                user: "bob".into(),
                krate: "foo".into(),
            },
            Challenge::Cargo,
            url,
        );
        assert_eq!(r.status, 403);
        assert_eq!(header(&r, "WWW-Authenticate"), None);
        assert!(body_detail(&r).contains("`bob` is not an owner of crate `foo`"));
        let r = refused(
            &Refusal::Scope {
                token: 3,
                needed: Scopes::READ,
            },
            Challenge::Cargo,
            url,
        );
        assert_eq!(r.status, 403);
        assert!(
            body_detail(&r).contains("`read` scope"),
            "{}",
            body_detail(&r)
        );
    }

    #[test]
    fn authorize_reads_every_header_form() {
        let (_tmp, reg) = crate::registry::testing::scratch_registry();
        let secret = reg.bootstrap_admin(100).unwrap().unwrap();
        let view = AuthView::load(reg.root()).unwrap();
        let req = Required {
            need: Need::Read,
            krate: None,
            challenge: Challenge::Basic,
        };
        for h in [
            secret.clone(),
            format!("Bearer {secret}"),
            format!(
                "Basic {}",
                base64_encode(format!("git:{secret}").as_bytes())
            ),
        ] {
            let p = authorize(&view, &req, Some(&h), 100).unwrap();
            assert_eq!(&*p.user, "admin");
        }
        assert_eq!(authorize(&view, &req, None, 100), Err(Refusal::NoToken));
        assert_eq!(
            authorize(&view, &req, Some("Basic !!!!"), 100),
            Err(Refusal::Unknown)
        );
    }

    /// The inverse of the decoder, for tests only.
    fn base64_encode(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let mut n = 0u32;
            for (i, &b) in chunk.iter().enumerate() {
                n |= u32::from(b) << (16 - 8 * i);
            }
            for i in 0..4 {
                out.push(if i <= chunk.len() {
                    ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char
                } else {
                    '='
                });
            }
        }
        out
    }

    #[test]
    fn base64_round_trips() {
        for len in 0..12 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 250) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&bytes)).unwrap(), bytes);
        }
    }

    #[test]
    fn owners_bodies_as_cargo_reads_and_sends_them() {
        let users = [User {
            id: 7,
            name: "alice".into(),
            admin: false,
            created: 0,
        }];
        let Body::Bytes(b) = owners_response(&users).body else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["users"][0]["id"], 7);
        assert_eq!(v["users"][0]["login"], "alice");
        let Body::Bytes(b) = owners_changed("done").body else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            (v["ok"].as_bool(), v["msg"].as_str()),
            (Some(true), Some("done"))
        );
        assert_eq!(
            owners_request(br#"{"users":["a","b"]}"#).unwrap(),
            ["a", "b"]
        );
        let bad = owners_request(b"[1]").unwrap_err();
        assert_eq!(bad.status, 400);
        assert!(body_detail(&bad).contains("users"));
    }

    #[test]
    fn auth_errors_map_to_statuses() {
        let url = "http://h";
        assert_eq!(auth_error(AuthError::NotFound("x".into()), url).status, 404);
        assert_eq!(auth_error(AuthError::Conflict("x".into()), url).status, 400);
        assert_eq!(auth_error(AuthError::Invalid("x".into()), url).status, 400);
        assert_eq!(
            auth_error(Refusal::Revoked { token: 1 }.into(), url).status,
            401
        );
        let e = AuthError::Refused(Refusal::NotOwner {
            user: "b".into(),
            krate: "f".into(),
        });
        assert_eq!(auth_error(e, url).status, 403);
        let corrupt = AuthError::Corrupt {
            path: "/secret/place".into(),
            msg: "bad".into(),
        };
        let r = auth_error(corrupt, url);
        assert_eq!(r.status, 500);
        assert!(!body_detail(&r).contains("/secret/place"));
    }
}
