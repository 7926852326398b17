//! One frame on the device: field, gate, classify ([`super::pipeline`]) → all its results
//! committed to the database in one transaction (with the pictures of flagged results kept) →
//! only then shown on the panel and sent.

use std::path::PathBuf;
use std::time::Instant;

use chrono::Utc;
use hardware::{Event, Fault, LastFrame, Phase};
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use super::{Device, FrameError, Outcome, Processed, SOFTWARE_VERSION};
use crate::source::{Frame, FrameData};
use crate::store::{self, FrameRecord};
use leukoscope_screening::{Decision, UncertainReason};

impl Device {
    /// Classifies, records and announces one frame (or each of its tiles), opening a session
    /// first when `auto_start` allows.
    pub(super) fn on_frame(&mut self, frame: &Frame) {
        if frame.catch_up && self.already_recorded(frame) {
            return;
        }
        self.summary.frames += 1;
        self.check_disk();
        if self.classifying_stopped() {
            return;
        }
        if self.session.is_none() {
            if !self.may_auto_start() {
                warn!(
                    "{}: no slide session (send START or press the button)",
                    frame.origin
                );
                return;
            }
            if self.open_session(None).is_none() {
                return;
            }
        }
        let session = self.session.as_mut().expect("opened above");
        let processed =
            match self
                .pipeline
                .process(&self.model.classifier, frame, &mut session.fields)
            {
                Ok(p) => p,
                Err(FrameError::Decode { origin, reason }) => {
                    self.skipped(&origin, &reason);
                    return;
                }
                Err(FrameError::Model(e)) => {
                    self.stop_for_fault(Fault::Internal, format!("inference failed: {e}"));
                    return;
                }
                Err(FrameError::TooManyTiles(message)) => {
                    // Every later frame of this source would be refused the same way.
                    self.stop_for_fault(Fault::Internal, message);
                    return;
                }
            };
        let session = self.session.as_mut().expect("opened above");
        session.seq += 1;
        session.last_frame = Instant::now();
        let seq = session.seq;
        let time = Utc::now();
        let records: Vec<FrameRecord> = processed
            .iter()
            .map(|part| self.record_of(frame, seq, time, part))
            .collect();
        // Committed, all tiles together, before anything is shown or sent.
        if let Err(e) = self.store.record_frames(&records) {
            self.store_failed(e);
            return;
        }
        self.summary.recorded += records.len() as u64;
        for part in &processed {
            self.announce(seq, part, time);
        }
        if let Some(message) = self.pipeline.take_scale_warning() {
            warn!("pixel size: {message}");
            self.outputs.send(&hardware::Event::Notice {
                code: "scale_mismatch".into(),
                message,
            });
        }
    }

    /// A watched folder's picture from before the start (catch-up) that the database already
    /// has, by origin and sha256: counted and skipped. A lookup that fails classifies it again
    /// (a duplicate row is better than a picture never classified).
    fn already_recorded(&mut self, frame: &Frame) -> bool {
        let FrameData::Encoded(bytes) = &frame.data else {
            return false;
        };
        let sha256 = hex::encode(Sha256::digest(bytes));
        match self.store.has_frame(&frame.origin, &sha256) {
            Ok(true) => {
                debug!("{}: already recorded, skipped (catch-up)", frame.origin);
                self.summary.already_recorded += 1;
                self.catch_up_unlogged += 1;
                true
            }
            Ok(false) => false,
            Err(e) => {
                warn!(
                    "{}: cannot look it up ({e}); classified again",
                    frame.origin
                );
                false
            }
        }
    }

    /// A frame that could not be decoded (garbage, truncated): counted and logged, never
    /// classified.
    pub(super) fn skipped(&mut self, origin: &str, reason: &str) {
        self.summary.undecodable += 1;
        warn!("skipped {origin}: {reason}");
    }

