//! The `palletizer` command line parsed once into an [`Invocation`]: the registry directory
//! and a typed [`Command`], its options checked against the command, its arguments counted
//! and their values parsed. Nothing here touches a registry; every refusal is one line.
//!
//! Options may stand before or after the command name. At the top level a single-valued
//! option given twice keeps its first value; after an access control command (`user`,
//! `token`, `owner`, `access`), which parses its own options, the last. Options given before
//! an access control command are not its own and are ignored.

use std::ffi::{OsStr, OsString};
use std::ops::RangeInclusive;
use std::path::PathBuf;

use lexopt::prelude::*;

use super::CliError;
use crate::registry::{
    parse_duration, Access, AuditQuery, CrateName, InitOptions, NewToken, Pubtime, Scopes,
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
  docs add NAME VERSION DIR|FILE.tar.gz
                            store a version's rustdoc output: the target/doc that
                            `cargo doc --no-deps` wrote, or a .tar.gz of its contents
  docs remove NAME [VERSION]
                            remove the docs of one version, or of every version
  list [NAME]               list crates and versions
  check [--repair]          verify the index against the crate files and git
  squash-index              replace the index's git history with one commit (clients keep
                            working; clones get smaller and faster)
  backup FILE               write the whole registry to FILE (a gzipped tar), under the
                            registry lock: a running server keeps serving, publishes wait
  restore FILE DIR          make a registry in DIR (new or empty) from a backup, and check it
  audit [--crate NAME] [--user USER] [--since TIME] [--json]
                            show the audit log: every change and refused write, oldest first;
                            TIME is a date (2026-12-01), a time (2026-12-01T12:00:00Z) or how
                            long ago (7d, 12h); --json prints one JSON object a line
  serve [CONFIG.toml] [--bind ADDR]
                            run the server (with no config: a registry in DIR, created if needed)
  mirror fetch Cargo.lock...
                            fill the crates.io mirror's cache with every crates.io package
                            of the lockfiles (the registry needs a [mirror] table)
  mirror export FILE | mirror import FILE
                            the mirror's cache as one file, and back (import checks every
                            crate file against its index line, and refuses a bad bundle whole)
  mirror prune [--older-than DURATION] [--max-bytes N] | mirror check
                            drop old crate files from the cache; verify the cached ones

options:
  -r, --registry DIR        the registry directory (default: the current directory)
  -h, --help                this help
";

/// The access control commands' lines of the help.
const AUTH_USAGE: &str = "  user add NAME [--admin] | user list | user remove NAME
                            manage users (removing one revokes their tokens)
  token create --user NAME [--scope S]... [--crate GLOB]... [--expires DURATION] [--label TEXT]
                            print a new token (scopes: read, publish-new, publish-update, yank,
                            change-owners; default all; DURATION: 90d, 12h, 30s, or days)
  token list [--user NAME] | token revoke ID
  owner add CRATE USER... | owner remove CRATE USER... | owner list CRATE
  access [open|public|private]
                            show or set who needs a token (also rewrites config.json)
";

/// The commands whose options [`parse_auth`] reads.
const AUTH_COMMANDS: [&str; 4] = ["user", "token", "owner", "access"];

/// A command line as parsed: where the registry is and what to do with it.
pub struct Invocation {
    /// `-r DIR`, or the current directory.
    pub dir: PathBuf,
    pub command: Command,
}

pub enum Command {
    /// `--help`: the text to print.
    Help(String),
    Init(Init),
    Add(Add),
    /// `yank` and `unyank`.
    Yank(Yank),
    Delete(Delete),
    Docs(Docs),
    /// All crates, or one.
    List(Option<CrateName>),
    Check {
        repair: bool,
    },
    SquashIndex,
    Backup(PathBuf),
    Restore {
        file: PathBuf,
        target: PathBuf,
    },
    Serve(Serve),
    Audit(Audit),
    Mirror(MirrorCommand),
    /// `user`, `token`, `owner`, `access`: the command, or the refusal of its arguments'
    /// count or values, reported once the registry has opened (see [`parse_auth`]).
    Auth(Result<AuthCommand, CliError>),
}

pub struct Init {
    pub opts: InitOptions,
    pub access: Access,
}

pub struct Add {
    pub files: Vec<PathBuf>,
    /// Checked here, before the registry is touched: a bad time adds nothing.
    pub pubtime: Option<Pubtime>,
}

pub struct Yank {
    pub name: CrateName,
    pub version: String,
    /// `false` for `unyank`.
    pub yank: bool,
}

pub struct Delete {
    pub name: CrateName,
    /// `None`: every version.
    pub version: Option<String>,
    /// `--release-name`: the crate's owners are forgotten and anyone may take the name.
    pub release_name: bool,
}

