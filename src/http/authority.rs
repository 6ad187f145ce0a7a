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

/// The registry's own authorities: `(host, port)`, the host lowercased without a trailing
/// dot, the port `None` where it is the scheme's default.
#[derive(Debug, Clone, Default)]
pub struct Authorities {
    own: Vec<(String, Option<u16>)>,
    /// The listeners' ports: a loopback name with one of them is an origin of ours.
    ports: Vec<u16>,
}

impl Authorities {
    /// The authority of the public URL `url` (none for a `file://` URL).
    pub fn of_url(url: &str) -> Authorities {
        let mut a = Authorities::default();
        if let Some((scheme, rest)) = url.split_once("://") {
            let authority = rest.split(['/', '?']).next().unwrap_or("");
            if let (false, Some((host, port))) =
                (authority.is_empty(), split(authority, default_port(scheme)))
            {
                a.own.push((host.to_ascii_lowercase(), port));
            }
        }
        a
    }

    /// Adds a listener bound at `addr`.
    pub fn add_listener(&mut self, addr: SocketAddr) {
        let host = match addr {
            SocketAddr::V4(v4) => v4.ip().to_string(),
            SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
        };
        let own = (host, Some(addr.port()));
        if !self.own.contains(&own) {
            self.own.push(own);
        }
        self.ports.push(addr.port());
    }

    /// Whether `authority` (a Host header's value, or an absolute-form target's) is ours.
    /// A plain-HTTP request's host with port 80, or a TLS one's with 443, matches the name
    /// without a port. Runs on every request: compares, allocates nothing.
    pub fn is_own(&self, authority: &str, tls: bool) -> bool {
        let Some((host, port)) = split(authority, Some(if tls { 443 } else { 80 })) else {
            return false;
        };
        is_loopback_name(host) || self.has(host, port)
    }

    /// Whether an `Origin` header's value (`scheme://host[:port]`) is one of ours. `null`
    /// (sent from sandboxed or privacy-sensitive contexts) is not.
    pub fn is_own_origin(&self, origin: &str) -> bool {
        let Some((scheme, authority)) = origin.split_once("://") else {
            return false;
        };
        let Some((host, port)) = split(authority.trim_end_matches('/'), default_port(scheme))
        else {
            return false;
        };
        let listener_port = port.is_some_and(|p| self.ports.contains(&p));
        self.has(host, port) || (is_loopback_name(host) && listener_port)
    }

    fn has(&self, host: &str, port: Option<u16>) -> bool {
        self.own
            .iter()
            .any(|(h, p)| *p == port && h.eq_ignore_ascii_case(host))
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else {
        None
    }
}

/// `host[:port]` -> the host without a trailing dot, and the port unless it is `default`.
/// `None`: a port that is no number.
fn split(authority: &str, default: Option<u16>) -> Option<(&str, Option<u16>)> {
    let (host, port) = match authority.rsplit_once(':') {
        // An IPv6 literal's colons are inside its brackets.
        Some((h, p)) if !p.contains(']') => (h, Some(p.parse::<u16>().ok()?)),
        _ => (authority, None),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    Some((host, port.filter(|&p| Some(p) != default)))
}

/// `localhost`, `127.0.0.1` or `[::1]` (any case).
fn is_loopback_name(host: &str) -> bool {
    ["localhost", "127.0.0.1", "[::1]"]
        .iter()
        .any(|n| n.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_s_own_authorities() {
        assert!(!Authorities::default().is_own("localhost:x", false));
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
