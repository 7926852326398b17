//! Writes that survive a power cut: a file is replaced whole or not at all, and once a call
//! returns, the new content *and its name* are on stable storage.
//!
//! The recipe ([`write_atomic`]): write a temporary file beside the target (`<name>.tmp`, in the
//! same folder so on the same file system), `fsync` it, rename it over the target, then `fsync`
//! the folder. Without the file's `fsync` a power cut can leave the new name on an empty or
//! partial file; without the folder's, it can bring back the old name, or no name at all.
//!
//! The trainer's checkpoints, JSON files and exported models and the device's kept pictures are
//! written through here. A write that is not a whole-file replacement (moving a folder into
//! place, creating a folder) uses [`rename_durably`], [`create_dir_all`] and [`sync_dir`].

use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// A durable write that failed, naming the file or folder and the step.
#[derive(Debug, Error)]
#[error("{}: cannot {action}: {source}", path.display())]
pub struct DurableError {
    /// The file or folder.
    pub path: PathBuf,
    /// The step that failed ("write", "fsync", "rename … into place", …).
    pub action: String,
    /// The cause.
    pub source: io::Error,
}

impl DurableError {
    fn new(path: &Path, action: impl Into<String>, source: io::Error) -> DurableError {
        DurableError {
            path: path.to_path_buf(),
            action: action.into(),
            source,
        }
    }

    /// The file system is full.
    pub fn is_disk_full(&self) -> bool {
        self.source.kind() == io::ErrorKind::StorageFull
    }
}

/// The temporary file [`write_atomic`] writes before renaming it to `path`: `<path>.tmp`.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Replaces `path` with `bytes`: after a power cut at any moment `path` holds either its old
/// content or `bytes`, whole. The folder must exist. On failure the temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DurableError> {
    let tmp = temp_path(path);
    let done = write_synced(&tmp, bytes).and_then(|()| rename_durably(&tmp, path));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// Writes `bytes` to a new (or truncated) `path` and `fsync`s it; the folder is not synced.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), DurableError> {
    let mut file = File::create(path).map_err(|e| DurableError::new(path, "create", e))?;
    file.write_all(bytes)
        .map_err(|e| DurableError::new(path, "write", e))?;
    file.sync_all()
        .map_err(|e| DurableError::new(path, "fsync", e))
}

/// Renames `from` to `to` (replacing a file, or an empty folder, at `to`) and `fsync`s the
/// folder holding `to` — and the one holding `from` when it is another — so the rename itself
/// survives a power cut. What `from` names must already be synced.
pub fn rename_durably(from: &Path, to: &Path) -> Result<(), DurableError> {
    std::fs::rename(from, to)
        .map_err(|e| DurableError::new(to, format!("rename {} into place", from.display()), e))?;
    let (from_dir, to_dir) = (parent(from), parent(to));
    sync_dir(to_dir)?;
    if from_dir != to_dir {
        sync_dir(from_dir)?;
    }
    Ok(())
}

/// `fsync`s a folder: the names created, renamed or removed in it are on stable storage when
/// this returns.
pub fn sync_dir(dir: &Path) -> Result<(), DurableError> {
    let synced = File::open(dir).and_then(|d| d.sync_all());
    match synced {
        // EINVAL: a file system that cannot sync folders (some FUSE and network file systems);
        // there is nothing more we can do there, and refusing to write would lose more.
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
        other => other.map_err(|e| DurableError::new(dir, "fsync the folder", e)),
    }
}

/// Creates `dir` and its missing parents, and `fsync`s the folder holding each one created, so
/// the new folders survive a power cut. Does nothing when `dir` is already a folder.
pub fn create_dir_all(dir: &Path) -> Result<(), DurableError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.exists() {
        missing.push(d);
        match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => d = p,
            _ => break,
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| DurableError::new(dir, "create the folder", e))?;
    for created in missing.iter().rev() {
        sync_dir(parent(created))?;
    }
    Ok(())
}

/// The folder holding `path` (`.` for a bare file name).
fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"first").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn a_failed_write_names_the_file_and_keeps_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bpk");
        write_atomic(&path, b"old").unwrap();
        // A folder where the temporary file should go: creating it fails.
        std::fs::create_dir(temp_path(&path)).unwrap();
        let err = write_atomic(&path, b"new").unwrap_err();
        assert!(err.to_string().contains("model.bpk.tmp"), "{err}");
        assert!(err.to_string().contains("cannot create"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");

        let missing = dir.path().join("no such folder").join("x.json");
        let err = write_atomic(&missing, b"x").unwrap_err();
        assert!(err.to_string().contains("no such folder"), "{err}");
        assert!(!err.is_disk_full());
    }

    #[test]
    fn rename_durably_moves_folders_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("checkpoint.tmp");
        std::fs::create_dir(&tmp).unwrap();
        write_atomic(&tmp.join("state.json"), b"{}").unwrap();
        let target = dir.path().join("checkpoint");
        rename_durably(&tmp, &target).unwrap();
        assert_eq!(std::fs::read(target.join("state.json")).unwrap(), b"{}");
        assert!(!tmp.exists());

        let other = dir.path().join("elsewhere");
        std::fs::create_dir(&other).unwrap();
        rename_durably(&target.join("state.json"), &other.join("state.json")).unwrap();
        assert!(other.join("state.json").is_file());

        let err = rename_durably(&tmp, &target).unwrap_err().to_string();
        assert!(
            err.contains("checkpoint.tmp") && err.contains("into place"),
            "{err}"
        );
    }

    #[test]
    fn create_dir_all_makes_every_missing_level_and_tolerates_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a").join("b").join("c");
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_all(&deep).unwrap();
        std::fs::write(dir.path().join("file"), b"").unwrap();
        let err = create_dir_all(&dir.path().join("file").join("sub")).unwrap_err();
        assert!(err.to_string().contains("file"), "{err}");
        sync_dir(dir.path()).unwrap();
        assert!(sync_dir(&dir.path().join("missing")).is_err());
    }
}
