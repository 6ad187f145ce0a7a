//! The `palletizer` command line: `args` parses it once into a typed command, and one
//! function per command runs it over [`crate::registry`] (`commands` for the registry's
//! contents, `auth` for who may do what, `audit` for the audit log).
//!
//! Errors are printed as one line on stderr, and the exit status is non-zero.

use std::ffi::OsString;
use std::io::{self, Write};
use std::process::ExitCode;

/// Prints a line on stdout; a closed stdout (`| head`) is not an error.
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = writeln!(io::stdout(), $($arg)*);
    }};
}

mod args;
mod audit;
mod auth;
mod commands;
mod docs;
mod mirror;

use args::{Command, Invocation};

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

/// Runs the command line `args` (without the program's name).
pub fn run(args: Vec<OsString>) -> Result<ExitCode, CliError> {
    let Invocation { dir, command } = args::parse(args)?;
    match command {
        Command::Help(text) => {
            out!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Init(c) => commands::init(&dir, c),
        Command::Add(c) => commands::add(&dir, c),
        Command::Yank(c) => commands::yank(&dir, c),
        Command::Delete(c) => commands::delete(&dir, c),
        Command::Docs(c) => docs::run(&dir, c),
        Command::List(name) => commands::list(&dir, name),
        Command::Check { repair } => commands::check(&dir, repair),
        Command::SquashIndex => commands::squash_index(&dir),
        Command::Backup(file) => commands::backup(&dir, &file),
        Command::Restore { file, target } => commands::restore(&file, &target),
        Command::Serve(c) => commands::serve(dir, c),
        Command::Audit(c) => audit::run(&dir, c, &mut io::stdout().lock()),
        Command::Mirror(c) => mirror::run(&dir, c),
        Command::Auth(c) => auth::run(c, &dir, &mut io::stdout().lock(), &mut io::stderr().lock()),
    }
}
