//! Which authorities (`host[:port]`) are the registry's own: the one in its public URL, each
//! listener's bound address, and the loopback names (`localhost`, `127.0.0.1`, `[::1]`,
//! with any port: a page of another site can never make a browser send them). A request
//! for any other authority is not for this registry: a browser sends the attacker's name
//! after a DNS rebinding, and whatever it does must not reach a registry on loopback. An
//! `Origin` is the registry's own when its authority is one of these.
//!
//! Compared lowercased, with a port equal to the scheme's default left out (`host:80` is
//! `host` for `http`, `host:443` for `https`) and a trailing dot of a name dropped.

use std::net::SocketAddr;

/// The registry's own authorities, normalized.
#[derive(Debug, Clone, Default)]
pub struct Authorities {
    own: Vec<String>,
    /// The listeners' ports: a loopback name with one of them is an origin of ours.
    ports: Vec<u16>,
}

impl Authorities {
    /// The authority of the public URL `url` (none for a `file://` URL).
    pub fn of_url(url: &str) -> Authorities {
        let mut a = Authorities::default();
        if let Some((scheme, rest)) = url.split_once("://") {
            let authority = rest.split(['/', '?']).next().unwrap_or("");
            if !authority.is_empty() {
                a.own.push(normalize(authority, default_port(scheme)));
            }
        }
        a
    }

    /// Adds a listener bound at `addr`.
    pub fn add_listener(&mut self, addr: SocketAddr) {
        let a = normalize(&addr.to_string(), None);
        if !self.own.contains(&a) {
            self.own.push(a);
        }
        self.ports.push(addr.port());
    }

    /// Whether `authority` (a Host header's value, or an absolute-form target's) is ours.
    /// A plain-HTTP request's host with port 80, or a TLS one's with 443, matches the name
    /// without a port.
    pub fn is_own(&self, authority: &str, tls: bool) -> bool {
        let authority = normalize(authority, Some(if tls { 443 } else { 80 }));
        is_loopback_name(&authority) || self.own.contains(&authority)
    }

    /// Whether an `Origin` header's value (`scheme://host[:port]`) is one of ours. `null`
    /// (sent from sandboxed or privacy-sensitive contexts) is not.
    pub fn is_own_origin(&self, origin: &str) -> bool {
        let Some((scheme, authority)) = origin.split_once("://") else {
            return false;
        };
        let Some(port) = default_port(scheme) else {
            return false;
        };
        let authority = normalize(authority.trim_end_matches('/'), Some(port));
        let listener_port = |a: &str| {
            let port = a.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
            port.is_some_and(|p| self.ports.contains(&p))
        };
        self.own.contains(&authority) || (is_loopback_name(&authority) && listener_port(&authority))
    }
}

/// `localhost`, `127.0.0.1` or `[::1]`, with or without a port.
fn is_loopback_name(authority: &str) -> bool {
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => h,
        _ => authority,
    };
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// Lowercase, without a trailing dot on the name, without the default port.
fn normalize(authority: &str, default: Option<u16>) -> String {
    let a = authority.to_ascii_lowercase();
    let (host, port) = match a.rsplit_once(':') {
        // An IPv6 literal's colons are inside its brackets.
        Some((h, p)) if !p.contains(']') && p.bytes().all(|b| b.is_ascii_digit()) => {
            (h.to_owned(), p.parse::<u16>().ok())
        }
        _ => (a.clone(), None),
    };
    let host = host.strip_suffix('.').unwrap_or(&host).to_owned();
    match port {
        Some(p) if Some(p) != default => format!("{host}:{p}"),
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_s_own_authorities() {
        let mut a = Authorities::of_url("https://Registry.Example.com/reg");
        a.add_listener("127.0.0.1:8080".parse().unwrap());
        for own in [
            "registry.example.com",
            "REGISTRY.example.com.",
            "127.0.0.1:8080",
            "localhost:8080",
            "localhost:1",
            "localhost",
            "[::1]:8080",
        ] {
            assert!(a.is_own(own, false), "{own}");
        }
        assert!(a.is_own("registry.example.com:443", true));
        assert!(!a.is_own("registry.example.com:443", false));
        for foreign in [
            "attacker.example",
            "attacker.example:8080",
            "localhost.attacker.example",
            "127.0.0.2:8080",
            "registry.example.com.attacker.example",
            "",
        ] {
            assert!(!a.is_own(foreign, false), "{foreign}");
        }
        assert!(a.is_own_origin("https://registry.example.com"));
        assert!(a.is_own_origin("http://127.0.0.1:8080"));
        assert!(a.is_own_origin("http://localhost:8080"));
        for foreign in [
            "null",
            "https://evil.example",
            "http://localhost:1",
            "ftp://x",
        ] {
            assert!(!a.is_own_origin(foreign), "{foreign}");
        }
        let wild = {
            let mut w = Authorities::of_url("file:///tmp/reg");
            w.add_listener("[::]:9000".parse().unwrap());
            w
        };
        assert!(wild.is_own("localhost:9000", false));
        assert!(!wild.is_own("[::2]:9000", false));
        assert!(wild.is_own("[::]:9000", false));
        assert!(!wild.is_own("tmp", false));
    }
}
