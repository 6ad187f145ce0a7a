//! The `palletizer` command line: argument parsing and output over [`crate::registry`].
//!
//! Every command is a thin shell over one library call. Errors are printed as one line on
//! stderr, and the exit status is non-zero.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use lexopt::prelude::*;

pub mod auth;

use crate::net::config::{Listener, ServerConfig};
use crate::registry::index::Pubtime;
use crate::registry::settings::Access;
use crate::registry::{
    backup, check, Actor, Command, CrateName, Event, InitOptions, Outcome, Registry,
};

const USAGE: &str = "\
usage: palletizer [-r DIR] COMMAND [ARGS]

commands:
  init --url URL [--access MODE] [--index-dir D] [--crates-dir D] [--no-crates-io]
       [--allowed-registry INDEX_URL]...
                            create a registry in DIR (access: open, public (default), private)
  add [--pubtime TIME] FILE.crate...
                            publish crate files (metadata from their Cargo.toml); TIME, as
                            YYYY-MM-DDTHH:MM:SSZ, is their original publish time (default: now)
  yank NAME VERSION         mark a version yanked
  unyank NAME VERSION       undo a yank
  delete NAME [VERSION] [--release-name]
                            remove one version, or every version, and their crate files;
                            their version numbers can never be published again, and the
                            name stays with the crate's owners (or the admins) unless
                            --release-name gives it up for anyone to publish
  list [NAME]               list crates and versions
  check [--repair]          verify the index against the crate files and git
  squash-index              replace the index's git history with one commit (clients keep
                            working; clones get smaller and faster)
  backup FILE               write the whole registry to FILE (a gzipped tar), under the
                            registry lock: a running server keeps serving, publishes wait
  restore FILE DIR          make a registry in DIR (new or empty) from a backup, and check it
  serve [CONFIG.toml] [--bind ADDR]
                            run the server (with no config: a registry in DIR, created if needed)

options:
  -r, --registry DIR        the registry directory (default: the current directory)
  -h, --help                this help
";

/// A failure to report: one line, exit status 1.
#[derive(Debug)]
pub struct CliError(pub String);

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> CliError {
        CliError(e.to_string())
    }
}

