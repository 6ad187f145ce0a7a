//! HTTP/1.1 on bytes: request heads, responses, and the route table that turns a request
//! into a response (or, for writes, into a job for the registry worker).
//!
//! Nothing here knows sockets: the event loop in [`crate::net`] feeds bytes in and writes
//! the rendered responses out.

pub mod api;
pub mod auth;
pub mod authority;
pub mod crate_json;
pub mod endpoint;
pub mod errors;
pub mod files;
pub mod mirror;
pub mod pages;
pub mod request;
pub mod response;
pub mod tickets;

pub use request::{Head, Method};
pub use response::{Body, BodyCursor, Response};

pub use api::{Job, Routed};
use files::Trees;

use std::sync::Arc;

use crate::registry::{Access, AuthView, Principal};

pub use endpoint::{Endpoint, Lane, Metric, METRICS_PATH};

/// What the router needs to know about the registry it serves.
#[derive(Debug)]
pub struct Site {
    /// The registry's public URL, as in `config.json` (login URLs are made from it).
    pub url: String,
    /// The path of the registry's public URL (`""` or `/prefix`), stripped from requests.
    pub base_path: String,
    pub trees: Trees,
    /// Largest publish body: the crate size limit plus the metadata and its framing.
    pub max_upload: u64,
    /// Largest docs upload (`max-docs-size`).
    pub max_docs: u64,
    /// The key of the docs read tickets of a private registry (see [`tickets`]).
    pub docs_key: tickets::TicketKey,
    /// Who may do what; reloaded by the server when `auth.json` or `palletizer.toml` change.
    pub auth: Arc<AuthView>,
    /// Why the access files do not load now (a hand edit left them broken). While set,
    /// every request that needs a token is refused: the view kept from before may still
    /// hold a token the edit meant to revoke.
    pub auth_broken: Option<String>,
    /// The authorities requests may be for (see [`authority`]).
    pub authorities: authority::Authorities,
    /// Crate files served since the counts were last handed to the writer.
    pub downloads: files::Downloads,
    /// The registry has a `[mirror]`: `/mirror/` is served.
    pub mirror: bool,
}

impl Site {
    pub fn new(url: &str, trees: Trees, max_crate_size: u64) -> Site {
        let without_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
        let base_path = without_scheme
            .find('/')
            .map_or("", |i| &without_scheme[i..])
            .trim_end_matches('/')
            .to_owned();
        Site {
            url: url.trim_end_matches('/').to_owned(),
            base_path,
            trees,
            max_upload: max_crate_size + api::MAX_METADATA + 8,
            max_docs: crate::registry::Settings::default().max_docs_size,
            docs_key: tickets::TicketKey::random(),
            auth: Arc::new(AuthView::new(Access::Open, &Default::default())),
            auth_broken: None,
            authorities: authority::Authorities::of_url(url),
            downloads: files::Downloads::default(),
            mirror: false,
        }
    }

    /// The access mode in force.
    pub fn access(&self) -> Access {
        self.auth.access()
    }
}

/// What [`authorize`] refused: the answer, and the reason for the log (never the token).
#[derive(Debug)]
pub struct Refused {
    pub response: Response,
    pub reason: String,
    /// A token was presented and is not one (unknown, revoked, expired): a failed
    /// authentication, which the rate limits count.
    pub bad_token: bool,
    /// The token the refusal names (by id: expired, revoked, or short of what the route
    /// needs), for the audit log.
    pub token: Option<u64>,
}

/// Whether a request is for this registry at all, before anything else is looked at: its
/// authority (Host, or an absolute-form target's) must be one of the registry's own in
/// every access mode (else 421: a DNS rebinding reaches a loopback registry under the
/// attacker's name), and a request that changes state must not come from another site's
/// page (a foreign `Origin` is a 403; cargo and git send none). `tls`: the connection's.
pub fn admit(site: &Site, endpoint: &Endpoint, head: &Head, tls: bool) -> Result<(), Box<Refused>> {
    if let Some(authority) = head.authority() {
        if !site.authorities.is_own(authority, tls) {
            let detail = format!(
                "this server does not serve `{authority}`; the registry is {}",
                site.url
            );
            return Err(Box::new(Refused {
                // RFC 9110 15.5.20: 421, the request was sent to a server that does not
                // answer for its authority.
                response: Response::error(421, &detail),
                reason: format!("foreign authority {authority}"),
                bad_token: false,
                token: None,
            }));
        }
    }
    if let Some(origin) = head.origin.as_deref() {
        if endpoint.changes_state() && !site.authorities.is_own_origin(origin) {
            let detail =
                format!("cross-site request refused: `{origin}` is not this registry's origin");
            return Err(Box::new(Refused {
                response: Response::error(403, &detail),
                reason: format!("foreign origin {origin}"),
                bad_token: false,
                token: None,
            }));
        }
    }
    Ok(())
}

/// Checks a request's credentials against what its endpoint needs in the access mode in
/// force, before anything else happens (no body is read, no `100 Continue` sent for a
/// refused request). `Ok(None)`: the endpoint needs nothing. `now`: seconds since the epoch.
pub fn authorize(
    site: &Site,
    endpoint: &Endpoint,
    head: &Head,
    now: u64,
) -> Result<Option<Principal>, Box<Refused>> {
    let Some(req) = endpoint.required(site.access()) else {
        return Ok(None);
    };
    // Fail closed: no token is taken while the files that say who may do what are broken.
    if let Some(why) = &site.auth_broken {
        let detail = format!(
            "the registry's access control is broken ({why}); every request that needs a \
             token is refused until an administrator fixes it"
        );
        return Err(Box::new(Refused {
            response: Response::error(503, &detail),
            reason: "access control files broken".into(),
            bad_token: false,
            token: None,
        }));
    }
    let page = endpoint.takes_session_cookie();
    let cookie = (page && head.authorization.is_none())
        .then(|| head.cookie.as_deref().and_then(pages::session_token))
        .flatten();
    auth::authorize(
        &site.auth,
        &req,
        head.authorization.as_deref().or(cookie),
        now,
    )
    .map(Some)
    .map_err(|refusal| {
        let response = if page && refusal.is_unauthenticated() {
            pages::login_required(site, head, &refusal.detail())
        } else {
            auth::refused(&refusal, req.challenge, &site.url)
        };
        Box::new(Refused {
            response,
            reason: refusal.reason().to_string(),
            bad_token: refusal.is_unauthenticated() && refusal != crate::registry::Refusal::NoToken,
            token: refusal.token(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_path_from_url() {
        let t = || Trees::new("/i".into(), "/c".into(), 0);
        assert_eq!(Site::new("http://h:1", t(), 0).base_path, "");
        assert_eq!(Site::new("https://h/reg/", t(), 0).base_path, "/reg");
        assert_eq!(Site::new("file:///tmp/reg", t(), 0).base_path, "/tmp/reg");
    }
}
