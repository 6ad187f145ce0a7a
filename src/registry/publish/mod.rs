//! The way in. A crate file is checked before the lock against everything that needs no
//! registry state: its archive ([`tarball`]), its metadata against its manifest
//! ([`metadata`], with dependency targets in cargo's spelling, [`platform`]) and the
//! settings; its README is rendered then ([`crateinfo`]). Under the lock, the publish decides
//! who may use the name and whether the version is free, moves the file into place with its
//! page files and commits the index line.

pub(super) mod crateinfo;
pub(super) mod history;
pub(super) mod metadata;
pub(super) mod platform;
pub(super) mod tarball;

pub use crateinfo::CrateInfo;
pub use metadata::{DepKind, PublishDep, PublishMetadata};

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::registry::auth::{self, AuthError, NameState};
use crate::registry::index::{self, search};
use crate::registry::names::{self, Version};
use crate::registry::store::{create_dir_all_synced, sync_dir, temp_path, Needs, Redo, TempFile};
use crate::registry::versions::tombstone;
use crate::registry::{Change, Context, CrateName, Error, IndexEntry, Registry, Result};

/// How a crate file comes in: the rules it is checked by, the name of the file it was read
/// from (`add`), and its original publish time when the caller knows it (which decides how
/// its dependencies are recorded, [`history::Era`]).
struct Via<'a> {
    rules: metadata::Rules,
    file_name: Option<&'a str>,
    pubtime: Option<index::Pubtime>,
}

/// A crate file checked against everything that needs no registry state (its archive, its
/// metadata, the settings), stored under a temp name in the crates directory until a
/// [`Command::Publish`](super::Command::Publish) moves it into place; removed if it is dropped first.
#[derive(Debug)]
pub struct CheckedCrate {
    tmp: TempFile,
    /// Boxed, so a [`Command`](super::Command) stays small.
    meta: Box<PublishMetadata>,
    name: CrateName,
    version: Version,
    entry: Box<IndexEntry>,
    readme_html: Option<String>,
}

/// A publish decided under the lock, not yet written: what its journal line holds and what
/// [`Registry::finish_publish`] then writes.
pub(super) struct PlannedPublish {
    tmp: TempFile,
    meta: Box<PublishMetadata>,
    pub(super) name: CrateName,
    entry: Box<IndexEntry>,
    readme_html: Option<String>,
    entries: Vec<IndexEntry>,
    new_crate: bool,
    /// The first owner of a new crate, with the access file that records it.
    first_owner: Option<(String, auth::Edit)>,
    dest: PathBuf,
    info: Vec<u8>,
    in_journal: bool,
    pub(super) redo: Redo,
}

impl PlannedPublish {
    /// Whether the publish makes its publisher the crate's first owner.
    pub(super) fn has_first_owner(&self) -> bool {
        self.first_owner.is_some()
    }
}

impl CheckedCrate {
    pub fn name(&self) -> &CrateName {
        &self.name
    }

    pub fn vers(&self) -> &str {
        &self.meta.vers
    }
}

impl Registry {
    /// Whether a dependency's registry URL names this registry.
    pub fn is_own_index(&self, url: &str) -> bool {
        let norm = |u: &str| u.trim_end_matches('/').to_owned();
        let url = norm(url);
        let file_url = format!("file://{}", self.index_dir.display());
        self.settings
            .own_index_urls()
            .iter()
            .any(|u| norm(u) == url)
            || norm(&file_url) == url
    }

