//! The fleet outbox: rows written in the same transaction as each session change and frame
//! result (see the module documentation of [`crate::store`]), read and marked sent by the
//! publisher ([`crate::fleet::publisher`]), counted for `edge sync` and `edge check`.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{OpenFlags, params};

use super::error::sql_error;
use super::types::parse_time;
use super::{SCHEMA_VERSION, Store, StoreError, format_time};

/// The default cap of the outbox, in rows (`[fleet] outbox_max_rows`): about two weeks of
/// continuous screening at one result per 10 s, a few tens of MiB.
pub const DEFAULT_OUTBOX_MAX_ROWS: u64 = 100_000;

/// What an outbox row points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxKind {
    /// A row of `sessions`.
    Session,
    /// A row of `frames`.
    Frame,
}

impl OutboxKind {
    /// The word stored in the `kind` column (and used in topics and message ids).
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Session => "session",
            OutboxKind::Frame => "frame",
        }
    }
}

/// One queued change.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// The outbox row id (increases with commit order).
    pub id: i64,
    /// Session or frame.
    pub kind: OutboxKind,
    /// The session's or frame's row id.
    pub row_id: i64,
    /// `open`, `closed` or `interrupted` for a session, `result` for a frame.
    pub change: String,
    /// When the change was committed.
    pub created: DateTime<Utc>,
}

/// How far the outbox is behind (`edge sync`, `edge check`, the status message).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OutboxBacklog {
    /// Rows not yet acknowledged by the broker.
    pub unsent: u64,
    /// All rows (sent ones are kept until pruned).
    pub rows: u64,
    /// Commit time of the oldest unsent row.
    pub oldest_unsent: Option<String>,
    /// When the broker last acknowledged a row.
    pub last_sent: Option<String>,
}

/// The writer's outbox settings and row count.
pub(super) struct Outbox {
    max_rows: u64,
    /// Rows in the table as of the last commit.
    rows: u64,
    /// Rows added and pruned by the transaction under way.
    tx_added: u64,
    tx_pruned: u64,
    /// Called after a commit that queued rows (wakes the publisher).
    notify: Option<Box<dyn Fn() + Send>>,
}

impl Store {
    /// [`Store::open`], and every session change and frame result from now on is also queued in
    /// the outbox (at most `max_rows` rows; see the module documentation).
    pub fn open_with_outbox(path: &Path, max_rows: u64) -> Result<Store, StoreError> {
        Self::open_inner(path, Some(max_rows.max(1)))
    }

    /// The outbox row count of a database just opened (migrated) for writing.
    pub(super) fn start_outbox(&mut self, max_rows: u64) -> Result<(), StoreError> {
        let rows: i64 = self
            .conn
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
            .map_err(|e| self.err("count the outbox", e))?;
        self.outbox = Some(Outbox {
            max_rows,
            rows: u64::try_from(rows).unwrap_or(0),
            tx_added: 0,
            tx_pruned: 0,
            notify: None,
        });
        Ok(())
    }

    /// Calls `notify` after each commit that queued outbox rows (the publisher's wake-up).
    pub fn set_outbox_notify(&mut self, notify: Box<dyn Fn() + Send>) {
        if let Some(o) = &mut self.outbox {
            o.notify = Some(notify);
        }
    }

    /// Whether this writer queues its changes in the outbox.
    pub fn has_outbox(&self) -> bool {
        self.outbox.is_some()
    }

