//! [`StoreError`], and how SQLite's errors become one.

use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;
use thiserror::Error;

use super::{SessionState, Store};

/// A database operation that failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The disk (or the database's size limit) is full. Nothing more can be recorded; what was
    /// recorded before is intact.
    #[error("{}: disk full, the result was not recorded (everything recorded before is intact)", path.display())]
    DiskFull {
        /// The database.
        path: PathBuf,
    },
    /// The outbox of results waiting for the fleet broker holds its cap of rows, none of them
    /// sent yet (unsent rows are never dropped): nothing more can be recorded until the broker
    /// takes some. What was recorded before is intact. A fault like a full disk.
    #[error(
        "{}: outbox full ({rows} rows not yet sent to the fleet broker, cap {cap}), the result was not recorded (everything recorded before is intact)",
        path.display()
    )]
    OutboxFull {
        /// The database.
        path: PathBuf,
        /// Unsent rows.
        rows: u64,
        /// The configured cap (`[fleet] outbox_max_rows`).
        cap: u64,
    },
    /// Another process holds the database (another `edge run`, or a lock not released in time).
    #[error("{}: in use by another process: {detail}", path.display())]
    Busy {
        /// The database.
        path: PathBuf,
        /// What is busy.
        detail: String,
    },
    /// The file is not a leukoscope database, or it is damaged.
    #[error("{}: not a leukoscope database, or damaged: {detail}", path.display())]
    NotOurs {
        /// The database.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The database was written by a newer version of this program.
    #[error(
        "{}: written by a newer leukoscope (schema version {found}; this program knows up to {supported})",
        path.display()
    )]
    TooNew {
        /// The database.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest version this program knows.
        supported: i64,
    },
    /// The database has an older schema, which only a writer migrates: opened for reading (or
    /// by the publisher) before `edge run` has opened it once with this version.
    #[error(
        "{}: schema version {found}, older than this program's {supported}: `edge run` migrates it when it next starts (reading it until then needs the program that wrote it)",
        path.display()
    )]
    NotMigrated {
        /// The database.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The version this program reads.
        supported: i64,
    },
    /// Any other SQLite failure.
    #[error("{}: cannot {action}: {source}", path.display())]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The lock file or the database's folder could not be created or opened.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No session with this id.
    #[error("no session {id} in {}", path.display())]
    UnknownSession {
        /// The database.
        path: PathBuf,
        /// The id asked for.
        id: i64,
    },
    /// The session is closed or interrupted: frames cannot be added and it cannot be closed again.
    #[error("session {id} is {state}, not open")]
    SessionNotOpen {
        /// The session.
        id: i64,
        /// Its state.
        state: SessionState,
    },
    /// A value to record is inconsistent, or a stored value cannot be read back.
    #[error("{}: invalid {what}: {detail}", path.display())]
    Invalid {
        /// The database.
        path: PathBuf,
        /// Which value.
        what: String,
        /// What is wrong.
        detail: String,
    },
}

impl StoreError {
    /// A database whose schema `version` is not the one this program reads without migrating:
    /// [`StoreError::TooNew`] or [`StoreError::NotMigrated`].
    pub(crate) fn version_mismatch(path: &Path, version: i64) -> Self {
        let (path, found, supported) = (path.to_path_buf(), version, super::SCHEMA_VERSION);
        if version > supported {
            StoreError::TooNew {
                path,
                found,
                supported,
            }
        } else {
            StoreError::NotMigrated {
                path,
                found,
                supported,
            }
        }
    }

    /// True for [`StoreError::DiskFull`].
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::DiskFull { .. })
    }

    /// True for [`StoreError::OutboxFull`].
    pub fn is_outbox_full(&self) -> bool {
        matches!(self, StoreError::OutboxFull { .. })
    }
}

/// A SQLite error as a [`StoreError`]: a full disk, a busy or foreign database by its SQLite
/// code, anything else as what was being done.
pub(super) fn sql_error(path: &Path, action: &'static str, e: rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => StoreError::DiskFull { path },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy {
            path,
            detail: e.to_string(),
        },
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::NotOurs {
            path,
            detail: e.to_string(),
        },
        _ => StoreError::Sqlite {
            path,
            action,
            source: e,
        },
    }
}

impl Store {
    /// A SQLite error of `action` on this database.
    pub(super) fn err(&self, action: &'static str, e: rusqlite::Error) -> StoreError {
        sql_error(&self.path, action, e)
    }

    /// An inconsistent value to record, or a stored value that cannot be read back.
    pub(super) fn invalid(&self, what: impl Into<String>, detail: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            path: self.path.clone(),
            what: what.into(),
            detail: detail.into(),
        }
    }
}