    /// Checks a crate file for `palletizer add` (its metadata from its `Cargo.toml`, recorded
    /// as crates.io recorded it at `pubtime`, under the rules for crate files another
    /// registry took): a file named like a crate file must be named for the crate it holds.
    /// `pubtime`: its original publish time, when known (else now).
    pub fn check_crate_file(
        &self,
        path: &Path,
        pubtime: Option<index::Pubtime>,
    ) -> Result<CheckedCrate> {
        let f = File::open(path)
            .map_err(|e| Error::Invalid(format!("cannot read the crate file: {e}")))?;
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.ends_with(".crate"));
        let via = Via {
            rules: metadata::Rules::Add,
            file_name,
            pubtime,
        };
        self.check_via(None, f, via)
    }

    /// Checks an upload for a publish: `meta` is what cargo sent (None: derive it from the
    /// manifest), `tarball` the `.crate` bytes.
    pub fn check_upload(
        &self,
        meta: Option<PublishMetadata>,
        tarball: impl Read,
    ) -> Result<CheckedCrate> {
        let via = Via {
            rules: metadata::Rules::Publish(self.settings.publish_caps()),
            file_name: None,
            pubtime: None,
        };
        self.check_via(meta, tarball, via)
    }

    /// Everything about a crate file that needs no registry state, before the lock: the
    /// archive, the metadata against the manifest and the settings. The file is stored
    /// under a temp name meanwhile, synced.
    fn check_via(
        &self,
        meta: Option<PublishMetadata>,
        tarball: impl Read,
        via: Via<'_>,
    ) -> Result<CheckedCrate> {
        let (tmp, out, inspected) = self.store_upload(tarball)?;
        let pubtime = via.pubtime.unwrap_or_else(index::Pubtime::now);
        let era = history::Era::at(pubtime.as_str());
        let (meta, manifest_readme) = agreed_metadata(meta, &inspected.manifest, era)?;
        metadata::validate(&meta, via.rules)
            .and_then(|()| index::check_line_len(&meta))
            .map_err(Error::Invalid)?;
        let name = CrateName::parse(&meta.name)?;
        let top = format!("{}-{}", meta.name, meta.vers);
        check_file_names(&meta, &top, via.file_name, &inspected.top_dir)?;
        self.check_settings_allow(&meta, via.rules)?;
        let tmp_path = tmp.0.as_path();
        // A crate file small enough for the journal line is made durable by that line.
        if out.metadata().map_or(true, |m| m.len() > REDO_MAX_CRATE) {
            out.sync_all()
                .context(|| format!("syncing {}", tmp_path.display()))?;
        }
        drop(out);
        // Rendered here, before the lock: the crate page only reads the result.
        let readme_html = render_readme_of(&meta, manifest_readme.as_deref(), tmp_path, &top);

        let version = Version::parse(&meta.vers).map_err(|e| Error::Invalid(e.to_string()))?;
        let entry =
            IndexEntry::from_publish(&meta, &inspected.cksum, pubtime.as_str().into(), |u| {
                self.is_own_index(u)
            });
        Ok(CheckedCrate {
            tmp,
            meta: Box::new(meta),
            name,
            version,
            entry: Box::new(entry),
            readme_html,
        })
    }

    /// Stores an upload under a temp name in the crates directory while its archive is
    /// checked (within the size limits of the settings); the file is removed if a check
    /// fails. Returns the temp file, the file still open for its sync, and what the check
    /// learned.
    fn store_upload(&self, tarball: impl Read) -> Result<(TempFile, File, tarball::Inspected)> {
        fs::create_dir_all(&self.crates_dir)
            .context(|| format!("creating {}", self.crates_dir.display()))?;
        let tmp = TempFile(temp_path(&self.crates_dir, "upload.crate"));
        let tmp_path = tmp.0.as_path();
        let mut out =
            File::create(tmp_path).context(|| format!("creating {}", tmp_path.display()))?;
        let limits = tarball::Limits {
            max_size: self.settings.max_crate_size,
            max_unpacked: self.settings.max_unpacked_size,
        };
        let mut write_error = None;
        let inspected = tarball::inspect(
            Tee {
                inner: tarball,
                out: &mut out,
                write_error: &mut write_error,
            },
            limits,
        );
        // A failed write (disk full) surfaces through the tar reader as a broken archive:
        // report it as what it is, the storage's trouble, not the crate's.
        if let Some(source) = write_error {
            return Err(Error::Io {
                context: "storing the crate file".into(),
                source,
            });
        }
        let inspected = inspected?;
        Ok((tmp, out, inspected))
    }

    /// What `palletizer.toml` asks of a crate: dependencies only from the registries it
    /// allows, and (last, so that everything else wrong with a crate is said first) of a new
    /// publish a description and a license unless the setting is off; a crate file another
    /// registry serves may lack them (crates.io serves crates of 2014 that have neither).
    fn check_settings_allow(&self, meta: &PublishMetadata, rules: metadata::Rules) -> Result<()> {
        for d in &meta.deps {
            if let Some(r) = &d.registry {
                if !self.is_own_index(r) && !self.settings.allowed_registries.iter().any(|a| a == r)
                {
                    return Err(Error::Invalid(format!(
                        "dependency `{}` is from registry {r}, which this registry does not \
                         allow; to allow it, add that index URL to `allowed-registries` in \
                         palletizer.toml (or create the registry with `palletizer init \
                         --allowed-registry {r}`)",
                        d.name
                    )));
                }
            }
        }
        let publish = matches!(rules, metadata::Rules::Publish(_));
        if publish && self.settings.require_description_and_license {
            metadata::require_description_and_license(meta).map_err(Error::Invalid)?;
        }
        Ok(())
    }

    /// [`Command::Publish`](super::Command::Publish), lock held. `by`: the token holder the
    /// checks apply to. A new crate's publisher becomes its owner in the same step; a deleted
    /// crate's kept name keeps its owners.
    pub(super) fn publish_locked(
        &self,
        checked: CheckedCrate,
        by: Option<&auth::Principal>,
        changes: &mut Vec<Change>,
    ) -> Result<IndexEntry, AuthError> {
        let planned = self.plan_publish(checked, by)?;
        let mark = self.journal(&planned.name, &planned.redo)?;
        self.finish_publish(planned, mark, false, changes)
    }

    /// The part of a publish that decides (lock held): who may publish under the name, and
    /// whether the version is free (a refusal says nothing of what else is wrong), and what
    /// the publish will leave, for its journal line. Nothing is written yet.
    pub(super) fn plan_publish(
        &self,
        checked: CheckedCrate,
        by: Option<&auth::Principal>,
    ) -> Result<PlannedPublish, AuthError> {
        let CheckedCrate {
            tmp,
            meta,
            name,
            version,
            entry,
            readme_html,
        } = checked;
        let mut first_owner = None;
        if let Some(p) = by {
            let mut edit = auth::Edit::open(self)?;
            let state = self.name_state(&name, &edit.data)?;
            auth::authorize_publish(&edit.data, p, &name, state)?;
            if state == NameState::Free {
                let user = edit.data.set_first_owner(&name, &p.user)?;
                first_owner = Some((user, edit));
            }
        }
        self.check_name_free(&name)?;
        let mut entries = self.entries(&name)?;
        self.check_version_free(&meta, &version, &entries)?;
        let new_crate = entries.is_empty();
        entries.push((*entry).clone());
        // The journal line holds what this publish leaves: with it synced, the files are
        // written without syncs (a crate file too large for the line is synced itself).
        let dest = self.crate_path(&name, &version);
        let info = serde_json::to_vec(&crateinfo::CrateInfo::from_meta(&meta))
            .expect("crate info serializes");
        let size = fs::metadata(&tmp.0)
            .context(|| format!("reading {}", tmp.0.display()))?
            .len();
        let in_journal = size <= REDO_MAX_CRATE;
        let mut redo = Redo::default();
        if in_journal {
            let bytes = fs::read(&tmp.0).context(|| format!("reading {}", tmp.0.display()))?;
            redo.write(&dest, bytes);
        }
        let [info_path, readme_path] = crateinfo::sidecars(&dest);
        redo.write(&info_path, info.clone());
        match &readme_html {
            Some(html) => redo.write(&readme_path, html.clone().into_bytes()),
            None => redo.remove(&readme_path),
        }
        let index_file = self.index_dir.join(index::index_path(&name));
        redo.write(&index_file, index::render_file(&entries).into_bytes());
        if first_owner.is_some() {
            redo.needs(Needs::Owner);
        }
        Ok(PlannedPublish {
            tmp,
            meta,
            name,
            entry,
            readme_html,
            entries,
            new_crate,
            first_owner,
            dest,
            info,
            in_journal,
            redo,
        })
    }

    /// The part of a publish that writes, once its journal line (at `mark`) is synced (lock
    /// held). `auth_changed`: the access file was written since the publish was planned (by
    /// an earlier publish of the same batch), so its first owner goes into the file as it
    /// is now. A failure undoes what this publish wrote and takes back its journal line
    /// (with every line after it).
    pub(super) fn finish_publish(
        &self,
        planned: PlannedPublish,
        mark: u64,
        auth_changed: bool,
        changes: &mut Vec<Change>,
    ) -> Result<IndexEntry, AuthError> {
        let PlannedPublish {
            tmp,
            meta,
            name,
            entry,
            readme_html,
            entries,
            new_crate,
            first_owner,
            dest,
            info,
            in_journal,
            redo: _,
        } = planned;
        let (first_owner, edit) = match first_owner {
            Some((user, edit)) => (Some(user), Some(edit)),
            None => (None, None),
        };
        let edit = match (edit, &first_owner) {
            (Some(_), Some(user)) if auth_changed => auth::Edit::open(self).and_then(|mut e| {
                e.data.set_first_owner(&name, user)?;
                Ok(Some(e))
            }),
            (edit, _) => Ok(edit),
        };
        // The owner goes in first, kept to be put back: a publish that fails takes it along,
        // and the journal's repair drops it after a crash (see `drop_unpublished_owners`).
        let saved = edit.and_then(|e| e.map(auth::Edit::save_keeping).transpose());
        let previous_owners = match saved {
            Ok(p) => p.flatten(),
            Err(e) => {
                self.journal_cancel(mark);
                return Err(e);
            }
        };
        let placed = self.place(&tmp.0, &dest, &info, readme_html.as_deref(), !in_journal);
        let committed = placed.and_then(|dest| {
            let message = format!("Add {} {}", meta.name, meta.vers);
            self.write_index_file(&name, &entries, &message)
                .inspect_err(|_| self.unplace(&dest))
        });
        if let Err(e) = committed {
            if let Some(previous) = previous_owners {
                let _ = previous.put_back();
            }
            self.journal_cancel(mark);
            return Err(e.into());
        }
        if let Some(previous) = previous_owners {
            previous.forget();
        }
        let newest = search::max_version(&entries);
        let described = newest.as_deref() == Some(meta.vers.as_str());
        self.update_search(
            &name,
            &entries,
            described.then(|| (meta.description.clone(), meta.keywords.clone())),
        );
        changes.push(Change::Published {
            name: entry.name.clone(),
            vers: entry.vers.clone(),
            cksum: entry.cksum.clone(),
            new_crate,
        });
        if let Some(user) = first_owner {
            changes.push(Change::OwnersAdded {
                name: entry.name.clone(),
                users: vec![user],
            });
        }
        Ok(*entry)
    }

    /// Refuses a version that is published (less build metadata) or was deleted (lock held).
    fn check_version_free(
        &self,
        meta: &PublishMetadata,
        version: &Version,
        entries: &[IndexEntry],
    ) -> Result<()> {
        if let Some(e) = entries
            .iter()
            .find(|e| Version::parse(&e.vers).is_ok_and(|v| v.same_release(version)))
        {
            return Err(Error::Conflict(format!(
                "crate version `{}` of `{}` is already uploaded (as {})",
                meta.vers, meta.name, e.vers
            )));
        }
        if let Some(t) = tombstone::find(&self.root, &meta.name, version)? {
            return Err(Error::Conflict(format!(
                "crate version `{}` of `{}` was deleted on {} (as {} {}), and version numbers \
                 cannot be reused: caches may still hold the deleted file; publish a new version",
                meta.vers,
                meta.name,
                names::shown(&t.deleted),
                names::shown(&t.name),
                names::shown(&t.vers),
            )));
        }
        Ok(())
    }

    /// Moves a journaled crate's file into place with its page files (lock held): synced
    /// when `synced` (a crate file too large for the journal line), else left for the
    /// checkpoint. Returns where the crate file went.
    fn place(
        &self,
        tmp: &Path,
        dest: &Path,
        info: &[u8],
        readme_html: Option<&str>,
        synced: bool,
    ) -> Result<PathBuf> {
        let dest_dir = dest.parent().expect("crate paths have a parent");
        // The page files go in with the crate file, before the commit: a publish that is
        // answered 200 has them, and one that fails (or is killed) takes them along (the
        // journal's repair moves leftovers aside like the crate file).
        let placed = (|| {
            if synced {
                create_dir_all_synced(dest_dir)
            } else {
                fs::create_dir_all(dest_dir)
            }
            .context(|| format!("creating {}", dest_dir.display()))?;
            crateinfo::store(dest, info, readme_html, synced)?;
            fs::rename(tmp, dest).context(|| format!("moving crate file to {}", dest.display()))?;
            match synced {
                true => sync_dir(dest_dir).context(|| format!("syncing {}", dest_dir.display())),
                false => Ok(()),
            }
        })();
        match placed {
            Ok(()) => Ok(dest.to_owned()),
            Err(e) => {
                self.unplace(dest);
                Err(e)
            }
        }
    }

    /// Nothing of a publish that failed stays: no crate file, no page files.
    fn unplace(&self, dest: &Path) {
        let [info_file, readme_file] = crateinfo::sidecars(dest);
        for p in [dest, &info_file, &readme_file] {
            let _ = fs::remove_file(p);
        }
        if let Some(dir) = dest.parent() {
            let _ = fs::remove_dir(dir);
        }
    }

    /// Whether `name` is published, kept for the owners of a deleted crate (owners recorded,
    /// or versions deleted and the name not given up), or free (lock held).
    pub(super) fn name_state(&self, name: &CrateName, data: &auth::AuthFile) -> Result<NameState> {
        if self.find_canonical(name)?.is_some() {
            return Ok(NameState::Published);
        }
        let kept = !data.recorded_owners(name).is_empty()
            || tombstone::read(&self.root)?
                .0
                .iter()
                .any(|t| t.keeps_name(name));
        Ok(if kept {
            NameState::Kept
        } else {
            NameState::Free
        })
    }

    /// Refuses a name whose canonical form belongs to a crate spelled differently.
    fn check_name_free(&self, name: &CrateName) -> Result<()> {
        if let Some(existing) = self.find_canonical(name)? {
            if existing != name.as_str() {
                return Err(Error::Conflict(format!(
                    "crate name `{name}` is too similar to the existing crate `{existing}`"
                )));
            }
        }
        Ok(())
    }
}

