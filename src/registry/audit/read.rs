//! Reading the audit log (`palletizer audit`): both files, oldest first, each change once
//! (its outcome line stands for its intent line), filtered by crate, acting user and time.

use super::{each_line, AuditOutcome, AuditRecord};
use crate::registry::{canonical, Context, Registry, Result};

/// Which records to show; `None` matches every one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// A crate name, in any spelling of it (`Foo-Bar` matches `foo_bar`).
    pub krate: Option<String>,
    /// The acting user: a token's user, or the Unix user at the command line.
    pub user: Option<String>,
    /// Unix seconds: records from then on.
    pub since: Option<u64>,
}

impl AuditQuery {
    fn matches(&self, r: &AuditRecord) -> bool {
        let krate = self.krate.as_deref().map(canonical);
        krate.is_none_or(|k| r.krate.as_deref().map(canonical) == Some(k))
            && self
                .user
                .as_deref()
                .is_none_or(|u| r.actor.user.as_deref() == Some(u))
            && self.since.is_none_or(|s| r.unix_time() >= s)
    }
}

impl Registry {
    /// Calls `each` with every record `q` matches, oldest first: a change once, as its
    /// outcome line tells it (an intent line whose outcome is not written yet shows as
    /// `started`). Returns how many lines did not parse (skipped).
    pub fn audit(&self, q: &AuditQuery, each: &mut dyn FnMut(AuditRecord)) -> Result<u64> {
        let mut skipped = 0;
        let mut intent: Option<AuditRecord> = None;
        let mut emit = |r: AuditRecord| {
            if q.matches(&r) {
                each(r);
            }
        };
        each_line(self.root(), &mut |line| {
            if line.iter().all(u8::is_ascii_whitespace) {
                return;
            }
            let Ok(r) = serde_json::from_slice::<AuditRecord>(line) else {
                skipped += 1;
                return;
            };
            // An intent is shown only if no outcome follows it.
            if let Some(open) = intent.take() {
                if r.outcome == AuditOutcome::Started {
                    emit(open);
                }
            }
            if r.outcome == AuditOutcome::Started {
                intent = Some(r);
            } else {
                emit(r);
            }
        })
        .context(|| format!("reading the audit log in {}", self.root().display()))?;
        if let Some(open) = intent {
            emit(open);
        }
        Ok(skipped)
    }
}