/// `audit`: which records, and how they are printed.
pub struct Audit {
    pub query: AuditQuery,
    /// One JSON object a line instead of a table.
    pub json: bool,
}

/// `docs add` and `docs remove`.
pub enum Docs {
    Add {
        name: CrateName,
        version: String,
        /// A `target/doc` directory, or a `.tar.gz` of its contents.
        from: PathBuf,
    },
    Remove {
        name: CrateName,
        /// `None`: every version.
        version: Option<String>,
    },
}

/// `mirror …`: the crates.io mirror's cache.
pub enum MirrorCommand {
    Fetch(Vec<PathBuf>),
    Export(PathBuf),
    Import(PathBuf),
    Prune {
        older_than: Option<std::time::Duration>,
        max_bytes: Option<u64>,
    },
    Check,
}

pub struct Serve {
    pub from: ServeFrom,
    /// 0 for `-q`, 2 for `-v`, else 1.
    pub verbosity: u8,
}

/// What `serve` serves.
pub enum ServeFrom {
    /// The registry in DIR, created if needed, on one plain listener.
    Dir { bind: String },
    /// What a server config file says.
    Config(PathBuf),
}

pub enum AuthCommand {
    UserAdd {
        name: String,
        admin: bool,
    },
    UserList,
    UserRemove {
        name: String,
    },
    TokenCreate(NewToken),
    TokenList {
        user: Option<String>,
    },
    TokenRevoke {
        id: u64,
    },
    OwnerAdd {
        krate: String,
        users: Vec<String>,
    },
    OwnerRemove {
        krate: String,
        users: Vec<String>,
    },
    OwnerList {
        krate: String,
    },
    /// Show the mode, or set it.
    Access(Option<Access>),
}

/// An option of the registry commands, as given.
enum Flag {
    Url(OsString),
    Access(OsString),
    IndexDir(OsString),
    CratesDir(OsString),
    AllowedRegistry(OsString),
    Bind(OsString),
    Pubtime(OsString),
    Crate(OsString),
    User(OsString),
    Since(OsString),
    Json,
    OlderThan(OsString),
    MaxBytes(OsString),
    NoCratesIo,
    Repair,
    ReleaseName,
    Quiet,
    Verbose,
}

impl Flag {
    fn name(&self) -> &'static str {
        match self {
            Flag::Url(_) => "url",
            Flag::Access(_) => "access",
            Flag::IndexDir(_) => "index-dir",
            Flag::CratesDir(_) => "crates-dir",
            Flag::AllowedRegistry(_) => "allowed-registry",
            Flag::Bind(_) => "bind",
            Flag::Pubtime(_) => "pubtime",
            Flag::Crate(_) => "crate",
            Flag::User(_) => "user",
            Flag::Since(_) => "since",
            Flag::Json => "json",
            Flag::OlderThan(_) => "older-than",
            Flag::MaxBytes(_) => "max-bytes",
            Flag::NoCratesIo => "no-crates-io",
            Flag::Repair => "repair",
            Flag::ReleaseName => "release-name",
            Flag::Quiet => "quiet",
            Flag::Verbose => "verbose",
        }
    }
}

fn string(v: &OsStr) -> Result<String, CliError> {
    v.to_str()
        .map(str::to_owned)
        .ok_or_else(|| CliError(format!("argument is not UTF-8: {}", v.to_string_lossy())))
}

