//! Rows as SQLite holds them: the `SELECT` lists, the raw rows and their parsing into
//! [`SessionRow`] and [`FrameRow`], and the JSON text of the JSON columns.

use std::path::{Path, PathBuf};

use rusqlite::Row;

use super::types::parse_time;
use super::{FrameRecord, FrameRow, Quality, SessionCounts, SessionRow, StoreError};
use leukoscope_screening::UncertainReason;

/// The `counts` column: a JSON object label → confident frames.
pub(super) fn counts_json(counts: &[(String, u32)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = counts
        .iter()
        .map(|(l, n)| (l.clone(), serde_json::Value::from(*n)))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// The `labels` and `normal_labels` columns: a JSON array of strings.
pub(super) fn json_strings(v: &[String]) -> String {
    serde_json::to_string(v).expect("strings always encode as JSON")
}

/// The session columns, in [`RawSession::from_row`]'s order, with the session's frame count.
pub(super) const SESSION_SELECT: &str = "SELECT s.id, s.slide_id, s.started, s.stopped, s.state,
    s.stop_reason, s.model_sha256, s.model_variant, s.labels, s.normal_labels,
    s.software_version, s.rule, s.counts, s.good, s.retakes, s.uncertain, s.blast_fraction,
    s.verdict, s.dominant_subtype,
    (SELECT count(*) FROM frames f WHERE f.session_id = s.id),
    s.fields, s.blast_fields, s.uncertain_fields, s.fault, s.device, s.site, s.device_session,
    s.unfamiliar_fields
    FROM sessions s";

/// A session row as SQLite gives it.
pub(super) struct RawSession {
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
    fields: Option<u32>,
    blast_fields: Option<u32>,
    uncertain_fields: Option<u32>,
    fault: Option<String>,
    device: Option<String>,
    site: Option<String>,
    device_session: Option<i64>,
    unfamiliar_fields: Option<u32>,
}

impl RawSession {
    /// Reads a row of [`SESSION_SELECT`].
    pub(super) fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
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
            fields: r.get(20)?,
            blast_fields: r.get(21)?,
            uncertain_fields: r.get(22)?,
            fault: r.get(23)?,
            device: r.get(24)?,
            site: r.get(25)?,
            device_session: r.get(26)?,
            unfamiliar_fields: r.get(27)?,
        })
    }

    /// The session as stored values; a value that cannot be read back is [`StoreError::Invalid`].
    pub(super) fn parse(self, path: &Path) -> Result<SessionRow, StoreError> {
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
                    fields: self.fields,
                    blast_fields: self.blast_fields,
                    uncertain_fields: self.uncertain_fields,
                    unfamiliar_fields: self.unfamiliar_fields,
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
            fault: self.fault,
            device: self.device,
            site: self.site,
            device_session: self.device_session,
        })
    }
}

fn json_u32(v: &serde_json::Value) -> u32 {
    v.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
}

/// The frame columns, in [`RawFrame::from_row`]'s order.
pub(super) const FRAME_SELECT: &str =
    "SELECT id, session_id, seq, tile, time, origin, sha256, width, height,
    focus, mean, p999, clipped_fraction, stained_fraction, decision, retake_reason, label,
    confidence, probabilities, model_sha256, software_version, kept_image, image_evicted, field,
    device, device_frame, unfamiliarity, uncertain_reason
    FROM frames";

/// A frame row as SQLite gives it.
pub(super) struct RawFrame {
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
    field: Option<u32>,
    device: Option<String>,
    device_frame: Option<i64>,
    unfamiliarity: Option<f64>,
    uncertain_reason: Option<String>,
}

impl RawFrame {
    /// Reads a row of [`FRAME_SELECT`].
    pub(super) fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
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
            field: r.get(23)?,
            device: r.get(24)?,
            device_frame: r.get(25)?,
            unfamiliarity: r.get(26)?,
            uncertain_reason: r.get(27)?,
        })
    }

    /// The frame as stored values; a value that cannot be read back is [`StoreError::Invalid`].
    pub(super) fn parse(self, path: &Path) -> Result<FrameRow, StoreError> {
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
                field: self.field,
                unfamiliarity: self.unfamiliarity.map(|x| x as f32),
                uncertain_reason: self
                    .uncertain_reason
                    .as_deref()
                    .map(|w| {
                        UncertainReason::from_word(w)
                            .ok_or_else(|| bad(format!("uncertain reason {w:?}")))
                    })
                    .transpose()?,
            },
            image_evicted: self
                .image_evicted
                .as_deref()
                .map(parse_time)
                .transpose()
                .map_err(bad)?,
            device: self.device,
            device_frame: self.device_frame,
        })
    }
}