/// The largest crate file a publish's journal line carries (written there in hex): larger
/// ones are synced on their own before the line.
const REDO_MAX_CRATE: u64 = 256 * 1024;

/// The metadata of a publish: what cargo sent (`meta`, its targets in cargo's spelling),
/// which must name the crate and version of the crate file's `Cargo.toml`, or (None) what
/// that manifest says, recorded as crates.io recorded it in `era`. Also returns the README
/// file the manifest names.
fn agreed_metadata(
    meta: Option<PublishMetadata>,
    manifest: &str,
    era: history::Era,
) -> Result<(PublishMetadata, Option<String>)> {
    let from_manifest = PublishMetadata::from_manifest_in(manifest, era)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let manifest_readme = from_manifest.readme_file.clone();
    let meta = match meta {
        Some(mut m) => {
            if m.name != from_manifest.name || m.vers != from_manifest.vers {
                return Err(Error::Invalid(format!(
                    "metadata says {} {} but the crate file's Cargo.toml says {} {}",
                    names::shown(&m.name),
                    names::shown(&m.vers),
                    names::shown(&from_manifest.name),
                    names::shown(&from_manifest.vers)
                )));
            }
            m.spell_targets_as_cargo();
            m
        }
        None => from_manifest,
    };
    Ok((meta, manifest_readme))
}

