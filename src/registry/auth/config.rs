//! The access mode's two files: `palletizer.toml` (the truth) and the index's `config.json`
//! (what cargo reads), written in that order under the registry lock and committed.

use std::fs;

use super::{auth_path, AuthError};
use crate::registry::index::git;
use crate::registry::settings::{Access, Settings};
use crate::registry::store::{write_atomic, SETTINGS_FILE};
use crate::registry::Registry;

/// `palletizer.toml` as it is on disk now (the registry's copy is that of its opening).
fn current_settings(reg: &Registry) -> Result<Settings, AuthError> {
    let path = reg.root.join(SETTINGS_FILE);
    let text = fs::read_to_string(&path).map_err(|source| crate::registry::Error::Io {
        context: format!("reading {}", path.display()),
        source,
    })?;
    Ok(Settings::parse(&text)
        .map_err(|e| crate::registry::Error::Settings(format!("{}: {e}", path.display())))?)
}

/// [`crate::registry::Command::SetAccess`], lock held: `palletizer.toml` first (it is the truth), then
/// `config.json`, committed. Returns the new settings and whether anything changed.
pub(crate) fn set_access_locked(
    reg: &Registry,
    access: Access,
) -> Result<(Settings, bool), AuthError> {
    let mut settings = current_settings(reg)?;
    if access != Access::Open {
        auth_path(&reg.root, &settings)?;
    }
    let changed = settings.access != access;
    if changed {
        settings.access = access;
        write_atomic(&reg.root.join(SETTINGS_FILE), settings.to_toml().as_bytes())?;
    }
    let config = write_config_json(reg, &settings)?;
    Ok((settings, changed || config))
}

/// [`crate::registry::Command::SyncAccess`], lock held: the settings, and whether `config.json` changed.
pub(crate) fn sync_config_json_locked(reg: &Registry) -> Result<(Settings, bool), AuthError> {
    let settings = current_settings(reg)?;
    let changed = write_config_json(reg, &settings)?;
    Ok((settings, changed))
}

/// Lock held. Writes `config.json` from `settings` if it differs, and commits it.
fn write_config_json(reg: &Registry, settings: &Settings) -> Result<bool, AuthError> {
    let path = reg.index_dir.join("config.json");
    let want = settings.config_json();
    let changed = fs::read(&path).ok().as_deref() != Some(want.as_bytes());
    if changed {
        write_atomic(&path, want.as_bytes())?;
    }
    let message = format!("Set access to {}", settings.access);
    let committed = git::commit_paths(&reg.index_dir, &["config.json"], &message)
        .map_err(crate::registry::Error::from)?;
    Ok(changed || committed)
}