/// Parses the arguments after the program's name.
pub fn parse(args: Vec<OsString>) -> Result<Invocation, CliError> {
    let mut parser = lexopt::Parser::from_args(args);
    let mut dir = PathBuf::from(".");
    let mut command: Option<String> = None;
    let mut flags = Vec::new();
    let mut rest = Vec::new();
    while let Some(arg) = parser.next()? {
        let flag = match arg {
            Short('r') | Long("registry") => {
                dir = parser.value()?.into();
                continue;
            }
            Short('h') | Long("help") => {
                let help = format!("{USAGE}\naccess control:\n{AUTH_USAGE}");
                let command = Command::Help(help);
                return Ok(Invocation { dir, command });
            }
            Long("url") => Flag::Url(parser.value()?),
            Long("access") => Flag::Access(parser.value()?),
            Long("index-dir") => Flag::IndexDir(parser.value()?),
            Long("crates-dir") => Flag::CratesDir(parser.value()?),
            Long("allowed-registry") => Flag::AllowedRegistry(parser.value()?),
            Long("bind") => Flag::Bind(parser.value()?),
            Long("pubtime") => Flag::Pubtime(parser.value()?),
            Long("crate") => Flag::Crate(parser.value()?),
            Long("user") => Flag::User(parser.value()?),
            Long("since") => Flag::Since(parser.value()?),
            Long("json") => Flag::Json,
            Long("older-than") => Flag::OlderThan(parser.value()?),
            Long("max-bytes") => Flag::MaxBytes(parser.value()?),
            Long("no-crates-io") => Flag::NoCratesIo,
            Long("repair") => Flag::Repair,
            Long("release-name") => Flag::ReleaseName,
            Short('q') | Long("quiet") => Flag::Quiet,
            Short('v') | Long("verbose") => Flag::Verbose,
            Value(v) if command.is_none() => {
                let name = string(&v)?;
                if AUTH_COMMANDS.contains(&name.as_str()) {
                    return parse_auth(&name, parser.raw_args()?.collect(), dir);
                }
                command = Some(name);
                continue;
            }
            Value(v) => {
                rest.push(v);
                continue;
            }
            other => return Err(other.unexpected().into()),
        };
        flags.push(flag);
    }
    let Some(command) = command else {
        return Err(CliError(
            "no command given (see `palletizer --help`)".into(),
        ));
    };
    let given = Given {
        command,
        flags,
        rest,
    };
    let command = match given.command.as_str() {
        "init" => init(&given),
        "add" => add(&given),
        "yank" => yank(&given, true),
        "unyank" => yank(&given, false),
        "delete" => delete(&given),
        "docs" => docs(&given),
        "list" => list(&given),
        "check" => check(&given),
        "squash-index" => squash_index(&given),
        "backup" => backup(&given),
        "restore" => restore(&given),
        "serve" => serve(&given),
        "audit" => audit(&given),
        "mirror" => mirror(&given),
        other => {
            given.no_options()?;
            Err(CliError(format!(
                "unknown command `{other}` (see `palletizer --help`)"
            )))
        }
    }?;
    Ok(Invocation { dir, command })
}

/// A registry command's name, options and arguments, as given.
struct Given {
    command: String,
    flags: Vec<Flag>,
    rest: Vec<OsString>,
}

impl Given {
    /// The refusal of an option the command does not take.
    fn refuse(&self, flag: &Flag) -> CliError {
        let (f, command) = (flag.name(), &self.command);
        CliError(format!("`--{f}` does not apply to `{command}`"))
    }

    /// Refuses the first option given, for a command that takes none.
    fn no_options(&self) -> Result<(), CliError> {
        self.flags.first().map_or(Ok(()), |f| Err(self.refuse(f)))
    }

    /// Whether `switch`, the one option the command takes, was given; any other is refused.
    fn switch(&self, switch: Flag) -> Result<bool, CliError> {
        match self.flags.iter().find(|f| f.name() != switch.name()) {
            Some(other) => Err(self.refuse(other)),
            None => Ok(!self.flags.is_empty()),
        }
    }

    /// The arguments, `n` of them, as text; `what` is the usage line's tail.
    fn positional(&self, n: RangeInclusive<usize>, what: &str) -> Result<Vec<String>, CliError> {
        if !n.contains(&self.rest.len()) {
            return Err(CliError(format!(
                "usage: palletizer {} {what}",
                self.command
            )));
        }
        self.rest.iter().map(|a| string(a)).collect()
    }
}

fn init(g: &Given) -> Result<Command, CliError> {
    let (mut url, mut access, mut index_dir, mut crates_dir) = (None, None, None, None);
    let (mut allowed, mut crates_io) = (Vec::new(), true);
    for f in &g.flags {
        // A value given twice: the first counts.
        match f {
            Flag::Url(v) => _ = url.get_or_insert(v),
            Flag::Access(v) => _ = access.get_or_insert(v),
            Flag::IndexDir(v) => _ = index_dir.get_or_insert(v),
            Flag::CratesDir(v) => _ = crates_dir.get_or_insert(v),
            Flag::AllowedRegistry(v) => allowed.push(v),
            Flag::NoCratesIo => crates_io = false,
            other => return Err(g.refuse(other)),
        }
    }
    g.positional(0..=0, "--url URL [options]")?;
    let url = url.ok_or_else(|| CliError("init needs --url URL".into()))?;
    let opts = InitOptions {
        url: string(url)?,
        index_dir: index_dir.map(PathBuf::from),
        crates_dir: crates_dir.map(PathBuf::from),
        crates_io,
        allowed_registries: allowed
            .into_iter()
            .map(|a| string(a))
            .collect::<Result<_, _>>()?,
    };
    let access = match access {
        Some(a) => string(a)?.parse::<Access>()?,
        None => Access::Public,
    };
    Ok(Command::Init(Init { opts, access }))
}