/// A crate file's names agree with its metadata: the file it was read from (when named like
/// a crate file) is `{top}.crate`, and its files are under `{top}/`.
fn check_file_names(
    meta: &PublishMetadata,
    top: &str,
    file_name: Option<&str>,
    top_dir: &str,
) -> Result<()> {
    if let Some(file_name) = file_name {
        if file_name != format!("{top}.crate") {
            return Err(Error::Invalid(format!(
                "file name `{}` does not match its manifest ({} {}); expected `{top}.crate`",
                names::shown(file_name),
                meta.name,
                meta.vers
            )));
        }
    }
    if top_dir != top {
        return Err(Error::Invalid(format!(
            "crate file's files are under `{}/`, expected `{top}/`",
            names::shown(top_dir)
        )));
    }
    Ok(())
}

/// The README as sanitized HTML: the text cargo sent, else the file the manifest names,
/// read from the stored crate file under `{top}/`.
fn render_readme_of(
    meta: &PublishMetadata,
    manifest_readme: Option<&str>,
    crate_file: &Path,
    top: &str,
) -> Option<String> {
    match meta.readme.as_deref() {
        Some(text) => crateinfo::render_readme(text),
        None => manifest_readme
            .and_then(|f| {
                crateinfo::readme_from_crate(crate_file, top, f)
                    .ok()
                    .flatten()
            })
            .and_then(|text| crateinfo::render_readme(&text)),
    }
}

/// Copies everything read from `inner` into `out`, keeping a write error apart so that it
/// is not mistaken for a broken archive.
struct Tee<'a, R> {
    inner: R,
    out: &'a mut File,
    write_error: &'a mut Option<io::Error>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let kind = e.kind();
            *self.write_error = Some(e);
            return Err(kind.into());
        }
        Ok(n)
    }
}
