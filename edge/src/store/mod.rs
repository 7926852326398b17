//! The device's audit database: every slide session and every frame result, in SQLite.
//!
//! # Durability
//! The database runs in WAL mode with `synchronous=FULL`, so each commit is on stable storage
//! when it returns. [`Store::record_frame`] is one committed transaction: a result is on disk
//! before the run loop shows or sends it, and after a power cut or `kill -9` at any moment the
//! database opens cleanly with every result whose `record_frame` returned. One commit costs one
//! `fsync` of the WAL file (measure it with `cargo test -p edge --test store -- --ignored
//! --nocapture commit_latency`).
//!
//! # Writer and readers
//! [`Store::open`] is the writer (`edge run`): it creates or migrates the database and takes an
//! exclusive lock on a `<db>.lock` file beside it for as long as the [`Store`] lives, so two
//! writers can never share one database. [`Store::open_read_only`] is for `edge sessions`,
//! `edge export` and `edge report`: it works while `edge run` is writing (WAL readers do not
//! block the writer) and never changes anything.
//!
//! # Interrupted sessions
//! A session still `open` when the writer opens the database was cut short by a crash or power
//! loss. It is marked `interrupted` (never resumed: the next frames start a fresh session), its
//! `stopped` time is that of its last frame (or its start), and its counts are recomputed from
//! its frames. It gets **no verdict**: a slide whose scan did not finish must be scanned again.
//! [`Store::recovered_sessions`] lists the sessions marked so by the last `open`.
//!
//! # Values
//! Times are RFC 3339 UTC with milliseconds (`2025-01-31T09:41:07.250Z`); finer precision is
//! dropped. NaN quality figures and probabilities are stored as SQL `NULL` (JSON `null`) and
//! read back as NaN; a NaN confidence reads back as `None`.
//! Probabilities are a JSON array in the session's label order. The schema is in
//! [`schema`]; its version is SQLite's `user_version` ([`SCHEMA_VERSION`]).
//!
//! # Errors
//! A full disk is [`StoreError::DiskFull`] (SQLite's `SQLITE_FULL`): the run loop must stop
//! classifying and say so. The failed transaction is rolled back; everything committed before
//! stays intact and readable.

pub mod schema;

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{info, warn};

pub use schema::SCHEMA_VERSION;

/// How long a statement waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The WAL file is truncated back to this size after a checkpoint.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

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
    /// True for [`StoreError::DiskFull`].
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::DiskFull { .. })
    }
}

/// A session's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Frames are being added.
    Open,
    /// Closed with a summary and a verdict.
    Closed,
    /// Cut short by a crash or power loss (found open when the database was opened).
    Interrupted,
}

/// Why a session was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A `STOP` command (serial line or CLI).
    Command,
    /// The button.
    Button,
    /// No frame for the configured idle gap.
    Idle,
    /// SIGINT/SIGTERM.
    Shutdown,
    /// The frame source ended (end of stream, last file).
    SourceEnd,
    /// A fault stopped the run (e.g. disk full, camera gone for good).
    Fault,
}

/// The decision recorded for a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameDecision {
    /// Classified with enough confidence: `label` is the result.
    Label,
    /// Classified below the confidence threshold: `label` is only the top guess.
    Uncertain,
    /// Rejected by the quality gate, not classified: see `retake_reason`.
    Retake,
}

macro_rules! text_enum {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// The word stored in the database.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($ty::$variant),)+
                    _ => Err(format!("unknown {} {s:?}", stringify!($ty))),
                }
            }
        }
    };
}

text_enum!(SessionState { Open => "open", Closed => "closed", Interrupted => "interrupted" });
text_enum!(StopReason {
    Command => "command",
    Button => "button",
    Idle => "idle",
    Shutdown => "shutdown",
    SourceEnd => "source_end",
    Fault => "fault",
});
text_enum!(FrameDecision { Label => "label", Uncertain => "uncertain", Retake => "retake" });

