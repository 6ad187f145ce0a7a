//! The registry commands, one function each over one library call: `init`, `add`, `yank`
//! and `unyank`, `delete`, `list`, `check`, `squash-index`, `backup`, `restore`, `serve`.
//! Their arguments arrive parsed and checked ([`super::args`]); results go to stdout, one
//! line each, and per-file failures and warnings to stderr.
//!
//! Every change is a [`registry::Command`] run through [`Registry::apply`] as the Unix user
//! at the keyboard; the events it caused decide the maintenance after it ([`Changes`]).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::args::{Add, Delete, Init, Serve, ServeFrom, Yank};
use super::CliError;
use crate::net::config::{Listener, ServerConfig};
use crate::registry::{self, Access, Actor, CrateName, Event, Outcome, Problem, Registry};

/// The changes one command line made, and what they caused.
struct Changes {
    actor: Actor,
    events: Vec<Event>,
}

impl Changes {
    fn new() -> Changes {
        Changes {
            actor: Actor::cli(),
            events: Vec::new(),
        }
    }

    fn apply(&mut self, reg: &Registry, cmd: registry::Command) -> Result<Outcome, CliError> {
        let applied = reg.apply(cmd, &self.actor)?;
        self.events.extend(applied.events);
        Ok(applied.outcome)
    }

    /// Keeps the index repository packed once a change gave it a new commit; a failure here
    /// changes nothing and is retried after the next change.
    fn maintain(self, dir: &Path) {
        if !self.events.iter().any(Event::moves_index_head) {
            return;
        }
        if let Err(e) = Registry::open(dir).and_then(|r| r.maintain()) {
            let _ = writeln!(io::stderr(), "warning: packing the index: {e}");
        }
    }
}

