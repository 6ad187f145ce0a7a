//! `palletizer mirror …`: the crates.io mirror's cache from the command line (fetch from
//! lockfiles, export and import a bundle, prune, check), over [`crate::mirror`]. Each
//! prints a summary on stdout, failures on stderr, and exits non-zero if any.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::args::MirrorCommand;
use super::CliError;
use crate::mirror::{bundle, offline, Mirror};
use crate::registry::Registry;

/// The mirror of the registry in `dir`.
fn open(dir: &Path) -> Result<Mirror, CliError> {
    let reg = Registry::open_as_is(dir)?;
    let Some(settings) = &reg.settings().mirror else {
        return Err(CliError(format!(
            "the registry in {} has no mirror: add a [mirror] table to palletizer.toml",
            dir.display()
        )));
    };
    Ok(Mirror::open(reg.root(), settings)?)
}

fn status(failed: bool) -> ExitCode {
    match failed {
        true => ExitCode::FAILURE,
        false => ExitCode::SUCCESS,
    }
}

pub fn run(dir: &Path, cmd: MirrorCommand) -> Result<ExitCode, CliError> {
    let mirror = open(dir)?;
    match cmd {
        MirrorCommand::Fetch(files) => fetch(&mirror, &files),
        MirrorCommand::Export(file) => {
            let c = bundle::export(&mirror, &file)?;
            for s in &c.skipped {
                let _ = writeln!(io::stderr(), "warning: {s}: no cached index line; left out");
            }
            out!(
                "Exported {} index files and {} crate files ({} bytes) to {}",
                c.index_files,
                c.crate_files,
                c.bytes,
                file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        MirrorCommand::Import(file) => match bundle::import(&mirror, &file) {
            Ok(c) => {
                out!(
                    "Imported {} index files and {} crate files from {}",
                    c.index_files,
                    c.crate_files,
                    file.display()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(problems) => {
                for p in &problems {
                    let _ = writeln!(io::stderr(), "error: {p}");
                }
                Err(CliError(format!(
                    "{} refused: nothing of it was imported",
                    file.display()
                )))
            }
        },
        MirrorCommand::Prune {
            older_than,
            max_bytes,
        } => {
            let p = offline::prune(&mirror, older_than, max_bytes);
            out!(
                "Removed {} crate files ({} bytes); {} bytes kept",
                p.files,
                p.bytes,
                p.kept_bytes
            );
            Ok(ExitCode::SUCCESS)
        }
        MirrorCommand::Check => {
            let (n, problems) = offline::check(&mirror);
            for p in &problems {
                let _ = writeln!(io::stderr(), "problem: {p}");
            }
            out!("Checked {n} crate files: {} problems", problems.len());
            Ok(status(!problems.is_empty()))
        }
    }
}

fn fetch(mirror: &Mirror, files: &[PathBuf]) -> Result<ExitCode, CliError> {
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let f = offline::fetch_lockfiles(mirror, &paths)?;
    for (name, vers, why) in &f.failed {
        let _ = writeln!(io::stderr(), "error: {name} {vers}: {why}");
    }
    out!(
        "{} of {} crates.io packages are in the mirror's cache{}",
        f.total - f.failed.len(),
        f.total,
        match f.failed.len() {
            0 => String::new(),
            n => format!("; {n} failed"),
        }
    );
    Ok(status(!f.failed.is_empty()))
}
