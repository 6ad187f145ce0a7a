//! `palletizer user`, `token`, `owner` and `access`: who may do what, over the registry's
//! access control data ([`crate::registry::AuthFile`]), one function per command. The CLI
//! acts as the registry's administrator: it needs no token.
//!
//! `token create` prints the token alone on stdout, once, so a script can capture it; notes
//! go to stderr.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use super::args::AuthCommand;
use super::CliError;
use crate::registry::{self, Access, AuthFile, NewToken, Registry, Scopes, Token};

/// Runs `command` on the registry in `dir`: results to `out`, notes to `err`. A refusal of
/// the command's arguments is reported only once the registry has opened.
pub fn run(
    command: Result<AuthCommand, CliError>,
    dir: &Path,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let reg = Registry::open(dir)?;
    let command = command?;
    let now = registry::now();
    match command {
        AuthCommand::UserAdd { name, admin } => user_add(&reg, &name, admin, now, out),
        AuthCommand::UserList => user_list(&reg, now, out),
        AuthCommand::UserRemove { name } => user_remove(&reg, &name, now, out),
        AuthCommand::TokenCreate(req) => token_create(&reg, req, now, out, err),
        AuthCommand::TokenList { user } => token_list(&reg, user.as_deref(), now, out),
        AuthCommand::TokenRevoke { id } => token_revoke(&reg, id, now, out),
        AuthCommand::OwnerAdd { krate, users } => {
            line(out, reg.add_owners(&krate, &users, None)?);
            Ok(())
        }
        AuthCommand::OwnerRemove { krate, users } => {
            line(out, reg.remove_owners(&krate, &users, None)?);
            Ok(())
        }
        AuthCommand::OwnerList { krate } => owner_list(&reg, &krate, out, err),
        AuthCommand::Access(None) => {
            line(out, reg.settings().access);
            Ok(())
        }
        AuthCommand::Access(Some(mode)) => set_access(&reg, mode, out, err),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// Writes a line; a closed stdout (`| head`) is not an error.
fn line(w: &mut dyn Write, text: impl std::fmt::Display) {
    let _ = writeln!(w, "{text}");
}

fn user_add(
    reg: &Registry,
    name: &str,
    admin: bool,
    now: u64,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let u = reg.add_user(name, admin, now)?;
    let kind = if u.admin { "admin user" } else { "user" };
    line(out, format_args!("Added {kind} {}", u.name));
    Ok(())
}

fn user_list(reg: &Registry, now: u64, out: &mut dyn Write) -> Result<(), CliError> {
    let data = AuthFile::load(reg)?;
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
    Ok(())
}

fn user_remove(reg: &Registry, name: &str, now: u64, out: &mut dyn Write) -> Result<(), CliError> {
    let revoked = reg.remove_user(name, now)?;
    line(
        out,
        format_args!("Removed user {name} ({revoked} token(s) revoked)"),
    );
    Ok(())
}

fn token_create(
    reg: &Registry,
    req: NewToken,
    now: u64,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
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
    Ok(())
}

fn token_list(
    reg: &Registry,
    user: Option<&str>,
    now: u64,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let data = AuthFile::load(reg)?;
    if let Some(u) = user {
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
    let wanted = |t: &&Token| user.is_none_or(|u| t.user.eq_ignore_ascii_case(u));
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
    Ok(())
}

fn token_revoke(reg: &Registry, id: u64, now: u64, out: &mut dyn Write) -> Result<(), CliError> {
    let (t, fresh) = reg.revoke_token(id, now)?;
    if fresh {
        line(out, format_args!("Revoked token {id} of {}", t.user));
    } else {
        line(
            out,
            format_args!("Token {id} of {} was already revoked", t.user),
        );
    }
    Ok(())
}

fn owner_list(
    reg: &Registry,
    krate: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    let owners = reg.list_owners(krate)?;
    if AuthFile::load(reg)?.recorded_owners(krate).is_empty() {
        line(
            err,
            format_args!("note: `{krate}` has no recorded owners; it belongs to the admins"),
        );
    }
    for u in owners {
        line(out, u.name);
    }
    Ok(())
}

fn set_access(
    reg: &Registry,
    mode: Access,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    let settings = reg.set_access(mode)?;
    let what = match settings.access {
        Access::Open => "no token is checked; anyone who reaches the server may publish",
        Access::Public => "reads are public, every write needs a token",
        Access::Private => "every request needs a token (config.json says auth-required)",
    };
    line(out, format_args!("Access is now {mode}: {what}"));
    if mode != Access::Open && AuthFile::load(reg)?.users().is_empty() {
        line(
            err,
            "note: no user exists yet; create one with `palletizer user add NAME --admin` \
             and `palletizer token create --user NAME`",
        );
    }
    Ok(())
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
pub(super) fn table<const N: usize>(out: &mut dyn Write, rows: &[[String; N]]) {
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
    use std::ffi::OsString;
    use std::path::PathBuf;

    use super::*;
    use crate::cli::args::{self, Command};
    use crate::registry::testing::simple_crate;
    use crate::registry::{AuthView, Need, Refusal};

    /// Parses and runs `palletizer COMMAND ARGS` as `main` does, with `registry_dir` as the
    /// directory given before the command.
    fn run_with(
        command: &str,
        args: Vec<OsString>,
        registry_dir: &Path,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Result<ExitCode, CliError> {
        let inv = args::parse_auth(command, args, registry_dir.to_owned())?;
        match inv.command {
            Command::Help(text) => {
                line(out, text);
                Ok(ExitCode::SUCCESS)
            }
            Command::Auth(c) => run(c, &inv.dir, out, err),
            _ => unreachable!("an access control command parses into one"),
        }
    }

    struct Cli {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
    }

    impl Cli {
        fn new() -> Cli {
            let (tmp, reg) = crate::registry::testing::scratch_registry();
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
        let now = registry::now();
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
                .authorize(Some(a.trim()), Need::Read, None, registry::now()),
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