pub fn init(dir: &Path, Init { opts, access }: Init) -> Result<ExitCode, CliError> {
    let reg = Registry::init(dir, opts)?;
    if access != reg.settings().access {
        reg.set_access(access)?;
    }
    out!(
        "Created registry in {} for {} (access: {access})",
        dir.display(),
        reg.settings().url
    );
    if access != Access::Open {
        out!(
            "Tokens are needed to {}: `palletizer user add NAME --admin`, then \
             `palletizer token create --user NAME`",
            if access == Access::Private {
                "use it"
            } else {
                "publish"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn add(dir: &Path, Add { files, pubtime }: Add) -> Result<ExitCode, CliError> {
    let reg = Registry::open(dir)?;
    let mut changes = Changes::new();
    let mut failed = 0;
    for path in &files {
        let added = reg
            .check_crate_file(path, pubtime.clone())
            .map_err(CliError::from)
            .and_then(|c| changes.apply(&reg, registry::Command::Publish(c)));
        match added {
            Ok(Outcome::Published(e)) => out!("Added {} {}", e.name, e.vers),
            Ok(o) => unreachable!("a publish answered {o:?}"),
            Err(CliError(e)) => {
                failed += 1;
                let _ = writeln!(io::stderr(), "error: {}: {e}", path.display());
            }
        }
    }
    if failed > 0 {
        return Ok(ExitCode::FAILURE);
    }
    changes.maintain(dir);
    Ok(ExitCode::SUCCESS)
}

pub fn yank(dir: &Path, y: Yank) -> Result<ExitCode, CliError> {
    let reg = Registry::open(dir)?;
    let mut changes = Changes::new();
    let cmd = registry::Command::Yank {
        name: y.name.clone(),
        vers: y.version.clone(),
        yanked: y.yank,
    };
    let Outcome::Yanked { changed } = changes.apply(&reg, cmd)? else {
        unreachable!("a yank answers whether it changed the version")
    };
    let state = if y.yank { "yanked" } else { "not yanked" };
    if changed {
        out!("{} {} is now {state}", y.name, y.version);
    } else {
        out!("{} {} was already {state}", y.name, y.version);
    }
    changes.maintain(dir);
    Ok(ExitCode::SUCCESS)
}

pub fn delete(dir: &Path, d: Delete) -> Result<ExitCode, CliError> {
    let reg = Registry::open(dir)?;
    let mut changes = Changes::new();
    let cmd = registry::Command::Delete {
        name: d.name.clone(),
        vers: d.version.clone(),
        release_name: d.release_name,
    };
    let Outcome::Deleted { versions: gone } = changes.apply(&reg, cmd)? else {
        unreachable!("a delete answers the versions it removed")
    };
    for v in &gone {
        out!("Deleted {} {v}", d.name);
    }
    if d.release_name {
        out!(
            "The name {} is free: its owners were forgotten, and anyone who may publish new \
             crates may take it",
            d.name
        );
        if gone.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
    }
    // Said every time: the numbers stay taken, which surprises whoever meant to publish the
    // same version again with a fix.
    out!(
        "Deleted version numbers are never reused: {} {} cannot be published again{}",
        d.name,
        gone.join(", "),
        match (&d.version, d.release_name) {
            (None, false) => {
                "; new versions can, by the crate's owners or an admin (the name stays \
                 theirs; `--release-name` gives it up)"
            }
            (None, true) => "; new versions can",
            (Some(_), _) => "",
        }
    );
    changes.maintain(dir);
    Ok(ExitCode::SUCCESS)
}

pub fn list(dir: &Path, name: Option<CrateName>) -> Result<ExitCode, CliError> {
    let reg = Registry::open(dir)?;
    let listed = reg.list(name.as_ref())?;
    if let (true, Some(name)) = (listed.is_empty(), &name) {
        return Err(CliError(format!("crate `{name}` does not exist")));
    }
    for l in listed {
        let y = if l.yanked { " (yanked)" } else { "" };
        out!("{} {}{y}", l.name, l.vers);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn check(dir: &Path, repair: bool) -> Result<ExitCode, CliError> {
    let reg = Registry::open_as_is(dir)?;
    let problems = reg.check()?;
    for p in &problems {
        out!("problem: {p}");
    }
    let mut remaining = problems.len();
    if repair && problems.iter().any(Problem::repairable) {
        for done in reg.repair(&problems)? {
            out!("repaired: {done}");
        }
        let left = reg.check()?;
        for p in &left {
            out!("not repaired: {p}");
        }
        remaining = left.len();
    } else if repair {
        for p in &problems {
            out!("not repaired: {p}");
        }
    }
    if remaining > 0 {
        let _ = writeln!(io::stderr(), "error: {remaining} problem(s) remain");
        return Ok(ExitCode::FAILURE);
    }
    out!("registry is consistent");
    Ok(ExitCode::SUCCESS)
}

pub fn squash_index(dir: &Path) -> Result<ExitCode, CliError> {
    let reg = Registry::open(dir)?;
    let mut changes = Changes::new();
    let Outcome::IndexSquashed { head, packed } =
        changes.apply(&reg, registry::Command::SquashIndex)?
    else {
        unreachable!("a squash answers the commit it left")
    };
    out!(
        "Squashed the index history to one commit {head}: {} objects kept, \
         {} loose objects and {} packs removed",
        packed.objects,
        packed.removed_loose,
        packed.removed_packs
    );
    changes.maintain(dir);
    Ok(ExitCode::SUCCESS)
}

pub fn backup(dir: &Path, file: &Path) -> Result<ExitCode, CliError> {
    let done = registry::backup(dir, file)?;
    out!(
        "Backed up {} entries ({} bytes of files, index at {}) to {}",
        done.entries,
        done.bytes,
        done.head,
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn restore(file: &Path, target: &Path) -> Result<ExitCode, CliError> {
    let done = registry::restore(file, target)?;
    for note in &done.notes {
        out!("note: {note}");
    }
    out!(
        "Restored the backup of {} (index at {}, {} entries) into {}; registry is consistent",
        done.created,
        done.head,
        done.entries,
        target.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn serve(dir: PathBuf, Serve { from, verbosity }: Serve) -> Result<ExitCode, CliError> {
    crate::log::set_verbosity(verbosity);
    let (config, path) = match from {
        ServeFrom::Dir { bind } => {
            let listener = Listener {
                bind,
                tls: None,
                metrics: false,
            };
            let config = ServerConfig {
                registry: Some(dir),
                listeners: vec![listener],
                limits: Default::default(),
            };
            (config, None)
        }
        ServeFrom::Config(path) => (ServerConfig::load(&path)?, Some(path)),
    };
    crate::server::serve(config, path, true).map_err(|e| CliError(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}
