//! A slide session's lifecycle: opened (with `START`, a press, or the first frame when
//! `auto_start`), closed (with `STOP`, a press, an idle gap, the end of the source, or
//! shutdown), and its verdict stored and sent as a `SLIDE` event.

use std::time::{Duration, Instant};

use chrono::Utc;
use hardware::{DeviceStatus, Event};
use tracing::info;

use super::{Device, SOFTWARE_VERSION};
use crate::decision::SlideTally;
use crate::store::{NewSession, SessionSummary, StopReason};

/// An open slide session.
pub(super) struct OpenSession {
    pub(super) id: i64,
    pub(super) slide: String,
    pub(super) tally: SlideTally,
    pub(super) seq: u64,
    pub(super) last_frame: Instant,
}

impl Device {
    /// Opens a session; returns its slide id (`None` when the database refused).
    pub(super) fn open_session(&mut self, slide: Option<String>) -> Option<String> {
        let slide = slide.unwrap_or_else(|| Utc::now().format("S-%Y%m%d-%H%M%S").to_string());
        let labels = self.model.classifier.contract().labels.clone();
        let new = NewSession {
            slide_id: Some(slide.clone()),
            started: Utc::now(),
            model_sha256: self.model.sha256.clone(),
            model_variant: self.model.variant.clone(),
            labels: labels.clone(),
            normal_labels: self.config.decision.normal_labels.clone(),
            software_version: SOFTWARE_VERSION.into(),
            rule: serde_json::json!({
                "decision": self.config.decision,
                "slide": self.config.slide.rule,
            }),
        };
        match self.store.begin_session(&new) {
            Ok(id) => {
                info!(session = id, slide, "session started");
                self.session = Some(OpenSession {
                    id,
                    slide: slide.clone(),
                    tally: SlideTally::new(&labels),
                    seq: 0,
                    last_frame: Instant::now(),
                });
                self.outputs.status = DeviceStatus {
                    phase: self.phase(),
                    slide: Some(slide.clone()),
                    frames: 0,
                    verdict: None,
                    last: None,
                };
                self.outputs.refresh();
                Some(slide)
            }
            Err(e) => {
                self.store_failed(e);
                None
            }
        }
    }

    /// Closes the open session, if any: its summary and verdict are stored, logged, sent as a
    /// `SLIDE` event and shown.
    pub(super) fn close_session(&mut self, reason: StopReason) {
        let Some(session) = self.session.take() else {
            return;
        };
        let outcome = session
            .tally
            .outcome(&self.config.slide.rule, &self.config.decision);
        let counts: Vec<(String, u32)> = session
            .tally
            .labels()
            .iter()
            .cloned()
            .zip(session.tally.counts.iter().copied())
            .collect();
        let summary = SessionSummary {
            counts: counts.clone(),
            good: session.tally.good,
            retakes: session.tally.retakes,
            uncertain: session.tally.uncertain,
            blast_fraction: outcome.blast_fraction,
            verdict: outcome.verdict.as_str().to_string(),
            dominant_subtype: outcome.dominant_subtype.clone(),
        };
        if let Err(e) = self.store.close_session(session.id, &summary, reason) {
            // The frames are stored; the summary can be recomputed from them at the next start.
            self.store_failed(e);
        }
        self.summary.sessions += 1;
        info!(
            session = session.id,
            slide = session.slide,
            verdict = outcome.verdict.headline(),
            subtype = outcome.dominant_subtype.as_deref().unwrap_or("-"),
            frames = session.tally.frames,
            "session closed ({reason:?}); {}",
            crate::decision::SCREENING_NOTE
        );
        self.outputs
            .send(&Event::Slide(hardware::serial::protocol::SlideSummary {
                slide: session.slide.clone(),
                verdict: outcome.verdict,
                frames: session.tally.frames,
                good: session.tally.good,
                retakes: session.tally.retakes,
                counts,
                blast_fraction: outcome.blast_fraction,
            }));
        self.outputs.status.phase = self.phase();
        self.outputs.status.verdict = Some(outcome.verdict);
        self.outputs.refresh();
    }

    /// Closes the session when no frame came for the configured idle gap.
    pub(super) fn check_idle(&mut self) {
        let gap = self.config.slide.idle_gap_s;
        if gap > 0
            && self
                .session
                .as_ref()
                .is_some_and(|s| s.last_frame.elapsed() >= Duration::from_secs(gap))
        {
            info!("no frame for {gap} s: closing the session");
            self.close_session(StopReason::Idle);
        }
    }
}
