//! One writer per run directory: `OUT/.poc-run.lock`, an advisory lock (`flock`) held by the
//! writing process for its whole life, so a second run on the same `--out` is refused before it
//! writes anything (two writers interleave `metrics.jsonl` lines and overwrite each other's
//! checkpoints and `run_config.json`).
//!
//! The operating system releases the lock when its process ends, however it ends, so a lock
//! left by a killed run is never in the way: the file stays behind with the dead process's id,
//! and the next run says so and takes it over, removing what the killed run left half-written
//! (`checkpoint-N.tmp` directories, `.NAME.tmp-PID-K` files). The lock lives as long as the
//! process (a process-wide registry holds it; [`release_all`] removes the files at a clean
//! exit), and one process may lock the same directory again.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The lock file's name inside the run directory.
pub const LOCK_FILE: &str = ".poc-run.lock";

/// The locks this process holds: (canonical run directory, open lock file).
static HELD: Mutex<Vec<(PathBuf, File)>> = Mutex::new(Vec::new());

/// Why the run directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds the lock.
    #[error(
        "`{}` is in use by another poc run ({holder}); two runs writing one directory would corrupt each other's metrics and checkpoints\n  = hint: wait for it to finish, or pass another --out",
        dir.display()
    )]
    Busy {
        /// The run directory.
        dir: PathBuf,
        /// What the lock file says of its holder.
        holder: String,
    },
    /// The lock file could not be opened or written.
    #[error("cannot lock `{}`: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What [`lock_run_dir`] found: `Some(holder)` when it took over the lock file of a process
/// that ended without removing it (its description, e.g. `pid 4242, started ...`).
pub type Stale = Option<String>;

/// Takes the run directory `dir` (which exists) for this process, or says who holds it.
pub fn lock_run_dir(dir: &Path) -> Result<Stale, LockError> {
    // A holder that exits cleanly unlinks the file: a lock taken on the unlinked file would
    // lock nothing, so it is taken again on the file the path now names.
    for _ in 0..8 {
        if let Some(found) = try_lock_run_dir(dir)? {
            return Ok(found);
        }
    }
    Err(LockError::Io {
        path: dir.join(LOCK_FILE),
        source: std::io::Error::other("the lock file keeps being replaced"),
    })
}

/// One attempt of [`lock_run_dir`]; `None` when the file was unlinked under it.
fn try_lock_run_dir(dir: &Path) -> Result<Option<Stale>, LockError> {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if held.iter().any(|(d, _)| *d == canonical) {
        return Ok(Some(None));
    }
    let path = dir.join(LOCK_FILE);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    let mut previous = String::new();
    // A lock file that is not text is no holder's description; it is overwritten below.
    let _ = file.read_to_string(&mut previous);
    let previous = previous.trim().to_string();
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(LockError::Busy {
                dir: dir.to_path_buf(),
                holder: if previous.is_empty() {
                    "a process that has not yet said who it is".into()
                } else {
                    previous
                },
            });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    let same = match (std::fs::metadata(&path), file.metadata()) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    };
    if !same {
        return Ok(None);
    }
    let me = format!(
        "pid {}, started {} s after the Unix epoch",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    );
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    file.write_all(me.as_bytes()).map_err(io)?;
    file.flush().map_err(io)?;
    held.push((canonical, file));
    Ok(Some((!previous.is_empty()).then_some(previous)))
}

/// Removes what a killed writer left half-written in the run directory `dir` (which this
/// process has locked): `checkpoint-N.tmp` directories and `.NAME.tmp-PID-K` files of atomic
/// writes. Returns what it removed.
pub fn remove_leftovers(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let checkpoint_tmp = name.starts_with("checkpoint-") && name.ends_with(".tmp");
        let atomic_tmp = name.starts_with('.') && name.contains(".tmp-");
        let gone = if checkpoint_tmp && path.is_dir() {
            std::fs::remove_dir_all(&path).is_ok()
        } else if atomic_tmp && path.is_file() {
            std::fs::remove_file(&path).is_ok()
        } else {
            false
        };
        if gone {
            removed.push(path);
        }
    }
    removed.sort();
    removed
}

/// Releases the lock on run directory `dir` if this process holds it (a run that stops during
/// set-up), removing the lock file.
pub fn release(dir: &Path) {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = held.iter().position(|(d, _)| *d == canonical) {
        let (d, file) = held.remove(i);
        let _ = std::fs::remove_file(d.join(LOCK_FILE));
        drop(file);
    }
}

/// Releases every run directory this process holds, removing the lock files (a clean exit: the
/// next run finds no stale lock).
pub fn release_all() {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    for (dir, file) in held.drain(..) {
        let _ = std::fs::remove_file(dir.join(LOCK_FILE));
        drop(file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_of_a_held_lock_is_busy_and_a_released_one_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        // Another holder: the lock taken through a separate open file (as another process
        // would hold it).
        let path = dir.path().join(LOCK_FILE);
        std::fs::write(&path, "pid 1, started 0 s after the Unix epoch").unwrap();
        let other = File::options().read(true).write(true).open(&path).unwrap();
        other.lock().unwrap();
        match lock_run_dir(dir.path()) {
            Err(LockError::Busy { holder, .. }) => assert!(holder.contains("pid 1"), "{holder}"),
            other => panic!("expected Busy, got {other:?}"),
        }
        // Released (its process ended): taken over, and named.
        drop(other);
        let stale = lock_run_dir(dir.path()).unwrap();
        assert_eq!(
            stale.as_deref(),
            Some("pid 1, started 0 s after the Unix epoch")
        );
        // This process may take its own directory again.
        assert_eq!(lock_run_dir(dir.path()).unwrap(), None);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        // A clean release removes the file: the next taker finds nothing stale.
        release_all();
        assert!(!path.exists());
        assert_eq!(lock_run_dir(dir.path()).unwrap(), None);
        release_all();
    }

    #[test]
    fn leftovers_of_a_killed_writer_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("checkpoint-4.tmp")).unwrap();
        std::fs::write(dir.path().join("checkpoint-4.tmp/model.safetensors"), "x").unwrap();
        std::fs::write(dir.path().join(".metrics.jsonl.tmp-99-0"), "x").unwrap();
        std::fs::create_dir(dir.path().join("checkpoint-2")).unwrap();
        std::fs::write(dir.path().join("metrics.jsonl"), "{}").unwrap();
        let removed = remove_leftovers(dir.path());
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(dir.path().join("checkpoint-2").is_dir());
        assert!(dir.path().join("metrics.jsonl").is_file());
        assert!(!dir.path().join("checkpoint-4.tmp").exists());
    }
}