fn add(g: &Given) -> Result<Command, CliError> {
    let mut pubtime = None;
    for f in &g.flags {
        match f {
            Flag::Pubtime(v) => _ = pubtime.get_or_insert(v),
            other => return Err(g.refuse(other)),
        }
    }
    if g.rest.is_empty() {
        return Err(CliError(
            "usage: palletizer add [--pubtime TIME] FILE.crate...".into(),
        ));
    }
    let pubtime = match pubtime {
        Some(t) => Some(Pubtime::parse(&string(t)?)?),
        None => None,
    };
    let files = g.rest.iter().map(PathBuf::from).collect();
    Ok(Command::Add(Add { files, pubtime }))
}

fn yank(g: &Given, yank: bool) -> Result<Command, CliError> {
    g.no_options()?;
    let mut a = g.positional(2..=2, "NAME VERSION")?;
    let name = CrateName::parse(&a[0])?;
    let version = a.remove(1);
    Ok(Command::Yank(Yank {
        name,
        version,
        yank,
    }))
}

fn delete(g: &Given) -> Result<Command, CliError> {
    let release_name = g.switch(Flag::ReleaseName)?;
    let mut a = g.positional(1..=2, "NAME [VERSION] [--release-name]")?;
    let name = CrateName::parse(&a[0])?;
    let version = a.get_mut(1).map(std::mem::take);
    Ok(Command::Delete(Delete {
        name,
        version,
        release_name,
    }))
}

fn docs(g: &Given) -> Result<Command, CliError> {
    g.no_options()?;
    let usage = || {
        CliError(
            "usage: palletizer docs add NAME VERSION DIR|FILE.tar.gz, or palletizer docs \
             remove NAME [VERSION]"
                .into(),
        )
    };
    let sub = g.rest.first().map(|s| string(s)).transpose()?;
    let text = |i: usize| string(&g.rest[i]);
    let docs = match (sub.as_deref(), g.rest.len()) {
        (Some("add"), 4) => Docs::Add {
            name: CrateName::parse(&text(1)?)?,
            version: text(2)?,
            from: PathBuf::from(&g.rest[3]),
        },
        (Some("remove"), 2 | 3) => Docs::Remove {
            name: CrateName::parse(&text(1)?)?,
            version: g.rest.get(2).map(|v| string(v)).transpose()?,
        },
        _ => return Err(usage()),
    };
    Ok(Command::Docs(docs))
}

fn list(g: &Given) -> Result<Command, CliError> {
    g.no_options()?;
    let a = g.positional(0..=1, "[NAME]")?;
    let name = a.first().map(|n| CrateName::parse(n)).transpose()?;
    Ok(Command::List(name))
}

fn check(g: &Given) -> Result<Command, CliError> {
    let repair = g.switch(Flag::Repair)?;
    g.positional(0..=0, "[--repair]")?;
    Ok(Command::Check { repair })
}

fn squash_index(g: &Given) -> Result<Command, CliError> {
    g.no_options()?;
    g.positional(0..=0, "")?;
    Ok(Command::SquashIndex)
}

fn backup(g: &Given) -> Result<Command, CliError> {
    g.no_options()?;
    let a = g.positional(1..=1, "FILE")?;
    Ok(Command::Backup(PathBuf::from(&a[0])))
}

fn restore(g: &Given) -> Result<Command, CliError> {
    g.no_options()?;
    let a = g.positional(2..=2, "FILE DIR")?;
    let (file, target) = (PathBuf::from(&a[0]), PathBuf::from(&a[1]));
    Ok(Command::Restore { file, target })
}

fn serve(g: &Given) -> Result<Command, CliError> {
    let (mut bind, mut quiet, mut verbose) = (None, false, false);
    for f in &g.flags {
        match f {
            Flag::Bind(v) => _ = bind.get_or_insert(v),
            Flag::Quiet => quiet = true,
            Flag::Verbose => verbose = true,
            other => return Err(g.refuse(other)),
        }
    }
    let verbosity = if quiet {
        0
    } else if verbose {
        2
    } else {
        1
    };
    let from = match (g.rest.as_slice(), bind) {
        ([], bind) => ServeFrom::Dir {
            bind: bind.map_or(Ok("127.0.0.1:8080".to_owned()), |b| string(b))?,
        },
        ([_], Some(_)) => return Err(CliError("--bind applies only without a config file".into())),
        ([path], None) => ServeFrom::Config(PathBuf::from(path)),
        _ => {
            return Err(CliError(
                "usage: palletizer serve [CONFIG.toml] [--bind ADDR]".into(),
            ))
        }
    };
    Ok(Command::Serve(Serve { from, verbosity }))
}

