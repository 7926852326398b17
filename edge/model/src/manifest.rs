//! `manifest.csv`: which picture of a labeled folder went to which split of a training run.
//!
//! One row per picture, `file,sha256,class,split` (RFC 4180 CSV: a file name may be quoted and
//! hold commas), `file` relative to the dataset folder, `sha256` of the file's bytes. The trainer
//! writes it; the trainer (`--manifest`), `edge evaluate --manifest` and quantize's calibration
//! read it back through [`read`], and every reader checks each file's digest before using it
//! ([`check_digests`]), so a split is never silently evaluated on changed pictures.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The header row, a contract.
pub const HEADER: [&str; 4] = ["file", "sha256", "class", "split"];

/// One of the three splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training images (the only ones augmented).
    Train,
    /// Validation images (early stopping, best checkpoint).
    Val,
    /// Held-out test images (the report).
    Test,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        })
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "train" => Ok(Split::Train),
            "val" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            other => Err(format!("unknown split '{other}' (train, val or test)")),
        }
    }
}

/// One row of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRow {
    /// The picture, relative to the dataset folder (`/`-separated).
    pub file: String,
    /// sha256 of the file's bytes, lower-case hex.
    pub sha256: String,
    /// Its class (a folder name, a label of the model).
    pub class: String,
    /// The split it belongs to.
    pub split: Split,
}

/// A manifest that cannot be read or written, or a picture that no longer matches it.
#[derive(Debug, Error)]
pub enum ManifestError {
    /// Reading or writing the manifest failed, or it is malformed.
    #[error("{}: {reason}", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A listed picture is missing, unreadable or has other bytes than when it was listed.
    #[error("{}: {reason} (listed in {})", file.display(), manifest.display())]
    Picture {
        /// The picture.
        file: PathBuf,
        /// The manifest that lists it.
        manifest: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// sha256 of `bytes`, lower-case hex (the manifest's digest).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `rows` to `path` (header first), whole or not at all ([`crate::durable`]).
pub fn write<'a>(
    path: &Path,
    rows: impl IntoIterator<Item = &'a ManifestRow>,
) -> Result<(), ManifestError> {
    let bad = |reason: String| ManifestError::Manifest {
        path: path.to_path_buf(),
        reason: format!("cannot write: {reason}"),
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        w.serialize(row).map_err(|e| bad(e.to_string()))?;
    }
    let bytes = w.into_inner().map_err(|e| bad(e.to_string()))?;
    crate::durable::write_atomic(path, &bytes).map_err(|e| ManifestError::Manifest {
        reason: format!("cannot {}: {}", e.action, e.source),
        path: e.path,
    })
}

/// Reads every row of the manifest at `path`; the header must be [`HEADER`].
pub fn read(path: &Path) -> Result<Vec<ManifestRow>, ManifestError> {
    let bad = |reason: String| ManifestError::Manifest {
        path: path.to_path_buf(),
        reason,
    };
    let mut r = csv::Reader::from_path(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let header = r.headers().map_err(|e| bad(format!("cannot read: {e}")))?;
    if header.iter().map(str::trim).ne(HEADER) {
        return Err(bad(format!(
            "not a leukoscope manifest (header must be {})",
            HEADER.join(",")
        )));
    }
    r.deserialize()
        .enumerate()
        .map(|(n, row)| row.map_err(|e| bad(format!("line {}: {e}", n + 2))))
        .collect()
}

/// Checks that every row's file under `root` exists and still has the listed sha256.
pub fn check_digests(
    manifest: &Path,
    root: &Path,
    rows: &[&ManifestRow],
) -> Result<(), ManifestError> {
    for row in rows {
        let file = root.join(&row.file);
        let picture = |reason: String| ManifestError::Picture {
            file: file.clone(),
            manifest: manifest.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(&file).map_err(|e| picture(format!("cannot read: {e}")))?;
        if sha256_hex(&bytes) != row.sha256 {
            return Err(picture(
                "has changed since the manifest was written (sha256 differs)".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(file: &str, bytes: &[u8], split: Split) -> ManifestRow {
        ManifestRow {
            file: file.into(),
            sha256: sha256_hex(bytes),
            class: "Benign".into(),
            split,
        }
    }

    #[test]
    fn round_trip_keeps_quoted_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.csv");
        let rows = vec![
            row("Benign/a.jpg", b"a", Split::Train),
            row("Benign/with, comma \"and quote\".jpg", b"b", Split::Test),
        ];
        write(&path, &rows).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("file,sha256,class,split\n"), "{text}");
        assert_eq!(read(&path).unwrap(), rows);
    }

    #[test]
    fn a_foreign_header_or_a_bad_split_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        std::fs::write(&path, "a,b,c,d\nx,y,z,train\n").unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("header"));
        std::fs::write(&path, "file,sha256,class,split\nx,y,z,holdout\n").unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("line 2"));
    }

    #[test]
    fn changed_or_missing_pictures_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.jpg"), b"a").unwrap();
        let listed = row("a.jpg", b"a", Split::Val);
        let m = dir.path().join("manifest.csv");
        check_digests(&m, dir.path(), &[&listed]).unwrap();
        std::fs::write(dir.path().join("a.jpg"), b"changed").unwrap();
        let err = check_digests(&m, dir.path(), &[&listed]).unwrap_err();
        assert!(err.to_string().contains("a.jpg") && err.to_string().contains("sha256"));
        let gone = row("b.jpg", b"b", Split::Val);
        let err = check_digests(&m, dir.path(), &[&gone]).unwrap_err();
        assert!(err.to_string().contains("b.jpg"), "{err}");
    }
}