    /// The row for one result (a frame, or a tile of it), keeping the picture of a flagged one.
    fn record_of(
        &mut self,
        frame: &Frame,
        seq: u64,
        time: chrono::DateTime<Utc>,
        processed: &Processed,
    ) -> FrameRecord {
        let session_id = self
            .session
            .as_ref()
            .expect("a frame belongs to a session")
            .id;
        let (unfamiliarity, uncertain_reason) = match &processed.outcome {
            Outcome::Retake(_) => (None, None),
            Outcome::Classified {
                unfamiliarity,
                decision,
                ..
            } => (*unfamiliarity, decision.reason),
        };
        let (decision, label, confidence, probabilities, retake, flagged) = match &processed.outcome
        {
            Outcome::Retake(reason) => (
                store::StoredDecision::Retake,
                None,
                None,
                Vec::new(),
                Some(reason.as_str().to_string()),
                false,
            ),
            Outcome::Classified {
                probabilities,
                decision,
                ..
            } => (
                if decision.kind == Decision::Uncertain {
                    store::StoredDecision::Uncertain
                } else {
                    store::StoredDecision::Label
                },
                Some(decision.label.clone()),
                Some(decision.confidence),
                probabilities.clone(),
                None,
                decision.kind != Decision::Normal,
            ),
        };
        let kept_image = if flagged {
            self.keep_flagged(frame, session_id, seq, processed.tile.as_ref())
        } else {
            None
        };
        FrameRecord {
            session: session_id,
            seq,
            time,
            origin: frame.origin.clone(),
            sha256: processed.sha256.clone(),
            width: processed.width,
            height: processed.height,
            quality: Some(processed.quality.into()),
            decision,
            retake_reason: retake,
            label,
            confidence,
            probabilities,
            model_sha256: self.model.sha256.clone(),
            software_version: SOFTWARE_VERSION.into(),
            kept_image,
            tile: processed.tile_index(),
            field: processed.field,
            unfamiliarity,
            uncertain_reason,
        }
    }

    /// Keeps the picture of a flagged result: the frame as received, or the tile's pixels.
    fn keep_flagged(
        &mut self,
        frame: &Frame,
        session: i64,
        seq: u64,
        tile: Option<&(u32, image::RgbImage)>,
    ) -> Option<PathBuf> {
        let flagged = self.flagged.as_mut()?;
        let kept = match (tile, &frame.data) {
            (Some((i, pixels)), _) => {
                flagged.keep_rgb(&mut self.store, session, seq, Some(*i), pixels)
            }
            (None, FrameData::Encoded(bytes)) => {
                flagged.keep_encoded(&mut self.store, session, seq, None, bytes)
            }
            (None, FrameData::Rgb(image)) => {
                flagged.keep_rgb(&mut self.store, session, seq, None, image)
            }
        };
        match kept {
            Ok(path) => path,
            Err(e) => {
                warn!("flagged frame not kept: {e}");
                None
            }
        }
    }

    /// Shows and sends a recorded result.
    fn announce(&mut self, seq: u64, processed: &Processed, time: chrono::DateTime<Utc>) {
        let session = self.session.as_mut().expect("a frame belongs to a session");
        let stamp = hardware::serial::protocol::Timestamp(
            u64::try_from(time.timestamp_millis()).unwrap_or(0),
        );
        let field = processed.field_key();
        let (event, last) = match &processed.outcome {
            Outcome::Retake(reason) => {
                session.tally.add_retake(field);
                let reason = *reason;
                (
                    Event::Retake {
                        frame: seq,
                        reason,
                        time: stamp,
                        tile: processed.tile_index(),
                    },
                    LastFrame::Retake(reason),
                )
            }
            Outcome::Classified {
                decision,
                probabilities,
                ..
            } => {
                session.tally.add(field, decision, probabilities);
                (
                    Event::Result {
                        frame: seq,
                        slide: Some(session.slide.clone()),
                        label: decision.label.clone(),
                        confidence: decision.confidence,
                        decision: decision.kind,
                        time: stamp,
                        unfamiliar: decision.reason == Some(UncertainReason::Unfamiliar),
                        tile: processed.tile_index(),
                    },
                    LastFrame::Classified {
                        label: decision.label.clone(),
                        confidence: decision.confidence,
                    },
                )
            }
        };
        let outcome = session
            .tally
            .outcome(&self.config.slide.rule, &self.config.decision);
        self.outputs.status.frames = session.tally.frames;
        self.outputs.status.fields = outcome.fields.good;
        self.outputs.status.slide = Some(session.slide.clone());
        self.outputs.status.last = Some(last);
        self.outputs.status.verdict = Some(outcome.verdict);
        self.outputs.status.phase = Phase::Screening;
        self.outputs.send(&event);
        self.outputs.refresh();
    }
}