fn audit(g: &Given) -> Result<Command, CliError> {
    let (mut krate, mut user, mut since, mut json) = (None, None, None, false);
    for f in &g.flags {
        // A value given twice: the first counts.
        match f {
            Flag::Crate(v) => _ = krate.get_or_insert(v),
            Flag::User(v) => _ = user.get_or_insert(v),
            Flag::Since(v) => _ = since.get_or_insert(v),
            Flag::Json => json = true,
            other => return Err(g.refuse(other)),
        }
    }
    g.positional(
        0..=0,
        "[--crate NAME] [--user USER] [--since TIME] [--json]",
    )?;
    let krate = match krate {
        Some(k) => Some(CrateName::parse(&string(k)?)?.to_string()),
        None => None,
    };
    let user = match user.map(|u| string(u)).transpose()? {
        Some(u) if u.is_empty() => return Err(CliError("`--user` needs a user name".into())),
        u => u,
    };
    let since = match since {
        Some(t) => Some(since_time(&string(t)?, crate::registry::now())?),
        None => None,
    };
    let query = AuditQuery { krate, user, since };
    Ok(Command::Audit(Audit { query, json }))
}

/// `--since`: a date (`2026-12-01`, midnight UTC), a time (`2026-12-01T12:00:00Z`) or how
/// long before `now` (`7d`, `12h`, `30s`), as unix seconds.
fn since_time(text: &str, now: u64) -> Result<u64, CliError> {
    let bad = || {
        CliError(format!(
            "`--since {text}`: give a date (2026-12-01), a time (2026-12-01T12:00:00Z) or how \
             long ago (7d, 12h, 30s)"
        ))
    };
    if text.contains('-') || text.contains(':') {
        let full = match text.len() {
            10 => format!("{text}T00:00:00Z"),
            _ => text.to_owned(),
        };
        let t = humantime::parse_rfc3339_weak(&full).map_err(|_| bad())?;
        return t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .map_err(|_| bad());
    }
    let ago = parse_duration(text).map_err(|_| bad())?;
    Ok(now.saturating_sub(ago))
}

fn mirror(g: &Given) -> Result<Command, CliError> {
    const USAGE: &str = "usage: palletizer mirror fetch Cargo.lock... | export FILE | import FILE \
                         | prune [--older-than DURATION] [--max-bytes N] | check";
    let action = g.rest.first().map(|a| string(a)).transpose()?;
    let args: Vec<PathBuf> = g.rest.iter().skip(1).map(PathBuf::from).collect();
    let one = |args: &[PathBuf]| match args {
        [file] => Ok(file.clone()),
        _ => Err(CliError(USAGE.into())),
    };
    let cmd = match action.as_deref() {
        Some("prune") => return mirror_prune(g, &args, USAGE),
        Some(_) if !g.flags.is_empty() => return Err(g.refuse(&g.flags[0])),
        Some("fetch") if !args.is_empty() => MirrorCommand::Fetch(args),
        Some("export") => MirrorCommand::Export(one(&args)?),
        Some("import") => MirrorCommand::Import(one(&args)?),
        Some("check") if args.is_empty() => MirrorCommand::Check,
        _ => return Err(CliError(USAGE.into())),
    };
    Ok(Command::Mirror(cmd))
}

fn mirror_prune(g: &Given, args: &[PathBuf], usage: &str) -> Result<Command, CliError> {
    let (mut older_than, mut max_bytes) = (None, None);
    for f in &g.flags {
        match f {
            Flag::OlderThan(v) => {
                let text = string(v)?;
                let d = humantime::parse_duration(&text)
                    .map_err(|e| CliError(format!("--older-than `{text}`: {e} (e.g. 30d)")))?;
                older_than = Some(d);
            }
            Flag::MaxBytes(v) => {
                let text = string(v)?;
                let n = text.parse::<u64>().map_err(|_| {
                    CliError(format!("--max-bytes `{text}` is not a number of bytes"))
                })?;
                max_bytes = Some(n);
            }
            other => return Err(g.refuse(other)),
        }
    }
    if !args.is_empty() || (older_than.is_none() && max_bytes.is_none()) {
        return Err(CliError(format!(
            "{usage} (prune needs --older-than or --max-bytes)"
        )));
    }
    Ok(Command::Mirror(MirrorCommand::Prune {
        older_than,
        max_bytes,
    }))
}

/// An option of the access control commands, as given.
enum AuthFlag {
    Admin,
    User(String),
    Scope(String),
    Crate(String),
    Expires(String),
    Label(String),
}

impl AuthFlag {
    fn name(&self) -> &'static str {
        match self {
            AuthFlag::Admin => "admin",
            AuthFlag::User(_) => "user",
            AuthFlag::Scope(_) => "scope",
            AuthFlag::Crate(_) => "crate",
            AuthFlag::Expires(_) => "expires",
            AuthFlag::Label(_) => "label",
        }
    }
}

