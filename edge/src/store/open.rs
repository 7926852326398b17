//! Opening the database: the writer (lock, pragmas, migrations, recovery of interrupted
//! sessions) and read-only readers.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};
use tracing::{info, warn};

use super::error::sql_error;
use super::rows::counts_json;
use super::{SCHEMA_VERSION, Store, StoreError, format_time, schema};

/// How long a statement waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The WAL file is truncated back to this size after a checkpoint.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

impl Store {
    /// Opens the database as its writer, creating it (and its folder) if needed, migrating it to
    /// [`SCHEMA_VERSION`] and marking sessions left open by a crash as interrupted.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_inner(path, None)
    }

    /// [`Store::open`], with the outbox on when `outbox` gives its cap.
    pub(super) fn open_inner(path: &Path, outbox: Option<u64>) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let lock = take_writer_lock(path)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sql_error(path, "open the database", e))?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            _lock: Some(lock),
            recovered: Vec::new(),
            label_counts: HashMap::new(),
            outbox: None,
        };
        store.configure_writer()?;
        store.migrate()?;
        store
            .conn
            .execute_batch(schema::INDEXES)
            .map_err(|e| store.err("create the indexes", e))?;
        if let Some(max_rows) = outbox {
            store.start_outbox(max_rows)?;
        }
        store.recover()?;
        Ok(store)
    }

    /// A connection to `path` with `flags` that takes no writer's lock, recovers nothing and
    /// queues nothing: a reader's or the fleet publisher's.
    pub(super) fn open_unlocked(path: &Path, flags: OpenFlags) -> Result<Store, StoreError> {
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| sql_error(path, "open the database", e))?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            _lock: None,
            recovered: Vec::new(),
            label_counts: HashMap::new(),
            outbox: None,
        })
    }

    /// Opens an existing database for reading only (`edge sessions`, `export`, `report`),
    /// while `edge run` may be writing it. Changes nothing, recovers nothing.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let (store, version) = Self::open_for_reading(path)?;
        if version == 0 {
            return Err(StoreError::NotOurs {
                path: path.to_path_buf(),
                detail: "empty database (never opened by edge run)".into(),
            });
        }
        if version != SCHEMA_VERSION {
            // An older schema is migrated only by the writer; reading it with today's queries
            // could fail in confusing ways.
            return Err(StoreError::version_mismatch(path, version));
        }
        Ok(store)
    }

    /// The schema version of an existing database, read without changing anything (`edge
    /// check`): 0 for an empty file, below [`SCHEMA_VERSION`] for one the next `edge run`
    /// migrates. A foreign database or one newer than this program is an error.
    pub fn schema_version(path: &Path) -> Result<i64, StoreError> {
        Self::open_for_reading(path).map(|(_, version)| version)
    }

    /// A read-only connection to an existing file, and its schema version once it is known to
    /// be a leukoscope database (or an empty one).
    fn open_for_reading(path: &Path) -> Result<(Store, i64), StoreError> {
        if !path.is_file() {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no database here"),
            });
        }
        let store = Self::open_unlocked(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        store
            .conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| store.err("set the busy timeout", e))?;
        let version = store.check_identity()?;
        Ok((store, version))
    }

    /// Sessions the last [`Store::open`] found open and marked interrupted.
    pub fn recovered_sessions(&self) -> &[i64] {
        &self.recovered
    }

    fn configure_writer(&self) -> Result<(), StoreError> {
        let c = &self.conn;
        c.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| self.err("set the busy timeout", e))?;
        let mode: String = c
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| self.err("switch to WAL mode", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            // E.g. a file system without shared memory: still safe (rollback journal), slower.
            warn!(db = %self.path.display(), %mode, "WAL mode unavailable, using this journal mode");
        }
        c.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.err("set synchronous=FULL", e))?;
        c.pragma_update(None, "foreign_keys", true)
            .map_err(|e| self.err("enable foreign keys", e))?;
        c.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
            .map_err(|e| self.err("set the WAL size limit", e))?;
        Ok(())
    }

    /// Checks the application id; returns the schema version.
    fn check_identity(&self) -> Result<i64, StoreError> {
        let app: i32 = self
            .conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(|e| self.err("read the application id", e))?;
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.err("read the schema version", e))?;
        if app != 0 && app != schema::APPLICATION_ID {
            return Err(StoreError::NotOurs {
                path: self.path.clone(),
                detail: format!("application id {app:#x}"),
            });
        }
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version == 0 {
            let tables: i64 = self
                .conn
                .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
                .map_err(|e| self.err("read the schema", e))?;
            if tables > 0 {
                return Err(StoreError::NotOurs {
                    path: self.path.clone(),
                    detail: format!("{tables} foreign tables or indexes and no leukoscope schema"),
                });
            }
        }
        Ok(version)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let mut version = self.check_identity()?;
        while version < SCHEMA_VERSION {
            let path = self.path.clone();
            let e = |e| sql_error(&path, "migrate the schema", e);
            let tx = self.conn.transaction().map_err(e)?;
            tx.execute_batch(schema::MIGRATIONS[version as usize])
                .map_err(e)?;
            tx.pragma_update(None, "user_version", version + 1)
                .map_err(e)?;
            tx.pragma_update(None, "application_id", schema::APPLICATION_ID)
                .map_err(e)?;
            tx.commit().map_err(e)?;
            info!(db = %self.path.display(), "database schema version {}", version + 1);
            version += 1;
        }
        Ok(())
    }

    /// Marks sessions left open as interrupted, with counts recomputed from their frames (each
    /// in one transaction with its outbox row). A collector's sessions of other kits
    /// (`device` set) are theirs to close and are left alone.
    fn recover(&mut self) -> Result<(), StoreError> {
        let open: Vec<i64> = {
            let mut st = self
                .conn
                .prepare(
                    "SELECT id FROM sessions WHERE state = 'open' AND device IS NULL ORDER BY id",
                )
                .map_err(|e| self.err("find open sessions", e))?;
            st.query_map([], |r| r.get(0))
                .and_then(|rows| rows.collect())
                .map_err(|e| self.err("find open sessions", e))?
        };
        for &id in &open {
            let row = self.session(id)?;
            let counts = self.recount(&row)?;
            let last: Option<String> = self
                .conn
                .query_row(
                    "SELECT max(time) FROM frames WHERE session_id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .map_err(|e| self.err("recover an interrupted session", e))?;
            self.in_transaction("recover an interrupted session", |store| {
                store
                    .conn
                    .execute(
                        "UPDATE sessions SET state = 'interrupted', stopped = ?2, counts = ?3,
                        good = ?4, retakes = ?5, uncertain = ?6, blast_fraction = ?7,
                        fields = ?8, blast_fields = ?9, uncertain_fields = ?10,
                        unfamiliar_fields = ?11
                     WHERE id = ?1 AND state = 'open'",
                        params![
                            id,
                            last.unwrap_or_else(|| format_time(&row.started)),
                            counts_json(&counts.counts),
                            counts.good,
                            counts.retakes,
                            counts.uncertain,
                            counts.blast_fraction,
                            counts.fields,
                            counts.blast_fields,
                            counts.uncertain_fields,
                            counts.unfamiliar_fields,
                        ],
                    )
                    .map_err(|e| store.err("recover an interrupted session", e))?;
                store.outbox_add(super::OutboxKind::Session, id, "interrupted", false)
            })?;
            warn!(
                session = id,
                frames = row.frames,
                "session was left open by a crash or power loss: marked interrupted (no verdict)"
            );
        }
        self.recovered = open;
        Ok(())
    }
}

/// Takes the exclusive writer lock on `<db>.lock`.
fn take_writer_lock(db: &Path) -> Result<File, StoreError> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| StoreError::Io {
            path: lock_path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Busy {
            path: db.to_path_buf(),
            detail: format!(
                "another writer (edge run) holds {}; use the read-only commands",
                lock_path.display()
            ),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(StoreError::Io {
            path: lock_path,
            source,
        }),
    }
}
