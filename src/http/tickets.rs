//! Read tickets for docs in a private registry. Docs are served in a sandbox (an opaque
//! origin, see [`super::files::DOCS_CSP`]), and browsers treat every request a sandboxed page
//! makes as cross-site: the login cookie (`SameSite=Strict`) is not sent with its styles,
//! scripts and search index. So a reader whose cookie let them open a docs page is sent to
//! the same page under `/docs/~{ticket}/{name}/{vers}/…`: rustdoc's links are relative, so
//! everything the page loads carries the ticket in its path.
//!
//! A ticket is an expiry time and an HMAC-SHA256 (under a key made at each start) of that time
//! and the one docs tree it opens, `{name}/{vers}`: it reads that version's docs and nothing
//! else, for [`TICKET_SECS`]. The page's own scripts can see it; they were written by that
//! tree's publisher, whose docs are all it opens.

use sha2::{Digest, Sha256};

/// How long a ticket reads its docs tree.
pub const TICKET_SECS: u64 = 12 * 3600;
/// Bytes of the MAC a ticket carries.
const MAC_BYTES: usize = 16;

/// The key tickets are made with: random, new at each start (tickets of an earlier run
/// are refused, and the reader is sent to get a new one).
pub struct TicketKey([u8; 32]);

/// Never the key itself.
impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKey(..)")
    }
}

impl TicketKey {
    pub fn random() -> TicketKey {
        let mut key = [0u8; 32];
        // Without randomness no ticket is worth anything: refuse them all (an all-zero
        // key would be guessable), which `check` does for a key it cannot trust.
        if getrandom::getrandom(&mut key).is_err() {
            key = [0; 32];
        }
        TicketKey(key)
    }

    /// A ticket for the docs tree `tree` (`{name}/{vers}` as the path spells them).
    pub fn issue(&self, tree: &str, now: u64) -> String {
        let until = now + TICKET_SECS;
        format!("~{until:x}.{}", hex(&self.mac(until, tree)))
    }

    /// Whether `ticket` (with its `~`) opens `tree` at `now`.
    pub fn check(&self, ticket: &str, tree: &str, now: u64) -> bool {
        if self.0 == [0; 32] {
            return false;
        }
        let Some((until, mac)) = ticket.strip_prefix('~').and_then(|t| t.split_once('.')) else {
            return false;
        };
        let Ok(until) = u64::from_str_radix(until, 16) else {
            return false;
        };
        if until < now || until > now + TICKET_SECS {
            return false;
        }
        let want = hex(&self.mac(until, tree));
        // Constant time: a timing difference must not spell the MAC out.
        mac.len() == want.len()
            && mac
                .bytes()
                .zip(want.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// HMAC-SHA256 (RFC 2104) of `{until}:{tree}`, cut to [`MAC_BYTES`].
    fn mac(&self, until: u64, tree: &str) -> [u8; MAC_BYTES] {
        let mut inner = Sha256::new();
        inner.update(self.0.map(|b| b ^ 0x36));
        inner.update([0x36; 32]);
        inner.update(format!("{until:x}:{tree}"));
        let mut outer = Sha256::new();
        outer.update(self.0.map(|b| b ^ 0x5c));
        outer.update([0x5c; 32]);
        outer.update(inner.finalize());
        let full = outer.finalize();
        let mut out = [0u8; MAC_BYTES];
        out.copy_from_slice(&full[..MAC_BYTES]);
        out
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_its_tree_only_and_only_for_a_while() {
        let key = TicketKey::random();
        let now = 1_800_000_000;
        let t = key.issue("foo/1.0.0", now);
        assert!(t.starts_with('~'), "{t}");
        assert!(key.check(&t, "foo/1.0.0", now));
        assert!(key.check(&t, "foo/1.0.0", now + TICKET_SECS));
        assert!(
            !key.check(&t, "foo/1.0.0", now + TICKET_SECS + 1),
            "expired"
        );
        assert!(!key.check(&t, "foo/1.0.1", now), "another version");
        assert!(!key.check(&t, "bar/1.0.0", now), "another crate");
        assert!(
            !TicketKey::random().check(&t, "foo/1.0.0", now),
            "another start"
        );
        let (until, _) = t.split_once('.').unwrap();
        let forged = format!("{until}.{}", "0".repeat(2 * MAC_BYTES));
        assert!(!key.check(&forged, "foo/1.0.0", now));
        let later = format!(
            "~{:x}.{}",
            now + 10 * TICKET_SECS,
            t.split_once('.').unwrap().1
        );
        assert!(!key.check(&later, "foo/1.0.0", now), "an expiry moved out");
        for bad in ["", "~", "~x.y", "abc", "~1.", "~.00"] {
            assert!(!key.check(bad, "foo/1.0.0", now), "{bad}");
        }
    }
}
