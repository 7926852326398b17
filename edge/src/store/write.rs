//! Writing a session: begin it, record its frames (one committed transaction per frame, with all
//! its tiles), close it.

use chrono::{DateTime, Utc};
use rusqlite::params;
use tracing::warn;

use super::error::sql_error;
use super::rows::{counts_json, json_strings};
use super::{
    FrameRecord, NewSession, OutboxKind, SessionSummary, StopReason, Store, StoreError, format_time,
};

impl Store {
    /// Starts a session; returns its id. With the outbox on, the session is queued in the same
    /// transaction ([`StoreError::OutboxFull`] when the outbox is full of unsent rows).
    pub fn begin_session(&mut self, s: &NewSession) -> Result<i64, StoreError> {
        let id = self.in_transaction("begin a session", |store| {
            store
                .conn
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
                .map_err(|e| store.err("begin a session", e))?;
            let id = store.conn.last_insert_rowid();
            store.outbox_add(OutboxKind::Session, id, "open", true)?;
            Ok(id)
        })?;
        self.label_counts.insert(id, s.labels.len());
        Ok(id)
    }

    /// Records one result. It is committed (on stable storage) when this returns.
    pub fn record_frame(&mut self, f: &FrameRecord) -> Result<i64, StoreError> {
        Ok(self.record_frames(std::slice::from_ref(f))?[0])
    }

    /// Records the results of one frame (one per tile) in one transaction: all of them are
    /// committed (on stable storage) when this returns, or none is. Returns their row ids. With
    /// the outbox on, each result is queued in the same transaction ([`StoreError::OutboxFull`]
    /// when the outbox is full of unsent rows: nothing of this frame is recorded).
    pub fn record_frames(&mut self, frames: &[FrameRecord]) -> Result<Vec<i64>, StoreError> {
        self.in_transaction("record a frame", |store| {
            let mut ids = Vec::with_capacity(frames.len());
            for f in frames {
                let id = store.insert_frame(f)?;
                store.outbox_add(OutboxKind::Frame, id, "result", true)?;
                ids.push(id);
            }
            Ok(ids)
        })
    }

    fn insert_frame(&mut self, f: &FrameRecord) -> Result<i64, StoreError> {
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
                    software_version, kept_image, field, unfamiliarity, uncertain_reason)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                    ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24
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
                f.field,
                f.unfamiliarity,
                f.uncertain_reason.map(|r| r.as_str()),
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
        let n = self.in_transaction("close a session", |store| {
            let n = store
                .conn
                .execute(
                    "UPDATE sessions SET state = 'closed', stopped = ?2, stop_reason = ?3,
                    counts = ?4, good = ?5, retakes = ?6, uncertain = ?7, blast_fraction = ?8,
                    verdict = ?9, dominant_subtype = ?10, fields = ?11, blast_fields = ?12,
                    uncertain_fields = ?13, fault = ?14, unfamiliar_fields = ?15
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
                        summary.fields,
                        summary.blast_fields,
                        summary.uncertain_fields,
                        summary.fault,
                        summary.unfamiliar_fields,
                    ],
                )
                .map_err(|e| store.err("close a session", e))?;
            if n > 0 {
                // Queued even over the outbox's cap: the last word on a session is never lost.
                store.outbox_add(OutboxKind::Session, id, "closed", false)?;
            }
            Ok(n)
        })?;
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

    /// Runs a statement on the writer connection (tests: e.g. `PRAGMA max_page_count`).
    #[doc(hidden)]
    pub fn pragma_for_tests(&self, name: &str, value: i64) -> Result<i64, StoreError> {
        self.conn
            .pragma_update_and_check(None, name, value, |r| r.get(0))
            .map_err(|e| self.err("set a pragma", e))
    }
}