    /// Queues one change, inside the caller's transaction. `hard`: refuse with
    /// [`StoreError::OutboxFull`] when the cap is reached and no sent row can be pruned (frames
    /// and new sessions); otherwise the row goes in over the cap (session closes, recoveries).
    pub(super) fn outbox_add(
        &mut self,
        kind: OutboxKind,
        row_id: i64,
        change: &str,
        hard: bool,
    ) -> Result<(), StoreError> {
        let Some(o) = &self.outbox else {
            return Ok(());
        };
        let max = o.max_rows;
        let mut current = (o.rows + o.tx_added).saturating_sub(o.tx_pruned);
        if current >= max {
            // Prune the oldest sent rows, down to 90 % of the cap so this is not done per row.
            let keep = max - max / 10;
            let want = (current + 1).saturating_sub(keep.min(max - 1)).max(1);
            let pruned = self
                .conn
                .prepare_cached(
                    "DELETE FROM outbox WHERE id IN
                     (SELECT id FROM outbox WHERE sent IS NOT NULL ORDER BY id LIMIT ?1)",
                )
                .and_then(|mut st| st.execute([i64::try_from(want).unwrap_or(i64::MAX)]))
                .map_err(|e| self.err("prune the outbox", e))? as u64;
            if let Some(o) = &mut self.outbox {
                o.tx_pruned += pruned;
            }
            current -= pruned.min(current);
            if current >= max && hard {
                return Err(StoreError::OutboxFull {
                    path: self.path.clone(),
                    rows: current,
                    cap: max,
                });
            }
        }
        self.conn
            .prepare_cached(
                "INSERT INTO outbox (kind, row_id, change, created) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    kind.as_str(),
                    row_id,
                    change,
                    format_time(&Utc::now())
                ])
            })
            .map_err(|e| self.err("queue a change in the outbox", e))?;
        if let Some(o) = &mut self.outbox {
            o.tx_added += 1;
        }
        Ok(())
    }

    /// Runs `f` in one `BEGIN IMMEDIATE … COMMIT` transaction (rolled back if `f` or the commit
    /// fails); the outbox count follows only what was committed, and the publisher is woken.
    pub(super) fn in_transaction<T>(
        &mut self,
        action: &'static str,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Some(o) = &mut self.outbox {
            o.tx_added = 0;
            o.tx_pruned = 0;
        }
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.err(action, e))?;
        let result = f(self).and_then(|value| {
            self.conn
                .execute_batch("COMMIT")
                .map_err(|e| self.err(action, e))?;
            Ok(value)
        });
        if result.is_err()
            && !self.conn.is_autocommit()
            && let Err(rollback) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::warn!("rollback after a failed {action}: {rollback}");
        }
        if let Some(o) = &mut self.outbox {
            let (added, pruned) = (o.tx_added, o.tx_pruned);
            o.tx_added = 0;
            o.tx_pruned = 0;
            if result.is_ok() {
                o.rows = (o.rows + added).saturating_sub(pruned);
                if added > 0
                    && let Some(notify) = &o.notify
                {
                    notify();
                }
            }
        }
        result
    }

    /// A second connection to a kit's database for the publisher thread of the same `edge run`
    /// (it reads rows and marks outbox rows sent; it never touches sessions or frames). The
    /// writer must have opened (and migrated) the database first. Marks are written with
    /// `synchronous=NORMAL`: one lost by a power cut only means a message sent twice, which
    /// every consumer drops by its message id.
    pub fn open_publisher(path: &Path) -> Result<Store, StoreError> {
        let store = Self::open_unlocked(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        store
            .conn
            .busy_timeout(Duration::from_secs(5))
            .map_err(|e| store.err("set the busy timeout", e))?;
        store
            .conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| store.err("set synchronous=NORMAL", e))?;
        let version: i64 = store
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| store.err("read the schema version", e))?;
        if version != SCHEMA_VERSION {
            return Err(StoreError::version_mismatch(path, version));
        }
        Ok(store)
    }

    /// Up to `limit` unsent outbox rows with an id above `after`, oldest first.
    pub fn outbox_pending(&self, after: i64, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, kind, row_id, change, created FROM outbox
                 WHERE sent IS NULL AND id > ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(|e| self.err("read the outbox", e))?;
        type Raw = (i64, String, i64, String, String);
        let rows: Vec<Raw> = st
            .query_map(
                params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err("read the outbox", e))?;
        rows.into_iter()
            .map(|(id, kind, row_id, change, created)| {
                let kind = match kind.as_str() {
                    "session" => OutboxKind::Session,
                    "frame" => OutboxKind::Frame,
                    other => return Err(self.invalid(format!("outbox row {id}"), other)),
                };
                Ok(OutboxEntry {
                    id,
                    kind,
                    row_id,
                    change,
                    created: parse_time(&created)
                        .map_err(|e| self.invalid(format!("outbox row {id}"), e))?,
                })
            })
            .collect()
    }

    /// Marks outbox rows sent (the broker acknowledged them), in one transaction.
    pub fn mark_sent(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let e = |e| sql_error(&path, "mark outbox rows sent", e);
        let tx = self.conn.transaction().map_err(e)?;
        {
            let mut st = tx
                .prepare_cached("UPDATE outbox SET sent = ?2 WHERE id = ?1 AND sent IS NULL")
                .map_err(e)?;
            let now = format_time(&Utc::now());
            for id in ids {
                st.execute(params![id, now]).map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// The outbox backlog: unsent rows, all rows, the oldest unsent and the last sent time.
    pub fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        let e = |e| self.err("read the outbox", e);
        let (unsent, rows, oldest, last): (i64, i64, Option<String>, Option<String>) = self
            .conn
            .query_row(
                "SELECT (SELECT count(*) FROM outbox WHERE sent IS NULL), (SELECT count(*) FROM outbox),
                    (SELECT min(created) FROM outbox WHERE sent IS NULL),
                    (SELECT max(sent) FROM outbox)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(e)?;
        Ok(OutboxBacklog {
            unsent: u64::try_from(unsent).unwrap_or(0),
            rows: u64::try_from(rows).unwrap_or(0),
            oldest_unsent: oldest,
            last_sent: last,
        })
    }

    /// Every outbox row's kind, row id and commit time (`edge fleet bench`).
    pub fn outbox_created(&self) -> Result<Vec<(String, i64, DateTime<Utc>)>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT kind, row_id, created FROM outbox ORDER BY id")
            .map_err(|e| self.err("read the outbox", e))?;
        let rows: Vec<(String, i64, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err("read the outbox", e))?;
        rows.into_iter()
            .map(|(kind, row, created)| {
                let t = parse_time(&created).map_err(|e| self.invalid("outbox time", e))?;
                Ok((kind, row, t))
            })
            .collect()
    }
}
