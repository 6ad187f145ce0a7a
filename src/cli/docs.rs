//! `palletizer docs add NAME VERSION DIR|FILE.tar.gz` and `docs remove NAME [VERSION]`: a
//! version's rustdoc output stored or removed offline, through the same checks and the same
//! [`Command`](registry::Command)s as an upload to the server. A directory is packed into a
//! private temp file in the registry first, so that it is checked exactly as an archive is
//! (a link in it is refused, never followed).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::args::Docs;
use super::CliError;
use crate::registry::{self, crate_folder, Actor, Command, Outcome, Registry};

pub fn run(dir: &Path, d: Docs) -> Result<ExitCode, CliError> {
    let reg = Registry::open(dir)?;
    match d {
        Docs::Add {
            name,
            version,
            from,
        } => {
            let checked = if from.is_dir() {
                let packed = Packed(registry::temp_path(reg.root(), "docs.tar.gz"));
                pack(&from, &packed.0)?;
                let f = File::open(&packed.0)?;
                reg.check_docs(&name, &version, f)?
            } else {
                let f = File::open(&from)
                    .map_err(|e| CliError(format!("cannot read {}: {e}", from.display())))?;
                reg.check_docs(&name, &version, f)?
            };
            let applied = reg.apply(Command::UploadDocs(checked), &Actor::cli())?;
            let Outcome::DocsUploaded { name, vers } = applied.outcome else {
                unreachable!("a docs upload answered {:?}", applied.outcome)
            };
            out!(
                "Stored the docs of {name} {vers}: {}/docs/{name}/{vers}/{}/index.html",
                reg.settings().url,
                crate_folder(&name)
            );
        }
        Docs::Remove { name, version } => {
            let cmd = Command::RemoveDocs {
                name: name.clone(),
                vers: version,
            };
            let applied = reg.apply(cmd, &Actor::cli())?;
            let Outcome::DocsRemoved { versions } = applied.outcome else {
                unreachable!("a docs removal answered {:?}", applied.outcome)
            };
            out!("Removed the docs of {name} {}", versions.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A packed directory, removed however the command ends.
struct Packed(PathBuf);

impl Drop for Packed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes `dir`'s contents as a `.tar.gz` (links kept as links, for the check to refuse).
fn pack(dir: &Path, to: &Path) -> Result<(), CliError> {
    let fail = |e: io::Error| CliError(format!("packing {}: {e}", dir.display()));
    let out = registry::create_private(to).map_err(fail)?;
    let gz = flate2::write::GzEncoder::new(io::BufWriter::new(out), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.append_dir_all(".", dir).map_err(fail)?;
    let mut w = tar.into_inner().map_err(fail)?.finish().map_err(fail)?;
    w.flush().map_err(fail)?;
    Ok(())
}
