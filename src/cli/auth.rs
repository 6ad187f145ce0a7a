//! `palletizer user`, `token`, `owner` and `access`: who may do what, over
//! [`crate::registry::auth`]. The CLI acts as the registry's administrator: it needs no token.
//!
//! `token create` prints the token alone on stdout, once, so a script can capture it; notes
//! go to stderr.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use lexopt::prelude::*;

use super::CliError;
use crate::registry::auth::{self, AuthFile, NewToken, Scopes, Token};
use crate::registry::settings::Access;
use crate::registry::Registry;

/// The commands this module runs.
pub const COMMANDS: [&str; 4] = ["user", "token", "owner", "access"];

/// Their lines for `palletizer --help`.
pub const USAGE: &str = "  user add NAME [--admin] | user list | user remove NAME
                            manage users (removing one revokes their tokens)
  token create --user NAME [--scope S]... [--crate GLOB]... [--expires DURATION] [--label TEXT]
                            print a new token (scopes: read, publish-new, publish-update, yank,
                            change-owners; default all; DURATION: 90d, 12h, 30s, or days)
  token list [--user NAME] | token revoke ID
  owner add CRATE USER... | owner remove CRATE USER... | owner list CRATE
  access [open|public|private]
                            show or set who needs a token (also rewrites config.json)
";

/// Options as parsed, before they are checked against the command.
#[derive(Default)]
struct Opts {
    dir: Option<PathBuf>,
    admin: bool,
    user: Option<String>,
    scopes: Vec<String>,
    crates: Vec<String>,
    expires: Option<String>,
    label: Option<String>,
    positional: Vec<String>,
    /// Every option given, to refuse those that do not apply.
    given: Vec<&'static str>,
}

fn string(v: OsString) -> Result<String, CliError> {
    v.into_string()
        .map_err(|v| CliError(format!("argument is not UTF-8: {}", v.to_string_lossy())))
}

fn parse(args: Vec<OsString>) -> Result<Option<Opts>, CliError> {
    let mut p = lexopt::Parser::from_args(args);
    let mut o = Opts::default();
    while let Some(arg) = p.next()? {
        let name: &'static str = match arg {
            Short('h') | Long("help") => return Ok(None),
            Short('r') | Long("registry") => {
                o.dir = Some(p.value()?.into());
                continue;
            }
            Value(v) => {
                o.positional.push(string(v)?);
                continue;
            }
            Long("admin") => {
                o.admin = true;
                "admin"
            }
            Long("user") => {
                o.user = Some(string(p.value()?)?);
                "user"
            }
            Long("scope") => {
                o.scopes.push(string(p.value()?)?);
                "scope"
            }
            Long("crate") => {
                o.crates.push(string(p.value()?)?);
                "crate"
            }
            Long("expires") => {
                o.expires = Some(string(p.value()?)?);
                "expires"
            }
            Long("label") => {
                o.label = Some(string(p.value()?)?);
                "label"
            }
            other => return Err(other.unexpected().into()),
        };
        o.given.push(name);
    }
    Ok(Some(o))
}

/// Runs `palletizer COMMAND ARGS` for one of [`COMMANDS`]; `args` follow the command.
/// `-r DIR` among them overrides `registry_dir`.
pub fn run(command: &str, args: Vec<OsString>, registry_dir: &Path) -> Result<ExitCode, CliError> {
    run_with(
        command,
        args,
        registry_dir,
        &mut io::stdout().lock(),
        &mut io::stderr().lock(),
    )
}

/// Writes a line; a closed stdout (`| head`) is not an error.
fn line(w: &mut dyn Write, text: impl std::fmt::Display) {
    let _ = writeln!(w, "{text}");
}