/// A new slide session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewSession {
    /// The slide's id, when the technician gave one (`START slide-id`).
    pub slide_id: Option<String>,
    /// When it started.
    #[serde(with = "serde_time")]
    pub started: DateTime<Utc>,
    /// SHA-256 of the model file (hex).
    pub model_sha256: String,
    /// Model family/variant, free text.
    pub model_variant: String,
    /// The model's labels, in output order.
    pub labels: Vec<String>,
    /// The labels that are normal cells; every other label is a blast subtype. Used to recompute
    /// the blast fraction of an interrupted session.
    pub normal_labels: Vec<String>,
    /// The program's version.
    pub software_version: String,
    /// The decision rule parameters in force (confidence threshold, slide rule…).
    pub rule: serde_json::Value,
}

/// A frame's quality figures as stored (see the quality gate for their meaning).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Variance of the Laplacian.
    pub focus: f32,
    /// Mean brightness.
    pub mean: f32,
    /// 99.9th percentile of brightness.
    pub p999: f32,
    /// Share of clipped pixels.
    pub clipped_fraction: f32,
    /// Share of stained-nucleus pixels.
    pub stained_fraction: f32,
}

impl From<crate::quality::QualityFigures> for Quality {
    fn from(q: crate::quality::QualityFigures) -> Self {
        Quality {
            focus: q.focus,
            mean: q.mean,
            p999: q.p999,
            clipped_fraction: q.clipped_fraction,
            stained_fraction: q.stained_fraction,
        }
    }
}

/// One result to record: a frame (or one tile of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameRecord {
    /// The session it belongs to (must be open).
    pub session: i64,
    /// The frame's sequence number within the session.
    pub seq: u64,
    /// When it was captured or received.
    #[serde(with = "serde_time")]
    pub time: DateTime<Utc>,
    /// Where it came from (`/dev/video0`, `stdin`, a file path).
    pub origin: String,
    /// SHA-256 of the frame's bytes (hex).
    pub sha256: String,
    /// Decoded width in pixels.
    pub width: u32,
    /// Decoded height in pixels.
    pub height: u32,
    /// The quality gate's figures, when it ran.
    pub quality: Option<Quality>,
    /// The decision.
    pub decision: FrameDecision,
    /// Why a retake (`focus`, `exposure`, `empty`).
    pub retake_reason: Option<String>,
    /// The top label (the result for [`FrameDecision::Label`], a guess for `Uncertain`).
    pub label: Option<String>,
    /// Its probability.
    pub confidence: Option<f32>,
    /// All probabilities in the session's label order; empty for a retake.
    pub probabilities: Vec<f32>,
    /// SHA-256 of the model that classified it.
    pub model_sha256: String,
    /// The program's version.
    pub software_version: String,
    /// The kept image, relative to the flagged-images folder (see [`crate::flagged`]).
    pub kept_image: Option<PathBuf>,
    /// The tile index, when frames are tiled.
    pub tile: Option<u32>,
}

/// A recorded frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameRow {
    /// Row id (increases with recording order across all sessions).
    pub id: i64,
    /// What was recorded. `kept_image` is `None` once the image was evicted.
    #[serde(flatten)]
    pub frame: FrameRecord,
    /// When the kept image was removed to respect the size cap.
    #[serde(with = "serde_time_opt")]
    pub image_evicted: Option<DateTime<Utc>>,
}

/// A session's summary, given when it closes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// Confident frames per class.
    pub counts: Vec<(String, u32)>,
    /// Frames that passed the quality gate.
    pub good: u32,
    /// Frames rejected by the quality gate.
    pub retakes: u32,
    /// Good frames below the confidence threshold.
    pub uncertain: u32,
    /// Blast frames / confident frames.
    pub blast_fraction: f64,
    /// The verdict.
    pub verdict: String,
    /// The dominant blast subtype, when blasts were seen.
    pub dominant_subtype: Option<String>,
}

