//! Labeled image folders: scanning, the train/val/test split and its manifest, augmentation,
//! class balancing and batches.

pub mod augment;
pub mod balance;
pub mod batches;
pub mod folder;
pub mod split;

use std::path::PathBuf;
use thiserror::Error;

/// A dataset problem, always naming the folder or file concerned.
#[derive(Debug, Error)]
pub enum DataError {
    /// The folder does not exist or cannot be listed.
    #[error("{}: cannot read dataset folder: {reason}", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The dataset's shape makes training impossible (no classes, one class, too few images).
    #[error("{}: {reason}", path.display())]
    Unusable {
        /// The dataset folder.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// A file could not be used and `--strict` was given.
    #[error("{}: {reason} (--strict refuses unreadable files; drop --strict to skip them)", path.display())]
    Strict {
        /// The file.
        path: PathBuf,
        /// Why it is unreadable.
        reason: String,
    },
    /// A manifest could not be read or does not match the files.
    #[error("{}: {reason}", path.display())]
    Manifest {
        /// The manifest (or the file it names).
        path: PathBuf,
        /// Why.
        reason: String,
    },
}
