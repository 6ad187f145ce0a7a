//! The index repository: creating it, committing changes to it, and telling whether its
//! working tree matches its last commit. Only the registry's writer path calls these.

use std::path::Path;

use git2::{IndexAddOption, Repository, Signature, Status, StatusOptions};

fn signature() -> Result<Signature<'static>, git2::Error> {
    Signature::now("palletizer", "palletizer@localhost")
}

/// Creates the repository with its first commit holding `config.json`.
pub fn init(dir: &Path, config_json: &str) -> Result<(), git2::Error> {
    let repo = Repository::init(dir)?;
    std::fs::write(dir.join("config.json"), config_json)
        .map_err(|e| git2::Error::from_str(&format!("writing config.json: {e}")))?;
    let mut index = repo.index()?;
    index.add_path(Path::new("config.json"))?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let sig = signature()?;
    repo.commit(Some("HEAD"), &sig, &sig, "Initialize index", &tree, &[])?;
    Ok(())
}

/// Stages the given paths (added, changed or removed) and commits them with `message`.
/// Returns false when the tree did not change, in which case nothing is committed.
pub fn commit_paths(dir: &Path, paths: &[&str], message: &str) -> Result<bool, git2::Error> {
    let repo = Repository::open(dir)?;
    let mut index = repo.index()?;
    for p in paths {
        if dir.join(p).exists() {
            index.add_path(Path::new(p))?;
        } else {
            index.remove_path(Path::new(p))?;
        }
    }
    commit_index(&repo, &mut index, message)
}

/// Stages every change in the working tree (temp files excepted) and commits it.
pub fn commit_all(dir: &Path, message: &str) -> Result<bool, git2::Error> {
    let repo = Repository::open(dir)?;
    let mut index = repo.index()?;
    let mut skip_temp = |path: &Path, _: &[u8]| -> i32 {
        let temp = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(super::is_temp_name);
        i32::from(temp)
    };
    index.add_all(["*"], IndexAddOption::DEFAULT, Some(&mut skip_temp))?;
    index.update_all(["*"], None)?;
    commit_index(&repo, &mut index, message)
}

fn commit_index(
    repo: &Repository,
    index: &mut git2::Index,
    message: &str,
) -> Result<bool, git2::Error> {
    index.write()?;
    let tree_id = index.write_tree()?;
    let head = repo.head()?.peel_to_commit()?;
    if head.tree_id() == tree_id {
        return Ok(false);
    }
    let tree = repo.find_tree(tree_id)?;
    let sig = signature()?;
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &[&head])?;
    Ok(true)
}

/// Paths in the working tree that differ from the last commit (temp files excluded).
pub fn dirty_paths(dir: &Path) -> Result<Vec<String>, git2::Error> {
    let repo = Repository::open(dir)?;
    let mut opts = StatusOptions::new();
    opts.include_untracked(true).recurse_untracked_dirs(true);
    let statuses = repo.statuses(Some(&mut opts))?;
    Ok(statuses
        .iter()
        .filter(|s| s.status() != Status::CURRENT && !s.status().contains(Status::IGNORED))
        .filter_map(|s| s.path().ok().map(str::to_owned))
        .filter(|p| !p.rsplit('/').next().is_some_and(super::is_temp_name))
        .collect())
}