/// A session's counts: as given on close, or recomputed from the frames of an interrupted one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionCounts {
    /// Confident frames per class, in label order.
    pub counts: Vec<(String, u32)>,
    /// Frames that passed the quality gate.
    pub good: u32,
    /// Frames rejected by the quality gate.
    pub retakes: u32,
    /// Good frames below the confidence threshold.
    pub uncertain: u32,
    /// Blast frames / confident frames (NaN if it was not a number).
    pub blast_fraction: f64,
}

/// A stored session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRow {
    /// Its id.
    pub id: i64,
    /// The slide's id, if given.
    pub slide_id: Option<String>,
    /// When it started.
    #[serde(with = "serde_time")]
    pub started: DateTime<Utc>,
    /// When it stopped (closed, or last frame of an interrupted session).
    #[serde(with = "serde_time_opt")]
    pub stopped: Option<DateTime<Utc>>,
    /// Its state.
    pub state: SessionState,
    /// Why it was closed (none while open or when interrupted).
    pub stop_reason: Option<StopReason>,
    /// SHA-256 of the model.
    pub model_sha256: String,
    /// Model variant.
    pub model_variant: String,
    /// The model's labels.
    pub labels: Vec<String>,
    /// The labels that are normal cells.
    pub normal_labels: Vec<String>,
    /// The program's version.
    pub software_version: String,
    /// The decision rule parameters used.
    pub rule: serde_json::Value,
    /// Results recorded (one per frame, or per tile when tiling).
    pub frames: u64,
    /// Counts; none while open.
    pub counts: Option<SessionCounts>,
    /// The verdict; closed sessions only.
    pub verdict: Option<String>,
    /// The dominant blast subtype, when the verdict names one.
    pub dominant_subtype: Option<String>,
}

/// The audit database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Held for the writer's lifetime; released by the OS on exit or crash.
    _lock: Option<File>,
    recovered: Vec<i64>,
    /// Label count of sessions frames were recorded into (to check probabilities).
    label_counts: HashMap<i64, usize>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Formats a time as stored.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Times in JSON as stored: RFC 3339 UTC with milliseconds.
mod serde_time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_time(&text).map_err(serde::de::Error::custom)
    }
}

/// Optional times in JSON as stored (`null` when absent).
mod serde_time_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::format_time(t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| super::parse_time(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("time {s:?}: {e}"))
}

