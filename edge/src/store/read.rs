//! Reading sessions and frames back, and recounting a session from its frames.

use std::collections::HashMap;

use hardware::serial::Timestamp;
use hardware::{Event, RetakeReason};
use leukoscope_screening::{Decision, UncertainReason, is_normal};
use rusqlite::OptionalExtension;

use super::rows::{FRAME_SELECT, RawFrame, RawSession, SESSION_SELECT};
use super::types::FrameFacts;
use super::{FrameRow, SessionCounts, SessionRow, Store, StoreError, StoredDecision};

impl Store {
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

    /// One frame result by its row id.
    pub fn frame(&self, id: i64) -> Result<FrameRow, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(&format!("{FRAME_SELECT} WHERE id = ?1"))
            .map_err(|e| self.err("read a frame", e))?;
        let raw = st
            .query_row([id], RawFrame::from_row)
            .optional()
            .map_err(|e| self.err("read a frame", e))?;
        match raw {
            Some(raw) => raw.parse(&self.path),
            None => Err(self.invalid("frame id", format!("no frame {id}"))),
        }
    }

    /// Whether a frame from `origin` with this `sha256` is recorded, in any session (a watched
    /// folder's catch-up at start skips such pictures).
    pub fn has_frame(&self, origin: &str, sha256: &str) -> Result<bool, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM frames WHERE origin = ?1 AND sha256 = ?2)",
            )
            .map_err(|e| self.err("look up a frame", e))?;
        st.query_row([origin, sha256], |r| r.get(0))
            .map_err(|e| self.err("look up a frame", e))
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

    /// The serial line's answer to `LAST n`, from the database (so it survives a restart): the
    /// `n` most recently recorded results (frames, or tiles of tiled frames, any session) as the
    /// `RESULT`/`RETAKE` events they were sent as, oldest first. A row whose retake reason is
    /// not one of the protocol's words is left out.
    pub fn last_events(&self, n: usize) -> Result<Vec<Event>, StoreError> {
        let frames = self.last_frames(n)?;
        let mut sessions: HashMap<i64, SessionRow> = HashMap::new();
        let mut events = Vec::with_capacity(frames.len());
        for row in frames {
            let f = row.frame;
            let time = Timestamp(u64::try_from(f.time.timestamp_millis()).unwrap_or(0));
            let event = match f.decision {
                StoredDecision::Retake => {
                    let reason = [
                        RetakeReason::Focus,
                        RetakeReason::Exposure,
                        RetakeReason::Empty,
                    ]
                    .into_iter()
                    .find(|r| f.retake_reason.as_deref() == Some(r.as_str()));
                    let Some(reason) = reason else { continue };
                    Event::Retake {
                        frame: f.seq,
                        reason,
                        time,
                        tile: f.tile,
                    }
                }
                decision => {
                    let session = match sessions.entry(f.session) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            e.insert(self.session(f.session)?)
                        }
                    };
                    let label = f.label.unwrap_or_default();
                    let kind = if decision == StoredDecision::Uncertain {
                        Decision::Uncertain
                    } else if is_normal(&session.normal_labels, &label) {
                        Decision::Normal
                    } else {
                        Decision::Blast
                    };
                    Event::Result {
                        frame: f.seq,
                        slide: session.slide_id.clone(),
                        label,
                        confidence: f.confidence.unwrap_or(f32::NAN),
                        decision: kind,
                        time,
                        unfamiliar: f.uncertain_reason == Some(UncertainReason::Unfamiliar),
                        tile: f.tile,
                    }
                }
            };
            events.push(event);
        }
        Ok(events)
    }

    /// Counts of a session recomputed from its frames (see [`SessionCounts::replay`]).
    pub(super) fn recount(&self, s: &SessionRow) -> Result<SessionCounts, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT decision, label, probabilities, field, tile, uncertain_reason FROM frames
                 WHERE session_id = ?1 ORDER BY id",
            )
            .map_err(|e| self.err("count frames", e))?;
        type Raw = (
            String,
            Option<String>,
            String,
            Option<u32>,
            Option<u32>,
            Option<String>,
        );
        let rows: Vec<Raw> = st
            .query_map([s.id], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err("count frames", e))?;
        let frames =
            rows.into_iter()
                .map(|(decision, label, probabilities, field, tile, reason)| {
                    let probabilities: Vec<Option<f32>> =
                        serde_json::from_str(&probabilities).unwrap_or_default();
                    FrameFacts {
                        // The schema allows only the three words (a CHECK constraint).
                        decision: decision.parse().unwrap_or(StoredDecision::Label),
                        label,
                        probabilities: probabilities
                            .into_iter()
                            .map(|p| p.unwrap_or(f32::NAN))
                            .collect(),
                        field,
                        tile,
                        // The schema allows only the reasons' words (a CHECK constraint).
                        uncertain_reason: reason.as_deref().and_then(UncertainReason::from_word),
                    }
                });
        Ok(SessionCounts::replay(s, frames))
    }
}