fn run_with(
    command: &str,
    args: Vec<OsString>,
    registry_dir: &Path,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let Some(o) = parse(args)? else {
        line(
            out,
            format_args!("usage: palletizer [-r DIR] COMMAND\n\n{USAGE}"),
        );
        return Ok(ExitCode::SUCCESS);
    };
    let dir = o.dir.clone().unwrap_or_else(|| registry_dir.to_owned());
    let sub = o.positional.first().map(String::as_str).unwrap_or("");
    let args = o.positional.get(1..).unwrap_or(&[]);
    let (allowed, usage): (&[&str], &str) = match (command, sub) {
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
                "owner" => "add, remove or list",
                _ => return Err(CliError(format!("unknown command `{c}`"))),
            };
            let what = if s.is_empty() {
                format!("`{c}` needs a subcommand")
            } else {
                format!("unknown `{c}` subcommand `{s}`")
            };
            return Err(CliError(format!("{what}: use {subs}")));
        }
    };
    if let Some(f) = o.given.iter().find(|f| !allowed.contains(f)) {
        return Err(CliError(format!(
            "`--{f}` does not apply to `{command} {sub}`"
        )));
    }
    let arity = |n: std::ops::RangeInclusive<usize>, args: &[String]| {
        if n.contains(&args.len()) {
            Ok(())
        } else {
            Err(CliError(format!("usage: palletizer {usage}")))
        }
    };
    let reg = Registry::open(&dir)?;
    let now = auth::now();
    match (command, sub) {
        ("user", "add") => {
            arity(1..=1, args)?;
            let u = reg.add_user(&args[0], o.admin, now)?;
            let kind = if u.admin { "admin user" } else { "user" };
            line(out, format_args!("Added {kind} {}", u.name));
        }
        ("user", "list") => {
            arity(0..=0, args)?;
            let data = AuthFile::load(&reg)?;
            let mut rows = vec![["ID", "NAME", "ADMIN", "ACTIVE TOKENS"].map(String::from)];
            for u in data.users() {
                let active = data
                    .tokens()
                    .iter()
                    .filter(|t| t.user == u.name && state(t, now) == "active")
                    .count();
                let admin = if u.admin { "yes" } else { "no" };
                rows.push([
                    u.id.to_string(),
                    u.name.clone(),
                    admin.into(),
                    active.to_string(),
                ]);
            }
            table(out, &rows);
        }
        ("user", "remove") => {
            arity(1..=1, args)?;
            let revoked = reg.remove_user(&args[0], now)?;
            line(
                out,
                format_args!("Removed user {} ({revoked} token(s) revoked)", args[0]),
            );
        }
        ("token", "create") => {
            arity(0..=0, args)?;
            let user = o
                .user
                .ok_or_else(|| CliError(format!("usage: palletizer {usage}")))?;
            let scopes = if o.scopes.is_empty() {
                None
            } else {
                let mut s = Scopes::NONE;
                for name in &o.scopes {
                    s = s.union(Scopes::parse(name)?);
                }
                Some(s)
            };
            let expires_in = o.expires.as_deref().map(auth::parse_duration).transpose()?;
            let req = NewToken {
                user,
                scopes,
                crates: o.crates,
                expires_in,
                label: o.label,
            };
            let (token, secret) = reg.create_token(req, now)?;
            line(out, &secret);
            let access = reg.settings().access;
            if access == Access::Private && !token.scopes.contains(Scopes::READ) {
                line(
                    err,
                    format_args!(
                        "note: this registry is private and token {} has no `read` scope: \
                         cargo sends one token for everything, so it will be refused",
                        token.id
                    ),
                );
            }
        }
        ("token", "list") => {
            arity(0..=0, args)?;
            let data = AuthFile::load(&reg)?;
            if let Some(u) = &o.user {
                if data.user(u).is_none() {
                    return Err(CliError(format!("user `{u}` does not exist")));
                }
            }
            let header = [
                "ID",
                "USER",
                "SCOPES",
                "CRATES",
                "LABEL",
                "CREATED",
                "EXPIRES",
                "LAST USED",
                "STATE",
            ];
            let mut rows = vec![header.map(String::from)];
            let wanted = |t: &&Token| {
                o.user
                    .as_ref()
                    .is_none_or(|u| t.user.eq_ignore_ascii_case(u))
            };
            for t in data.tokens().iter().filter(wanted) {
                let crates = if t.crates.is_empty() {
                    "*".to_owned()
                } else {
                    t.crates.join(",")
                };
                rows.push([
                    t.id.to_string(),
                    t.user.clone(),
                    t.scopes.names().collect::<Vec<_>>().join(","),
                    crates,
                    t.label.clone().unwrap_or_else(|| "-".into()),
                    time(Some(t.created)),
                    time(t.expires),
                    time(t.last_used),
                    state(t, now).into(),
                ]);
            }
            table(out, &rows);
        }
        ("token", "revoke") => {
            arity(1..=1, args)?;
            let id: u64 = args[0]
                .parse()
                .map_err(|_| CliError(format!("token id `{}` is not a number", args[0])))?;
            let (t, fresh) = reg.revoke_token(id, now)?;
            if fresh {
                line(out, format_args!("Revoked token {id} of {}", t.user));
            } else {
                line(
                    out,
                    format_args!("Token {id} of {} was already revoked", t.user),
                );
            }
        }
        ("owner", "add" | "remove") => {
            if args.len() < 2 {
                return Err(CliError(format!("usage: palletizer {usage}")));
            }
            let users = &args[1..];
            let msg = if sub == "add" {
                reg.add_owners(&args[0], users, None)?
            } else {
                reg.remove_owners(&args[0], users, None)?
            };
            line(out, msg);
        }
        ("owner", "list") => {
            arity(1..=1, args)?;
            let owners = auth::list_owners(&reg, &args[0])?;
            if AuthFile::load(&reg)?.recorded_owners(&args[0]).is_empty() {
                line(
                    err,
                    format_args!(
                        "note: `{}` has no recorded owners; it belongs to the admins",
                        args[0]
                    ),
                );
            }
            for u in owners {
                line(out, u.name);
            }
        }
        ("access", _) => {
            arity(0..=1, &o.positional)?;
            let Some(mode) = o.positional.first() else {
                line(out, reg.settings().access);
                return Ok(ExitCode::SUCCESS);
            };
            let mode: Access = mode.parse().map_err(CliError)?;
            let settings = reg.set_access(mode)?;
            let what = match settings.access {
                Access::Open => "no token is checked; anyone who reaches the server may publish",
                Access::Public => "reads are public, every write needs a token",
                Access::Private => "every request needs a token (config.json says auth-required)",
            };
            line(out, format_args!("Access is now {mode}: {what}"));
            if mode != Access::Open && AuthFile::load(&reg)?.users().is_empty() {
                line(
                    err,
                    "note: no user exists yet; create one with `palletizer user add NAME --admin` \
                     and `palletizer token create --user NAME`",
                );
            }
        }
        _ => unreachable!("every command was matched above"),
    }
    Ok(ExitCode::SUCCESS)
}