/// Parses `args`, those after `command` (one of the access control commands); `-r DIR`
/// among them overrides `dir`.
///
/// An unknown subcommand, or an option the subcommand does not take, is refused at once.
/// A wrong count or value of its arguments is kept in [`Command::Auth`] and reported once
/// the registry has opened, as the access control commands always have: a line that is
/// also run against a missing registry names the registry.
pub fn parse_auth(
    command: &str,
    args: Vec<OsString>,
    mut dir: PathBuf,
) -> Result<Invocation, CliError> {
    let mut p = lexopt::Parser::from_args(args);
    let (mut flags, mut positional) = (Vec::new(), Vec::new());
    while let Some(arg) = p.next()? {
        let flag = match arg {
            Short('h') | Long("help") => {
                let help = format!("usage: palletizer [-r DIR] COMMAND\n\n{AUTH_USAGE}");
                let command = Command::Help(help);
                return Ok(Invocation { dir, command });
            }
            Short('r') | Long("registry") => {
                dir = p.value()?.into();
                continue;
            }
            Value(v) => {
                positional.push(string(&v)?);
                continue;
            }
            Long("admin") => AuthFlag::Admin,
            Long("user") => AuthFlag::User(string(&p.value()?)?),
            Long("scope") => AuthFlag::Scope(string(&p.value()?)?),
            Long("crate") => AuthFlag::Crate(string(&p.value()?)?),
            Long("expires") => AuthFlag::Expires(string(&p.value()?)?),
            Long("label") => AuthFlag::Label(string(&p.value()?)?),
            other => return Err(other.unexpected().into()),
        };
        flags.push(flag);
    }
    let sub = positional.first().map_or("", String::as_str);
    let (takes, usage) = auth_usage(command, sub)?;
    if let Some(f) = flags.iter().find(|f| !takes.contains(&f.name())) {
        let f = f.name();
        return Err(CliError(format!(
            "`--{f}` does not apply to `{command} {sub}`"
        )));
    }
    let g = AuthGiven {
        sub,
        usage,
        flags,
        args: positional.get(1..).unwrap_or(&[]),
    };
    let command = match command {
        "user" => user(&g),
        "token" => token(&g),
        "owner" => owner(&g),
        _ => access(&g, &positional),
    };
    Ok(Invocation {
        dir,
        command: Command::Auth(command),
    })
}

/// The options an access control command takes and its usage line, or the refusal of an
/// unknown subcommand.
fn auth_usage(
    command: &str,
    sub: &str,
) -> Result<(&'static [&'static str], &'static str), CliError> {
    Ok(match (command, sub) {
        ("user", "add") => (&["admin"], "user add NAME [--admin]"),
        ("user", "list") => (&[], "user list"),
        ("user", "remove") => (&[], "user remove NAME"),
        ("token", "create") => (
            &["user", "scope", "crate", "expires", "label"],
            "token create --user NAME [--scope S]... [--crate GLOB]... [--expires DURATION] [--label TEXT]",
        ),
        ("token", "list") => (&["user"], "token list [--user NAME]"),
        ("token", "revoke") => (&[], "token revoke ID"),
        ("owner", "add") => (&[], "owner add CRATE USER..."),
        ("owner", "remove") => (&[], "owner remove CRATE USER..."),
        ("owner", "list") => (&[], "owner list CRATE"),
        ("access", _) => (&[], "access [open|public|private]"),
        (c, s) => {
            let subs = match c {
                "user" => "add, list or remove",
                "token" => "create, list or revoke",
                _ => "add, remove or list",
            };
            let what = if s.is_empty() {
                format!("`{c}` needs a subcommand")
            } else {
                format!("unknown `{c}` subcommand `{s}`")
            };
            return Err(CliError(format!("{what}: use {subs}")));
        }
    })
}

/// An access control command's subcommand, options (only those it takes) and arguments.
struct AuthGiven<'a> {
    sub: &'a str,
    usage: &'static str,
    flags: Vec<AuthFlag>,
    /// The arguments after the subcommand.
    args: &'a [String],
}

impl AuthGiven<'_> {
    fn usage(&self) -> CliError {
        CliError(format!("usage: palletizer {}", self.usage))
    }

    /// Refuses `args` unless there are `n` of them.
    fn arity(&self, n: RangeInclusive<usize>, args: &[String]) -> Result<(), CliError> {
        n.contains(&args.len())
            .then_some(())
            .ok_or_else(|| self.usage())
    }
}

fn user(g: &AuthGiven) -> Result<AuthCommand, CliError> {
    match g.sub {
        "add" => {
            g.arity(1..=1, g.args)?;
            let name = g.args[0].clone();
            let admin = g.flags.iter().any(|f| matches!(f, AuthFlag::Admin));
            Ok(AuthCommand::UserAdd { name, admin })
        }
        "list" => {
            g.arity(0..=0, g.args)?;
            Ok(AuthCommand::UserList)
        }
        _ => {
            g.arity(1..=1, g.args)?;
            let name = g.args[0].clone();
            Ok(AuthCommand::UserRemove { name })
        }
    }
}

