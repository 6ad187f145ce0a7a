//! `palletizer audit`: the audit log, oldest first, as a table (time, action, what it is
//! about (the crate, or the user, token or access mode), version, actor, peer, outcome and
//! why) or, with `--json`, one JSON object a line as the log stores it (each change once:
//! its outcome line). Read only: it takes no lock.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use super::args::Audit;
use super::CliError;
use crate::registry::{AuditOutcome, AuditRecord, Registry};

/// Runs `audit` on the registry in `dir`, printing to `out`.
pub fn run(
    dir: &Path,
    Audit { query, json }: Audit,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let reg = Registry::open_as_is(dir)?;
    let mut rows = vec![[
        "TIME", "ACTION", "ABOUT", "VERSION", "ACTOR", "PEER", "OUTCOME",
    ]
    .map(String::from)];
    let mut failed = None;
    let skipped = reg.audit(&query, &mut |r| {
        if json {
            let line = serde_json::to_string(&r).expect("audit records serialize");
            if let Err(e) = writeln!(out, "{line}") {
                failed.get_or_insert(e);
            }
        } else {
            rows.push(row(&r));
        }
    })?;
    // A closed stdout (`| head`) is not a failure.
    if let Some(e) = failed.filter(|e| e.kind() != std::io::ErrorKind::BrokenPipe) {
        return Err(e.into());
    }
    if !json {
        super::auth::table(out, &rows);
    }
    if skipped > 0 {
        let _ = writeln!(
            std::io::stderr(),
            "warning: {skipped} line(s) of the audit log are not audit records (skipped)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A record as a row of the table: the outcome with its reason.
fn row(r: &AuditRecord) -> [String; 7] {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    // What a change is about when it names no crate: the user, token or mode.
    let mut about = match (&r.krate, &r.user, r.token, &r.access) {
        (Some(k), ..) => k.clone(),
        (None, Some(u), Some(t), _) => format!("user {u}, token {t}"),
        (None, Some(u), None, _) => format!("user {u}"),
        (None, None, Some(t), _) => format!("token {t}"),
        (None, None, None, Some(a)) => format!("access {a}"),
        _ => "-".into(),
    };
    if !r.users.is_empty() {
        about = format!("{about} (users {})", r.users.join(", "));
    }
    let outcome = match (&r.reason, r.outcome) {
        (Some(why), AuditOutcome::Refused | AuditOutcome::Failed | AuditOutcome::Interrupted) => {
            format!("{}: {why}", r.outcome.as_str())
        }
        (Some(why), _) if r.action == "restore" => format!("{} ({why})", r.outcome.as_str()),
        _ => r.outcome.as_str().to_owned(),
    };
    [
        r.time.clone(),
        r.action.clone(),
        about,
        dash(&r.version),
        r.actor.to_string(),
        dash(&r.peer),
        outcome,
    ]
}
