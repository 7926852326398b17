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
//!
//! # Outbox (fleet forwarding)
//! A writer opened with [`Store::open_with_outbox`] (`edge run` with `[fleet] broker` set) also
//! writes one `outbox` row per session change (opened, closed, marked interrupted) and per frame
//! result, **in the same transaction** as the change itself, so a result is either stored and
//! queued for the broker or neither. The publisher ([`crate::fleet`]) sends them and marks them
//! sent on the broker's acknowledgement. The outbox holds at most `max_rows` rows: the oldest
//! *sent* rows are pruned first; unsent rows are never dropped, and when the cap is all unsent a
//! frame or a new session is refused with [`StoreError::OutboxFull`] (a fault like a full
//! disk). Closing a session or marking one interrupted is always queued, even over the cap, so
//! the last word on a session is never lost.
//!
//! # Layout
//! [`Store`] is defined here; its methods are spread by concern: `open.rs` (the writer's lock,
//! pragmas, migrations and recovery; readers), `write.rs` (begin, record, close), `read.rs`
//! (queries, recounting a session), `images.rs` (kept-image references),
//! `outbox.rs` (the fleet outbox), `central.rs` (a collector's writes). `types.rs` holds the
//! records, rows and enums with their stored words and times, `rows.rs` the SQLite rows and
//! JSON columns, `error.rs` [`StoreError`], [`schema`] the tables and migrations.

mod central;
mod error;
mod images;
mod open;
mod outbox;
mod read;
mod rows;
pub mod schema;
mod types;
mod write;

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

pub use central::{FleetDevice, Received, ReceivedKind};
pub use error::StoreError;
pub use outbox::{DEFAULT_OUTBOX_MAX_ROWS, OutboxBacklog, OutboxEntry, OutboxKind};
pub use schema::SCHEMA_VERSION;
pub(crate) use types::FrameFacts;
pub use types::{
    FrameRecord, FrameRow, NewSession, Quality, SessionCounts, SessionRow, SessionState,
    SessionSummary, StopReason, StoredDecision, format_time,
};

/// The audit database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Held for the writer's lifetime; released by the OS on exit or crash.
    _lock: Option<File>,
    recovered: Vec<i64>,
    /// Label count of sessions frames were recorded into (to check probabilities).
    label_counts: HashMap<i64, usize>,
    /// The fleet outbox, when this writer queues its changes for the broker.
    outbox: Option<outbox::Outbox>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests;
