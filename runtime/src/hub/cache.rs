//! The Hugging Face cache layout, as huggingface_hub writes it:
//!
//! ```text
//! <cache>/models--ORG--NAME/
//!   refs/main                      the commit hash `main` pointed to when last fetched
//!   snapshots/<commit>/config.json (usually a relative symlink into blobs/)
//!   blobs/<etag>
//!   .no_exist/<commit>/<file>      an empty marker: the repository has no such file
//! ```
//!
//! A revision is looked up in `refs/` (a branch or a tag), or used as it is when it is a full
//! commit hash.

use super::{HubError, RepoId, is_commit};
use std::path::{Path, PathBuf};

/// The repository's folder in `cache`.
pub fn repo_dir(cache: &Path, id: &RepoId) -> PathBuf {
    cache.join(id.folder())
}

/// The commit `id`'s revision stands for in `cache`: the revision itself when it is a commit
/// hash, else the hash in `refs/<revision>`; `None` when the cache has no such ref.
pub fn commit(cache: &Path, id: &RepoId) -> Option<String> {
    if id.is_commit() {
        return Some(id.revision.to_ascii_lowercase());
    }
    let text = std::fs::read_to_string(repo_dir(cache, id).join("refs").join(&id.revision)).ok()?;
    let hash = text.trim();
    is_commit(hash).then(|| hash.to_ascii_lowercase())
}

/// The snapshot directory of `commit`.
pub fn snapshot_dir(cache: &Path, id: &RepoId, commit: &str) -> PathBuf {
    repo_dir(cache, id).join("snapshots").join(commit)
}

/// The snapshot `id` resolves to in `cache`, when the cache has one.
pub fn snapshot(cache: &Path, id: &RepoId) -> Option<PathBuf> {
    let dir = snapshot_dir(cache, id, &commit(cache, id)?);
    dir.is_dir().then_some(dir)
}

/// Records that `revision` points at `commit` (`refs/<revision>`), as huggingface_hub does
/// after asking the Hub; nothing for a revision that is itself a commit hash.
pub fn write_ref(cache: &Path, id: &RepoId, commit: &str) -> Result<(), HubError> {
    if id.is_commit() {
        return Ok(());
    }
    let path = repo_dir(cache, id).join("refs").join(&id.revision);
    let io = |source| HubError::Io {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(&path, commit).map_err(io)
}

/// Whether the cache records that the repository has no `file` at `commit`
/// (`.no_exist/<commit>/<file>`).
pub fn known_missing(cache: &Path, id: &RepoId, commit: &str, file: &str) -> bool {
    no_exist(cache, id, commit, file).exists()
}

/// Records that the repository has no `file` at `commit`, as huggingface_hub does, so that
/// the Hub is not asked again. A failure to write the marker only costs a request later.
pub fn mark_missing(cache: &Path, id: &RepoId, commit: &str, file: &str) {
    let path = no_exist(cache, id, commit, file);
    if let Some(parent) = path.parent()
        && std::fs::create_dir_all(parent).is_ok()
    {
        let _ = std::fs::write(&path, b"");
    }
}

fn no_exist(cache: &Path, id: &RepoId, commit: &str, file: &str) -> PathBuf {
    repo_dir(cache, id)
        .join(".no_exist")
        .join(commit)
        .join(file)
}

/// Every file under `dir` (following symlinks), as `/`-separated paths relative to it,
/// sorted; hidden files and folders (`.gitattributes`, `.cache/`) are left out.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let rel = format!("{prefix}{name}");
            let path = entry.path();
            // `metadata` follows symlinks: a snapshot's files are links into blobs/.
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => walk(&path, &format!("{rel}/"), out),
                Ok(m) if m.is_file() => out.push(rel),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}