fn token(g: &AuthGiven) -> Result<AuthCommand, CliError> {
    if g.sub == "revoke" {
        g.arity(1..=1, g.args)?;
        let id = &g.args[0];
        let id = id
            .parse()
            .map_err(|_| CliError(format!("token id `{id}` is not a number")))?;
        return Ok(AuthCommand::TokenRevoke { id });
    }
    // A value given twice: the last counts.
    let (mut user, mut scopes, mut crates, mut expires, mut label) =
        (None, Vec::new(), Vec::new(), None, None);
    for f in &g.flags {
        match f {
            AuthFlag::User(u) => user = Some(u.clone()),
            AuthFlag::Scope(s) => scopes.push(s),
            AuthFlag::Crate(c) => crates.push(c.clone()),
            AuthFlag::Expires(e) => expires = Some(e),
            AuthFlag::Label(l) => label = Some(l.clone()),
            AuthFlag::Admin => unreachable!("`--admin` is refused for `token`"),
        }
    }
    g.arity(0..=0, g.args)?;
    if g.sub == "list" {
        return Ok(AuthCommand::TokenList { user });
    }
    let user = user.ok_or_else(|| g.usage())?;
    let scopes = if scopes.is_empty() {
        None
    } else {
        let mut s = Scopes::NONE;
        for name in scopes {
            s = s.union(Scopes::parse(name)?);
        }
        Some(s)
    };
    let expires_in = expires.map(|e| parse_duration(e)).transpose()?;
    Ok(AuthCommand::TokenCreate(NewToken {
        user,
        scopes,
        crates,
        expires_in,
        label,
    }))
}

fn owner(g: &AuthGiven) -> Result<AuthCommand, CliError> {
    if g.sub == "list" {
        g.arity(1..=1, g.args)?;
        let krate = g.args[0].clone();
        return Ok(AuthCommand::OwnerList { krate });
    }
    let [krate, users @ ..] = g.args else {
        return Err(g.usage());
    };
    if users.is_empty() {
        return Err(g.usage());
    }
    let (krate, users) = (krate.clone(), users.to_vec());
    Ok(if g.sub == "add" {
        AuthCommand::OwnerAdd { krate, users }
    } else {
        AuthCommand::OwnerRemove { krate, users }
    })
}