impl Store {
    /// Opens the database as its writer, creating it (and its folder) if needed, migrating it to
    /// [`SCHEMA_VERSION`] and marking sessions left open by a crash as interrupted.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
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
        };
        store.configure_writer()?;
        store.migrate()?;
        store.recover()?;
        Ok(store)
    }

    /// Opens an existing database for reading only (`edge sessions`, `export`, `report`),
    /// while `edge run` may be writing it. Changes nothing, recovers nothing.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        if !path.is_file() {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no database here"),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sql_error(path, "open the database", e))?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
            _lock: None,
            recovered: Vec::new(),
            label_counts: HashMap::new(),
        };
        store
            .conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| store.err("set the busy timeout", e))?;
        let version = store.check_identity()?;
        if version == 0 {
            return Err(StoreError::NotOurs {
                path: path.to_path_buf(),
                detail: "empty database (never opened by edge run)".into(),
            });
        }
        if version != SCHEMA_VERSION {
            // An older schema is migrated only by the writer; reading it with today's queries
            // could fail in confusing ways.
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sessions the last [`Store::open`] found open and marked interrupted.
    pub fn recovered_sessions(&self) -> &[i64] {
        &self.recovered
    }

    fn err(&self, action: &'static str, e: rusqlite::Error) -> StoreError {
        sql_error(&self.path, action, e)
    }

    fn invalid(&self, what: impl Into<String>, detail: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            path: self.path.clone(),
            what: what.into(),
            detail: detail.into(),
        }
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

    /// Marks sessions left open as interrupted, with counts recomputed from their frames.
    fn recover(&mut self) -> Result<(), StoreError> {
        let open: Vec<i64> = {
            let mut st = self
                .conn
                .prepare("SELECT id FROM sessions WHERE state = 'open' ORDER BY id")
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
            self.conn
                .execute(
                    "UPDATE sessions SET state = 'interrupted', stopped = ?2, counts = ?3,
                        good = ?4, retakes = ?5, uncertain = ?6, blast_fraction = ?7
                     WHERE id = ?1 AND state = 'open'",
                    params![
                        id,
                        last.unwrap_or_else(|| format_time(&row.started)),
                        counts_json(&counts.counts),
                        counts.good,
                        counts.retakes,
                        counts.uncertain,
                        counts.blast_fraction,
                    ],
                )
                .map_err(|e| self.err("recover an interrupted session", e))?;
            warn!(
                session = id,
                frames = row.frames,
                "session was left open by a crash or power loss: marked interrupted (no verdict)"
            );
        }
        self.recovered = open;
        Ok(())
    }

    /// Counts of a session recomputed from its frames.
    fn recount(&self, s: &SessionRow) -> Result<SessionCounts, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT decision, label, count(*) FROM frames WHERE session_id = ?1
                 GROUP BY decision, label",
            )
            .map_err(|e| self.err("count frames", e))?;
        let groups: Vec<(String, Option<String>, u32)> = st
            .query_map([s.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err("count frames", e))?;
        let mut counts: Vec<(String, u32)> = s.labels.iter().map(|l| (l.clone(), 0)).collect();
        let (mut labelled, mut retakes, mut uncertain) = (0u32, 0u32, 0u32);
        for (decision, label, n) in groups {
            match decision.as_str() {
                "retake" => retakes += n,
                "uncertain" => uncertain += n,
                _ => {
                    labelled += n;
                    let label = label.unwrap_or_default();
                    match counts.iter_mut().find(|(l, _)| *l == label) {
                        Some((_, c)) => *c += n,
                        None => counts.push((label, n)),
                    }
                }
            }
        }
        let blasts: u32 = counts
            .iter()
            .filter(|(l, _)| !s.normal_labels.iter().any(|n| n.eq_ignore_ascii_case(l)))
            .map(|(_, n)| n)
            .sum();
        Ok(SessionCounts {
            counts,
            good: labelled + uncertain,
            retakes,
            uncertain,
            blast_fraction: if labelled == 0 {
                0.0
            } else {
                f64::from(blasts) / f64::from(labelled)
            },
        })
    }

    /// Starts a session; returns its id.
    pub fn begin_session(&mut self, s: &NewSession) -> Result<i64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO sessions (slide_id, started, state, model_sha256, model_variant,
                    labels, normal_labels, software_version, rule)
                 VALUES (?1, ?2, 'open', ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    s.slide_id,
                    format_time(&s.started),
                    s.model_sha256,
                    s.model_variant,
                    json_strings(&s.labels),
                    json_strings(&s.normal_labels),
                    s.software_version,
                    s.rule.to_string(),
                ],
            )
            .map_err(|e| self.err("begin a session", e))?;
        let id = self.conn.last_insert_rowid();
        self.label_counts.insert(id, s.labels.len());
        Ok(id)
    }

    /// Records one result. It is committed (on stable storage) when this returns.
    pub fn record_frame(&mut self, f: &FrameRecord) -> Result<i64, StoreError> {
        let labels = match self.label_counts.get(&f.session) {
            Some(&n) => n,
            None => {
                let s = self.session(f.session)?;
                self.label_counts.insert(f.session, s.labels.len());
                s.labels.len()
            }
        };
        if !f.probabilities.is_empty() && f.probabilities.len() != labels {
            return Err(self.invalid(
                format!("frame {} of session {}", f.seq, f.session),
                format!(
                    "{} probabilities for {labels} labels",
                    f.probabilities.len()
                ),
            ));
        }
        let seq = i64::try_from(f.seq)
            .map_err(|_| self.invalid("frame sequence number", f.seq.to_string()))?;
        let q = f.quality;
        let kept = match &f.kept_image {
            Some(p) => Some(
                p.to_str()
                    .ok_or_else(|| self.invalid("kept image path", p.display().to_string()))?
                    .replace('\\', "/"),
            ),
            None => None,
        };
        let probabilities = serde_json::to_string(&f.probabilities)
            .map_err(|e| self.invalid("probabilities", e.to_string()))?;
        let mut st = self
            .conn
            .prepare_cached(
                "INSERT INTO frames (session_id, seq, tile, time, origin, sha256, width, height,
                    focus, mean, p999, clipped_fraction, stained_fraction, decision,
                    retake_reason, label, confidence, probabilities, model_sha256,
                    software_version, kept_image)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                    ?17, ?18, ?19, ?20, ?21
                 WHERE EXISTS (SELECT 1 FROM sessions WHERE id = ?1 AND state = 'open')",
            )
            .map_err(|e| sql_error(&self.path, "record a frame", e))?;
        let n = st
            .execute(params![
                f.session,
                seq,
                f.tile,
                format_time(&f.time),
                f.origin,
                f.sha256,
                f.width,
                f.height,
                q.map(|q| q.focus),
                q.map(|q| q.mean),
                q.map(|q| q.p999),
                q.map(|q| q.clipped_fraction),
                q.map(|q| q.stained_fraction),
                f.decision.as_str(),
                f.retake_reason,
                f.label,
                f.confidence,
                probabilities,
                f.model_sha256,
                f.software_version,
                kept,
            ])
            .map_err(|e| sql_error(&self.path, "record a frame", e))?;
        if n == 0 {
            // Not open (or unknown): say which.
            let s = self.session(f.session)?;
            return Err(StoreError::SessionNotOpen {
                id: s.id,
                state: s.state,
            });
        }
        Ok(self.conn.last_insert_rowid())
    }

    /// Closes an open session with its summary.
    ///
    /// The summary is stored as given (it is what was shown). If it disagrees with the frames
    /// recorded, a warning is logged.
    pub fn close_session(
        &mut self,
        id: i64,
        summary: &SessionSummary,
        reason: StopReason,
    ) -> Result<(), StoreError> {
        self.close_session_at(id, summary, reason, Utc::now())
    }

    /// [`Store::close_session`] with an explicit stop time.
    pub fn close_session_at(
        &mut self,
        id: i64,
        summary: &SessionSummary,
        reason: StopReason,
        stopped: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE sessions SET state = 'closed', stopped = ?2, stop_reason = ?3,
                    counts = ?4, good = ?5, retakes = ?6, uncertain = ?7, blast_fraction = ?8,
                    verdict = ?9, dominant_subtype = ?10
                 WHERE id = ?1 AND state = 'open'",
                params![
                    id,
                    format_time(&stopped),
                    reason.as_str(),
                    counts_json(&summary.counts),
                    summary.good,
                    summary.retakes,
                    summary.uncertain,
                    summary.blast_fraction,
                    summary.verdict,
                    summary.dominant_subtype,
                ],
            )
            .map_err(|e| self.err("close a session", e))?;
        let s = self.session(id)?;
        if n == 0 {
            return Err(StoreError::SessionNotOpen { id, state: s.state });
        }
        self.label_counts.remove(&id);
        let recount = self.recount(&s)?;
        if (recount.good, recount.retakes, recount.uncertain)
            != (summary.good, summary.retakes, summary.uncertain)
        {
            warn!(
                session = id,
                "closing summary (good {}, retakes {}, uncertain {}) differs from the frames recorded (good {}, retakes {}, uncertain {})",
                summary.good,
                summary.retakes,
                summary.uncertain,
                recount.good,
                recount.retakes,
                recount.uncertain
            );
        }
        Ok(())
    }

    /// One session.
    pub fn session(&self, id: i64) -> Result<SessionRow, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(&format!("{SESSION_SELECT} WHERE s.id = ?1"))
            .map_err(|e| self.err("read a session", e))?;
        let raw = st
            .query_row([id], RawSession::from_row)
            .optional()
            .map_err(|e| self.err("read a session", e))?;
        match raw {
            Some(raw) => raw.parse(&self.path),
            None => Err(StoreError::UnknownSession {
                path: self.path.clone(),
                id,
            }),
        }
    }

    /// All sessions, oldest first.
    pub fn sessions(&self) -> Result<Vec<SessionRow>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(&format!("{SESSION_SELECT} ORDER BY s.id"))
            .map_err(|e| self.err("list sessions", e))?;
        let raws: Vec<RawSession> = st
            .query_map([], RawSession::from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err("list sessions", e))?;
        raws.into_iter().map(|r| r.parse(&self.path)).collect()
    }

    /// A session's frames in recording order. Unknown session → [`StoreError::UnknownSession`].
    pub fn frames(&self, session: i64) -> Result<Vec<FrameRow>, StoreError> {
        self.session(session)?;
        let mut st = self
            .conn
            .prepare_cached(&format!("{FRAME_SELECT} WHERE session_id = ?1 ORDER BY id"))
            .map_err(|e| self.err("read frames", e))?;
        let raws: Vec<RawFrame> = st
            .query_map([session], RawFrame::from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err("read frames", e))?;
        raws.into_iter().map(|r| r.parse(&self.path)).collect()
    }

    /// The `n` most recently recorded frames (any session), oldest first (serial `LAST n`).
    pub fn last_frames(&self, n: usize) -> Result<Vec<FrameRow>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT * FROM ({FRAME_SELECT} ORDER BY id DESC LIMIT ?1) ORDER BY id"
            ))
            .map_err(|e| self.err("read frames", e))?;
        let raws: Vec<RawFrame> = st
            .query_map([i64::try_from(n).unwrap_or(i64::MAX)], RawFrame::from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err("read frames", e))?;
        raws.into_iter().map(|r| r.parse(&self.path)).collect()
    }

    /// Kept images of sessions that are no longer open, oldest first: `(frame id, path)`.
    pub(crate) fn evictable_images(&self, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT f.id, f.kept_image FROM frames f JOIN sessions s ON s.id = f.session_id
                 WHERE f.kept_image IS NOT NULL AND s.state != 'open'
                 ORDER BY f.id LIMIT ?1",
            )
            .map_err(|e| self.err("find kept images", e))?;
        st.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err("find kept images", e))
    }

    /// Every kept image path still referenced.
    pub(crate) fn referenced_images(&self) -> Result<Vec<String>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT kept_image FROM frames WHERE kept_image IS NOT NULL")
            .map_err(|e| self.err("find kept images", e))?;
        st.query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err("find kept images", e))
    }

    /// Drops the image references of these frames (one transaction), noting when.
    pub(crate) fn forget_images(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let e = |e| sql_error(&path, "forget evicted images", e);
        let tx = self.conn.transaction().map_err(e)?;
        {
            let mut st = tx
                .prepare_cached(
                    "UPDATE frames SET kept_image = NULL, image_evicted = ?2 WHERE id = ?1",
                )
                .map_err(e)?;
            let now = format_time(&Utc::now());
            for id in ids {
                st.execute(params![id, now]).map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// Runs a statement on the writer connection (tests: e.g. `PRAGMA max_page_count`).
    #[doc(hidden)]
    pub fn pragma_for_tests(&self, name: &str, value: i64) -> Result<i64, StoreError> {
        self.conn
            .pragma_update_and_check(None, name, value, |r| r.get(0))
            .map_err(|e| self.err("set a pragma", e))
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

fn sql_error(path: &Path, action: &'static str, e: rusqlite::Error) -> StoreError {
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

fn counts_json(counts: &[(String, u32)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = counts
        .iter()
        .map(|(l, n)| (l.clone(), serde_json::Value::from(*n)))
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn json_strings(v: &[String]) -> String {
    serde_json::to_string(v).expect("strings always encode as JSON")
}

const SESSION_SELECT: &str = "SELECT s.id, s.slide_id, s.started, s.stopped, s.state,
    s.stop_reason, s.model_sha256, s.model_variant, s.labels, s.normal_labels,
    s.software_version, s.rule, s.counts, s.good, s.retakes, s.uncertain, s.blast_fraction,
    s.verdict, s.dominant_subtype,
    (SELECT count(*) FROM frames f WHERE f.session_id = s.id)
    FROM sessions s";

/// A session row as SQLite gives it.
struct RawSession {
    id: i64,
    slide_id: Option<String>,
    started: String,
    stopped: Option<String>,
    state: String,
    stop_reason: Option<String>,
    model_sha256: String,
    model_variant: String,
    labels: String,
    normal_labels: String,
    software_version: String,
    rule: String,
    counts: Option<String>,
    good: Option<u32>,
    retakes: Option<u32>,
    uncertain: Option<u32>,
    blast_fraction: Option<f64>,
    verdict: Option<String>,
    dominant_subtype: Option<String>,
    frames: i64,
}

impl RawSession {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawSession {
            id: r.get(0)?,
            slide_id: r.get(1)?,
            started: r.get(2)?,
            stopped: r.get(3)?,
            state: r.get(4)?,
            stop_reason: r.get(5)?,
            model_sha256: r.get(6)?,
            model_variant: r.get(7)?,
            labels: r.get(8)?,
            normal_labels: r.get(9)?,
            software_version: r.get(10)?,
            rule: r.get(11)?,
            counts: r.get(12)?,
            good: r.get(13)?,
            retakes: r.get(14)?,
            uncertain: r.get(15)?,
            blast_fraction: r.get(16)?,
            verdict: r.get(17)?,
            dominant_subtype: r.get(18)?,
            frames: r.get(19)?,
        })
    }

    fn parse(self, path: &Path) -> Result<SessionRow, StoreError> {
        let id = self.id;
        let bad = |detail: String| StoreError::Invalid {
            path: path.to_path_buf(),
            what: format!("session {id}"),
            detail,
        };
        let labels: Vec<String> =
            serde_json::from_str(&self.labels).map_err(|e| bad(format!("labels: {e}")))?;
        let counts = match (self.counts, self.good, self.retakes, self.uncertain) {
            (Some(c), Some(good), Some(retakes), Some(uncertain)) => {
                let map: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&c).map_err(|e| bad(format!("counts: {e}")))?;
                // Label order first, then anything else the summary named.
                let mut counts: Vec<(String, u32)> = labels
                    .iter()
                    .filter_map(|l| map.get(l).map(|v| (l.clone(), json_u32(v))))
                    .collect();
                for (l, v) in &map {
                    if !labels.contains(l) {
                        counts.push((l.clone(), json_u32(v)));
                    }
                }
                Some(SessionCounts {
                    counts,
                    good,
                    retakes,
                    uncertain,
                    blast_fraction: self.blast_fraction.unwrap_or(f64::NAN),
                })
            }
            _ => None,
        };
        Ok(SessionRow {
            id,
            slide_id: self.slide_id,
            started: parse_time(&self.started).map_err(bad)?,
            stopped: self
                .stopped
                .as_deref()
                .map(parse_time)
                .transpose()
                .map_err(bad)?,
            state: self.state.parse().map_err(bad)?,
            stop_reason: self
                .stop_reason
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(bad)?,
            model_sha256: self.model_sha256,
            model_variant: self.model_variant,
            labels,
            normal_labels: serde_json::from_str(&self.normal_labels)
                .map_err(|e| bad(format!("normal labels: {e}")))?,
            software_version: self.software_version,
            rule: serde_json::from_str(&self.rule).map_err(|e| bad(format!("rule: {e}")))?,
            frames: u64::try_from(self.frames).unwrap_or(0),
            counts,
            verdict: self.verdict,
            dominant_subtype: self.dominant_subtype,
        })
    }
}

fn json_u32(v: &serde_json::Value) -> u32 {
    v.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
}

const FRAME_SELECT: &str = "SELECT id, session_id, seq, tile, time, origin, sha256, width, height,
    focus, mean, p999, clipped_fraction, stained_fraction, decision, retake_reason, label,
    confidence, probabilities, model_sha256, software_version, kept_image, image_evicted
    FROM frames";

/// A frame row as SQLite gives it.
struct RawFrame {
    id: i64,
    session: i64,
    seq: i64,
    tile: Option<u32>,
    time: String,
    origin: String,
    sha256: String,
    width: u32,
    height: u32,
    quality: [Option<f64>; 5],
    decision: String,
    retake_reason: Option<String>,
    label: Option<String>,
    confidence: Option<f64>,
    probabilities: String,
    model_sha256: String,
    software_version: String,
    kept_image: Option<String>,
    image_evicted: Option<String>,
}

impl RawFrame {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawFrame {
            id: r.get(0)?,
            session: r.get(1)?,
            seq: r.get(2)?,
            tile: r.get(3)?,
            time: r.get(4)?,
            origin: r.get(5)?,
            sha256: r.get(6)?,
            width: r.get(7)?,
            height: r.get(8)?,
            quality: [r.get(9)?, r.get(10)?, r.get(11)?, r.get(12)?, r.get(13)?],
            decision: r.get(14)?,
            retake_reason: r.get(15)?,
            label: r.get(16)?,
            confidence: r.get(17)?,
            probabilities: r.get(18)?,
            model_sha256: r.get(19)?,
            software_version: r.get(20)?,
            kept_image: r.get(21)?,
            image_evicted: r.get(22)?,
        })
    }

    fn parse(self, path: &Path) -> Result<FrameRow, StoreError> {
        let id = self.id;
        let bad = |detail: String| StoreError::Invalid {
            path: path.to_path_buf(),
            what: format!("frame row {id}"),
            detail,
        };
        let f32_or_nan = |v: Option<f64>| v.map_or(f32::NAN, |x| x as f32);
        let quality = if self.quality.iter().all(Option::is_none) {
            None
        } else {
            let q = self.quality.map(f32_or_nan);
            Some(Quality {
                focus: q[0],
                mean: q[1],
                p999: q[2],
                clipped_fraction: q[3],
                stained_fraction: q[4],
            })
        };
        let probabilities: Vec<Option<f32>> = serde_json::from_str(&self.probabilities)
            .map_err(|e| bad(format!("probabilities: {e}")))?;
        Ok(FrameRow {
            id,
            frame: FrameRecord {
                session: self.session,
                seq: u64::try_from(self.seq).map_err(|e| bad(format!("seq: {e}")))?,
                time: parse_time(&self.time).map_err(bad)?,
                origin: self.origin,
                sha256: self.sha256,
                width: self.width,
                height: self.height,
                quality,
                decision: self.decision.parse().map_err(bad)?,
                retake_reason: self.retake_reason,
                label: self.label,
                confidence: self.confidence.map(|c| c as f32),
                probabilities: probabilities
                    .into_iter()
                    .map(|p| p.unwrap_or(f32::NAN))
                    .collect(),
                model_sha256: self.model_sha256,
                software_version: self.software_version,
                kept_image: self.kept_image.map(PathBuf::from),
                tile: self.tile,
            },
            image_evicted: self
                .image_evicted
                .as_deref()
                .map(parse_time)
                .transpose()
                .map_err(bad)?,
        })
    }
}

#[cfg(test)]
mod tests;