/// Runs the command line and turns the outcome into an exit status.
pub fn main() -> ExitCode {
    match run(std::env::args_os().skip(1).collect()) {
        Ok(code) => code,
        Err(CliError(msg)) => {
            let _ = writeln!(io::stderr(), "error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a line on stdout; a closed stdout (`| head`) is not an error.
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = writeln!(io::stdout(), $($arg)*);
    }};
}

fn string(v: OsString) -> Result<String, CliError> {
    v.into_string()
        .map_err(|v| CliError(format!("argument is not UTF-8: {}", v.to_string_lossy())))
}

pub fn run(args: Vec<OsString>) -> Result<ExitCode, CliError> {
    let mut parser = lexopt::Parser::from_args(args);
    let mut dir = PathBuf::from(".");
    let mut command: Option<String> = None;
    let mut rest: Vec<OsString> = Vec::new();
    let mut flags: Vec<(String, Option<OsString>)> = Vec::new();
    while let Some(arg) = parser.next()? {
        match arg {
            Short('r') | Long("registry") => dir = parser.value()?.into(),
            Short('h') | Long("help") => {
                out!("{USAGE}\naccess control:\n{}", auth::USAGE);
                return Ok(ExitCode::SUCCESS);
            }
            Long(
                flag @ ("url" | "access" | "index-dir" | "crates-dir" | "allowed-registry" | "bind"
                | "pubtime"),
            ) => {
                let flag = flag.to_owned();
                flags.push((flag, Some(parser.value()?)));
            }
            Long(flag @ ("no-crates-io" | "repair" | "release-name")) => {
                flags.push((flag.to_owned(), None))
            }
            Short('q') | Long("quiet") => flags.push(("quiet".into(), None)),
            Short('v') | Long("verbose") => flags.push(("verbose".into(), None)),
            Value(v) if command.is_none() => {
                let c = string(v)?;
                if auth::COMMANDS.contains(&c.as_str()) {
                    return auth::run(&c, parser.raw_args()?.collect(), &dir);
                }
                command = Some(c);
            }
            Value(v) => rest.push(v),
            other => return Err(other.unexpected().into()),
        }
    }
    let Some(command) = command else {
        return Err(CliError(
            "no command given (see `palletizer --help`)".into(),
        ));
    };
    let allowed: &[&str] = match command.as_str() {
        "init" => &[
            "url",
            "access",
            "index-dir",
            "crates-dir",
            "allowed-registry",
            "no-crates-io",
        ],
        "add" => &["pubtime"],
        "check" => &["repair"],
        "delete" => &["release-name"],
        "serve" => &["bind", "quiet", "verbose"],
        _ => &[],
    };
    if let Some((f, _)) = flags.iter().find(|(f, _)| !allowed.contains(&f.as_str())) {
        return Err(CliError(format!("`--{f}` does not apply to `{command}`")));
    }
    let flag = |name: &str| {
        flags
            .iter()
            .find(|(f, _)| f == name)
            .map(|(_, v)| v.clone())
    };
    let positional =
        |n: std::ops::RangeInclusive<usize>, what: &str| -> Result<Vec<String>, CliError> {
            if !n.contains(&rest.len()) {
                return Err(CliError(format!("usage: palletizer {command} {what}")));
            }
            rest.iter().cloned().map(string).collect()
        };
    // Every change is a command run as the Unix user at the keyboard; what it caused decides
    // the maintenance after it.
    let actor = Actor::cli();
    let mut events = Vec::new();
    let mut apply = |reg: &Registry, cmd| -> Result<Outcome, CliError> {
        let applied = reg.apply(cmd, &actor)?;
        events.extend(applied.events);
        Ok(applied.outcome)
    };
    match command.as_str() {
        "init" => {
            positional(0..=0, "--url URL [options]")?;
            let path = |name| flag(name).flatten().map(PathBuf::from);
            let url = flag("url")
                .flatten()
                .ok_or_else(|| CliError("init needs --url URL".into()))?;
            let opts = InitOptions {
                url: string(url)?,
                index_dir: path("index-dir"),
                crates_dir: path("crates-dir"),
                crates_io: flag("no-crates-io").is_none(),
                allowed_registries: flags
                    .iter()
                    .filter(|(f, _)| f == "allowed-registry")
                    .filter_map(|(_, v)| v.clone())
                    .map(string)
                    .collect::<Result<_, _>>()?,
            };
            let access = match flag("access").flatten() {
                Some(a) => string(a)?.parse::<Access>()?,
                None => Access::Public,
            };
            let reg = Registry::init(&dir, opts)?;
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
        }
        "add" => {
            if rest.is_empty() {
                return Err(CliError(
                    "usage: palletizer add [--pubtime TIME] FILE.crate...".into(),
                ));
            }
            // Checked before the registry is touched: a bad time adds nothing.
            let pubtime = match flag("pubtime").flatten() {
                Some(t) => Some(Pubtime::parse(&string(t)?)?),
                None => None,
            };
            let reg = Registry::open(&dir)?;
            let mut failed = 0;
            for file in &rest {
                let path = PathBuf::from(file);
                let added = reg
                    .check_crate_file(&path, pubtime.clone())
                    .map_err(CliError::from)
                    .and_then(|c| apply(&reg, Command::Publish(c)));
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
        }
        "yank" | "unyank" => {
            let a = positional(2..=2, "NAME VERSION")?;
            let name = CrateName::parse(&a[0])?;
            let reg = Registry::open(&dir)?;
            let yank = command == "yank";
            let cmd = Command::Yank {
                name,
                vers: a[1].clone(),
                yanked: yank,
            };
            let Outcome::Yanked { changed } = apply(&reg, cmd)? else {
                unreachable!("a yank answers whether it changed the version")
            };
            let state = if yank { "yanked" } else { "not yanked" };
            if changed {
                out!("{} {} is now {state}", a[0], a[1]);
            } else {
                out!("{} {} was already {state}", a[0], a[1]);
            }
        }
        "delete" => {
            let a = positional(1..=2, "NAME [VERSION] [--release-name]")?;
            let name = CrateName::parse(&a[0])?;
            let release_name = flag("release-name").is_some();
            let reg = Registry::open(&dir)?;
            let cmd = Command::Delete {
                name,
                vers: a.get(1).cloned(),
                release_name,
            };
            let Outcome::Deleted { versions: gone } = apply(&reg, cmd)? else {
                unreachable!("a delete answers the versions it removed")
            };
            for v in &gone {
                out!("Deleted {} {v}", a[0]);
            }
            if release_name {
                out!(
                    "The name {} is free: its owners were forgotten, and anyone who may \
                     publish new crates may take it",
                    a[0]
                );
                if gone.is_empty() {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            // Said every time: the numbers stay taken, which surprises whoever meant to
            // publish the same version again with a fix.
            out!(
                "Deleted version numbers are never reused: {} {} cannot be published again{}",
                a[0],
                gone.join(", "),
                match (a.len(), release_name) {
                    (1, false) => {
                        "; new versions can, by the crate's owners or an admin (the name stays \
                         theirs; `--release-name` gives it up)"
                    }
                    (1, true) => "; new versions can",
                    _ => "",
                }
            );
        }
        "list" => {
            let a = positional(0..=1, "[NAME]")?;
            let name = a.first().map(|n| CrateName::parse(n)).transpose()?;
            let reg = Registry::open(&dir)?;
            let listed = reg.list(name.as_ref())?;
            if listed.is_empty() {
                if let Some(name) = a.first() {
                    return Err(CliError(format!("crate `{name}` does not exist")));
                }
            }
            for l in listed {
                let y = if l.yanked { " (yanked)" } else { "" };
                out!("{} {}{y}", l.name, l.vers);
            }
        }
        "check" => {
            positional(0..=0, "[--repair]")?;
            let reg = Registry::open_as_is(&dir)?;
            let problems = check::check(&reg)?;
            for p in &problems {
                out!("problem: {p}");
            }
            let mut remaining = problems.len();
            if flag("repair").is_some() && problems.iter().any(check::Problem::repairable) {
                for done in check::repair(&reg, &problems)? {
                    out!("repaired: {done}");
                }
                let left = check::check(&reg)?;
                for p in &left {
                    out!("not repaired: {p}");
                }
                remaining = left.len();
            } else if flag("repair").is_some() {
                for p in &problems {
                    out!("not repaired: {p}");
                }
            }
            if remaining > 0 {
                let _ = writeln!(io::stderr(), "error: {remaining} problem(s) remain");
                return Ok(ExitCode::FAILURE);
            }
            out!("registry is consistent");
        }
        "squash-index" => {
            positional(0..=0, "")?;
            let reg = Registry::open(&dir)?;
            let Outcome::IndexSquashed { head, packed } = apply(&reg, Command::SquashIndex)? else {
                unreachable!("a squash answers the commit it left")
            };
            out!(
                "Squashed the index history to one commit {head}: {} objects kept, \
                 {} loose objects and {} packs removed",
                packed.objects,
                packed.removed_loose,
                packed.removed_packs
            );
        }
        "backup" => {
            let a = positional(1..=1, "FILE")?;
            let file = PathBuf::from(&a[0]);
            let done = backup::backup(&dir, &file)?;
            out!(
                "Backed up {} entries ({} bytes of files, index at {}) to {}",
                done.entries,
                done.bytes,
                done.head,
                file.display()
            );
        }
        "restore" => {
            let a = positional(2..=2, "FILE DIR")?;
            let target = PathBuf::from(&a[1]);
            let done = backup::restore(&PathBuf::from(&a[0]), &target)?;
            for note in &done.notes {
                out!("note: {note}");
            }
            out!(
                "Restored the backup of {} (index at {}, {} entries) into {}; \
                 registry is consistent",
                done.created,
                done.head,
                done.entries,
                target.display()
            );
        }
        "serve" => return serve(dir, &rest, flag("bind").flatten(), &flags),
        other => {
            return Err(CliError(format!(
                "unknown command `{other}` (see `palletizer --help`)"
            )))
        }
    }
    if events.iter().any(Event::moves_index_head) {
        // Keeps the index repository packed; a failure here changes nothing and is retried
        // after the next change.
        if let Err(e) = Registry::open(&dir).and_then(|r| r.maintain()) {
            let _ = writeln!(io::stderr(), "warning: packing the index: {e}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(
    dir: PathBuf,
    rest: &[OsString],
    bind: Option<OsString>,
    flags: &[(String, Option<OsString>)],
) -> Result<ExitCode, CliError> {
    let verbosity = if flags.iter().any(|(f, _)| f == "quiet") {
        0
    } else if flags.iter().any(|(f, _)| f == "verbose") {
        2
    } else {
        1
    };
    crate::log::set_verbosity(verbosity);
    let (config, path) = match rest {
        [] => {
            let bind = match bind {
                Some(b) => string(b)?,
                None => "127.0.0.1:8080".to_owned(),
            };
            let config = ServerConfig {
                registry: Some(dir),
                listeners: vec![Listener {
                    bind,
                    tls: None,
                    metrics: false,
                }],
                limits: Default::default(),
            };
            (config, None)
        }
        [path] => {
            if bind.is_some() {
                return Err(CliError("--bind applies only without a config file".into()));
            }
            let path = PathBuf::from(path);
            (ServerConfig::load(&path)?, Some(path))
        }
        _ => {
            return Err(CliError(
                "usage: palletizer serve [CONFIG.toml] [--bind ADDR]".into(),
            ))
        }
    };
    crate::server::serve(config, path, true).map_err(|e| CliError(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}