/// `access [MODE]`: `positional` counts the mode, which stands where a subcommand would.
fn access(g: &AuthGiven, positional: &[String]) -> Result<AuthCommand, CliError> {
    g.arity(0..=1, positional)?;
    let mode = positional.first().map(|m| m.parse::<Access>());
    Ok(AuthCommand::Access(mode.transpose().map_err(CliError)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(line: &[&str]) -> Result<Invocation, String> {
        parse(line.iter().map(OsString::from).collect()).map_err(|e| e.0)
    }

    fn command(line: &[&str]) -> Command {
        parsed(line)
            .unwrap_or_else(|e| panic!("{line:?}: {e}"))
            .command
    }

    #[test]
    fn options_stand_anywhere_and_the_first_value_counts() {
        let line = ["--url", "http://a.example", "init", "-r", "reg"];
        let inv = parsed(&line).unwrap();
        assert_eq!(inv.dir, PathBuf::from("reg"));
        let more = [
            "init",
            "--url=http://a.example",
            "--url",
            "http://b.example",
        ];
        for c in [inv.command, command(&more)] {
            let Command::Init(init) = c else {
                panic!("not init")
            };
            assert_eq!(init.opts.url, "http://a.example");
            assert_eq!(init.access, Access::Public);
            assert!(init.opts.crates_io);
        }
    }

    #[test]
    fn serve_takes_a_config_or_a_bind_address_and_quiet_wins() {
        let Command::Serve(s) = command(&["serve", "-v", "-q"]) else {
            panic!("not serve")
        };
        assert_eq!(s.verbosity, 0);
        assert!(matches!(s.from, ServeFrom::Dir { bind } if bind == "127.0.0.1:8080"));
        let Command::Serve(s) = command(&["serve", "server.toml", "-v"]) else {
            panic!("not serve")
        };
        assert_eq!(s.verbosity, 2);
        assert!(matches!(s.from, ServeFrom::Config(p) if p == std::path::Path::new("server.toml")));
        let e = parsed(&["serve", "server.toml", "--bind", "x"])
            .err()
            .unwrap();
        assert_eq!(e, "--bind applies only without a config file");
    }

    #[test]
    fn access_control_options_keep_their_last_value_and_are_parsed() {
        let line = [
            "token",
            "create",
            "--user",
            "a",
            "--user",
            "b",
            "--scope",
            "read",
            "--scope",
            "yank",
            "--expires",
            "12h",
            "-r",
            "reg",
        ];
        let inv = parsed(&line).unwrap();
        assert_eq!(inv.dir, PathBuf::from("reg"));
        let Command::Auth(Ok(AuthCommand::TokenCreate(t))) = inv.command else {
            panic!("not token create")
        };
        assert_eq!(t.user, "b");
        assert_eq!(t.scopes, Some(Scopes::READ.union(Scopes::YANK)));
        assert_eq!(t.expires_in, Some(12 * 3600));
        let access = command(&["access", "private"]);
        assert!(matches!(
            access,
            Command::Auth(Ok(AuthCommand::Access(Some(Access::Private))))
        ));
        let owners = command(&["owner", "remove", "foo", "a", "b"]);
        let Command::Auth(Ok(AuthCommand::OwnerRemove { krate, users })) = owners else {
            panic!("not owner remove")
        };
        assert_eq!(
            (krate.as_str(), users),
            ("foo", vec!["a".into(), "b".into()])
        );
    }

    #[test]
    fn audit_takes_a_crate_a_user_and_a_date_a_time_or_a_duration() {
        let Command::Audit(a) = command(&["audit", "--crate", "Foo-Bar", "--user", "alice"]) else {
            panic!("not audit")
        };
        assert_eq!(a.query.krate.as_deref(), Some("Foo-Bar"));
        assert_eq!(a.query.user.as_deref(), Some("alice"));
        assert!(!a.json && a.query.since.is_none());
        assert_eq!(since_time("2026-12-01", 0).unwrap(), 1_796_083_200);
        assert_eq!(
            since_time("2026-12-01T12:00:00Z", 0).unwrap(),
            1_796_083_200 + 12 * 3600
        );
        assert_eq!(since_time("7d", 1_000_000).unwrap(), 1_000_000 - 7 * 86_400);
        assert_eq!(since_time("12h", 100).unwrap(), 0);
        for bad in ["yesterday", "2026-13-01", "7w", ""] {
            let e = since_time(bad, 0).unwrap_err().0;
            assert!(e.contains("give a date"), "{bad}: {e}");
        }
        let e = parsed(&["audit", "--crate", "no/such"]).err().unwrap();
        assert!(e.contains("invalid") || e.contains("crate name"), "{e}");
        let e = parsed(&["audit", "extra"]).err().unwrap();
        assert!(e.starts_with("usage: palletizer audit"), "{e}");
        let e = parsed(&["audit", "--repair"]).err().unwrap();
        assert_eq!(e, "`--repair` does not apply to `audit`");
        let Command::Audit(a) = command(&["--json", "audit", "--since", "1d"]) else {
            panic!("not audit")
        };
        assert!(a.json && a.query.since.is_some());
    }

    #[test]
    fn release_name_is_a_delete_option_given_anywhere() {
        for line in [
            &["delete", "leaf", "--release-name"][..],
            &["--release-name", "delete", "leaf"],
        ] {
            let Command::Delete(d) = command(line) else {
                panic!("not delete")
            };
            assert_eq!(
                (d.name.as_str(), d.version, d.release_name),
                ("leaf", None, true)
            );
        }
        let Command::Delete(d) = command(&["delete", "leaf", "1.0.0"]) else {
            panic!("not delete")
        };
        assert_eq!(
            (d.version.as_deref(), d.release_name),
            (Some("1.0.0"), false)
        );
        let e = parsed(&["yank", "leaf", "1.0.0", "--release-name"]).err();
        assert_eq!(e.unwrap(), "`--release-name` does not apply to `yank`");
    }

    #[test]
    fn an_access_control_commands_counts_and_values_are_refused_after_its_options() {
        for (line, want) in [
            (
                &["user", "add"][..],
                "usage: palletizer user add NAME [--admin]",
            ),
            (&["token", "revoke", "x"], "token id `x` is not a number"),
            (&["access", "closed"], "unknown access mode `closed`"),
        ] {
            let Command::Auth(Err(e)) = command(line) else {
                panic!("{line:?}: not a refusal kept for after the registry opened")
            };
            assert!(e.0.contains(want), "{line:?}: {}", e.0);
        }
        let e = parsed(&["user", "add", "--user", "x"]).err().unwrap();
        assert_eq!(e, "`--user` does not apply to `user add`");
        let e = parsed(&["owner", "rename"]).err().unwrap();
        assert_eq!(
            e,
            "unknown `owner` subcommand `rename`: use add, remove or list"
        );
    }
}