fn state(t: &Token, now: u64) -> &'static str {
    if t.revoked.is_some() {
        "revoked"
    } else if t.expires.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    }
}

/// A time in the file as `2026-11-25T12:00:00Z`, or `-`.
fn time(t: Option<u64>) -> String {
    t.map_or_else(
        || "-".into(),
        |secs| {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
        },
    )
}

/// Left-aligned columns, two spaces apart.
fn table<const N: usize>(out: &mut dyn Write, rows: &[[String; N]]) {
    let mut widths = [0; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut s = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < N {
                s.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            } else {
                s.push_str(cell);
            }
        }
        line(out, s.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::auth::{AuthView, Need, Refusal};
    use crate::registry::tarball::testing::simple_crate;

    struct Cli {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
    }

    impl Cli {
        fn new() -> Cli {
            let (tmp, reg) = crate::registry::auth::scratch_registry();
            let dir = reg.root().to_owned();
            Cli { _tmp: tmp, dir }
        }

        /// Runs a command line (`"token list --user x"`); returns (stdout, stderr) or the error.
        fn run(&self, line: &[&str]) -> Result<(String, String), String> {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let args = line[1..].iter().map(OsString::from).collect();
            run_with(line[0], args, &self.dir, &mut out, &mut err).map_err(|e| e.0)?;
            Ok((
                String::from_utf8(out).unwrap(),
                String::from_utf8(err).unwrap(),
            ))
        }

        fn ok(&self, line: &[&str]) -> String {
            self.run(line).unwrap_or_else(|e| panic!("{line:?}: {e}")).0
        }

        fn fails(&self, line: &[&str]) -> String {
            match self.run(line) {
                Ok(o) => panic!("{line:?} succeeded: {o:?}"),
                Err(e) => e,
            }
        }

        fn view(&self) -> AuthView {
            AuthView::load(&self.dir).unwrap()
        }
    }

    #[test]
    fn users() {
        let c = Cli::new();
        assert_eq!(
            c.ok(&["user", "add", "alice", "--admin"]),
            "Added admin user alice\n"
        );
        assert_eq!(c.ok(&["user", "add", "bob"]), "Added user bob\n");
        c.ok(&["token", "create", "--user", "bob"]);
        let list = c.ok(&["user", "list"]);
        let lines: Vec<_> = list.lines().collect();
        assert_eq!(lines[0], "ID  NAME   ADMIN  ACTIVE TOKENS");
        assert_eq!(lines[1], "1   alice  yes    0");
        assert_eq!(lines[2], "2   bob    no     1");
        assert!(c.fails(&["user", "add", "Bob"]).contains("already exists"));
        assert!(c
            .fails(&["user", "add", "b c"])
            .contains("invalid user name"));
        assert!(c
            .fails(&["user", "add"])
            .contains("usage: palletizer user add NAME"));
        assert_eq!(
            c.ok(&["user", "remove", "bob"]),
            "Removed user bob (1 token(s) revoked)\n"
        );
        assert!(c
            .fails(&["user", "remove", "bob"])
            .contains("user `bob` does not exist"));
        assert!(c
            .fails(&["user", "rename", "x"])
            .contains("unknown `user` subcommand `rename`"));
        assert!(c.fails(&["user"]).contains("`user` needs a subcommand"));
        assert!(c
            .fails(&["user", "list", "--admin"])
            .contains("`--admin` does not apply to `user list`"));
    }

    #[test]
    fn token_create_prints_only_the_token_and_it_works() {
        let c = Cli::new();
        c.ok(&["user", "add", "alice"]);
        let out = c.ok(&[
            "token",
            "create",
            "--user",
            "alice",
            "--scope",
            "read",
            "--scope",
            "yank",
            "--crate",
            "foo*",
            "--expires",
            "12h",
            "--label",
            "laptop",
        ]);
        let token = out.strip_suffix('\n').unwrap();
        assert!(
            token.starts_with("pal_") && !token.contains(['\n', ' ']),
            "{out:?}"
        );
        let v = c.view();
        let now = auth::now();
        let p = v
            .authorize(Some(token), Need::Yank, Some("foo-x"), now)
            .unwrap();
        assert_eq!(&*p.user, "alice");
        assert!(matches!(
            v.authorize(Some(token), Need::Publish, None, now),
            Err(Refusal::Scope { .. })
        ));
        assert_eq!(
            v.authorize(Some(token), Need::Read, None, now + 12 * 3600),
            Err(Refusal::Expired { token: 1 })
        );
        let list = c.ok(&["token", "list"]);
        let lines: Vec<_> = list.lines().collect();
        assert!(lines[0].starts_with("ID  USER   SCOPES     CRATES  LABEL   CREATED"));
        assert!(
            lines[1].starts_with("1   alice  read,yank  foo*    laptop  20"),
            "{list}"
        );
        assert!(lines[1].ends_with("-          active"), "{list}");
        assert!(!list.contains(&token[4..]), "a listing shows the secret");
        for (args, want) in [
            (vec!["--scope", "publish"], "unknown scope `publish`"),
            (vec!["--expires", "2w"], "invalid duration `2w`"),
            (vec!["--crate", "*foo"], "invalid crate pattern"),
            (
                vec!["--admin"],
                "`--admin` does not apply to `token create`",
            ),
        ] {
            let mut line = vec!["token", "create", "--user", "alice"];
            line.extend(args);
            assert!(c.fails(&line).contains(want), "{line:?}");
        }
        assert!(c
            .fails(&["token", "create"])
            .contains("usage: palletizer token create"));
        assert!(c
            .fails(&["token", "create", "--user", "zed"])
            .contains("user `zed` does not exist"));
    }

    #[test]
    fn token_list_filters_and_revoke_takes_effect() {
        let c = Cli::new();
        c.ok(&["user", "add", "alice"]);
        c.ok(&["user", "add", "bob"]);
        let a = c.ok(&["token", "create", "--user", "alice"]);
        c.ok(&["token", "create", "--user", "bob"]);
        let only_bob = c.ok(&["token", "list", "--user", "BOB"]);
        assert_eq!(only_bob.lines().count(), 2, "{only_bob}");
        assert!(only_bob.lines().nth(1).unwrap().starts_with("2   bob"));
        assert!(c
            .fails(&["token", "list", "--user", "x"])
            .contains("does not exist"));
        assert_eq!(
            c.ok(&["token", "revoke", "1"]),
            "Revoked token 1 of alice\n"
        );
        assert_eq!(
            c.ok(&["token", "revoke", "1"]),
            "Token 1 of alice was already revoked\n"
        );
        assert!(c
            .fails(&["token", "revoke", "x"])
            .contains("is not a number"));
        assert!(c
            .fails(&["token", "revoke", "9"])
            .contains("no token with id 9"));
        assert_eq!(
            c.view()
                .authorize(Some(a.trim()), Need::Read, None, auth::now()),
            Err(Refusal::Revoked { token: 1 })
        );
        assert!(c
            .ok(&["token", "list"])
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("revoked"));
    }

    #[test]
    fn owners() {
        let c = Cli::new();
        c.ok(&["user", "add", "root", "--admin"]);
        c.ok(&["user", "add", "alice"]);
        let reg = Registry::open(&c.dir).unwrap();
        reg.publish(None, &simple_crate("foo", "1.0.0", &[])[..])
            .unwrap();
        let (out, err) = c.run(&["owner", "list", "foo"]).unwrap();
        assert_eq!(out, "root\n");
        assert!(err.contains("no recorded owners"), "{err}");
        assert_eq!(
            c.ok(&["owner", "add", "foo", "alice"]),
            "user alice has been added as an owner of crate foo\n"
        );
        let (out, err) = c.run(&["owner", "list", "foo"]).unwrap();
        assert_eq!((out.as_str(), err.as_str()), ("alice\n", ""));
        assert!(c
            .fails(&["owner", "add", "foo", "alice"])
            .contains("already an owner"));
        assert!(c
            .fails(&["owner", "add", "bar", "alice"])
            .contains("crate `bar` does not exist"));
        assert!(c
            .fails(&["owner", "add", "foo"])
            .contains("usage: palletizer owner add"));
        assert!(c
            .fails(&["owner", "remove", "foo", "alice"])
            .contains("cannot remove every owner"));
        c.ok(&["owner", "add", "foo", "root"]);
        c.ok(&["owner", "remove", "foo", "alice"]);
        assert_eq!(c.ok(&["owner", "list", "foo"]), "root\n");
    }

    #[test]
    fn access_mode_shows_and_sets_config_json() {
        let c = Cli::new();
        assert_eq!(c.ok(&["access"]), "public\n");
        let (out, err) = c.run(&["access", "private"]).unwrap();
        assert!(out.starts_with("Access is now private"), "{out}");
        assert!(err.contains("no user exists yet"), "{err}");
        assert_eq!(c.ok(&["access"]), "private\n");
        let config = std::fs::read_to_string(c.dir.join("index/config.json")).unwrap();
        assert!(config.contains("\"auth-required\": true"), "{config}");
        assert_eq!(c.view().access(), Access::Private);
        assert!(c
            .fails(&["access", "closed"])
            .contains("unknown access mode `closed`"));
        assert!(c
            .fails(&["access", "open", "now"])
            .contains("usage: palletizer access"));
        c.ok(&["user", "add", "alice"]);
        let (_, err) = c
            .run(&["token", "create", "--user", "alice", "--scope", "yank"])
            .unwrap();
        assert!(err.contains("no `read` scope"), "{err}");
        c.ok(&["access", "open"]);
        let config = std::fs::read_to_string(c.dir.join("index/config.json")).unwrap();
        assert!(!config.contains("auth-required"), "{config}");
    }

    #[test]
    fn registry_option_after_the_command_and_help() {
        let c = Cli::new();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let args = ["add", "alice", "-r"]
            .iter()
            .map(OsString::from)
            .chain([c.dir.clone().into_os_string()])
            .collect();
        run_with("user", args, Path::new("/nonexistent"), &mut out, &mut err).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "Added user alice\n");
        let help = c.ok(&["token", "--help"]);
        assert!(help.contains("token create --user NAME"), "{help}");
        let e = c.fails(&["user", "list", "--bogus"]);
        assert!(e.contains("--bogus"), "{e}");
    }
}
