//! A slide session's lifecycle: opened (with `START`, a press, or — when `auto_start` — the first
//! frame of the run), closed (with `STOP`, a press, an idle gap, the end of the source, shutdown,
//! or a fault), and its summary committed, and only then sent as a `SLIDE` event and shown.
//!
//! After `STOP` or a press the device waits for `START` or a press: `auto_start` never reopens a
//! session behind the technician's back, so sessions follow slides. After an idle gap or the end
//! of a source, the next frame opens a session again when `auto_start` is on.

use std::time::{Duration, Instant};

use chrono::Utc;
use hardware::serial::protocol::SlideSummary;
use hardware::{DeviceStatus, Event, Fault};
use tracing::{error, info};

use super::{Device, SOFTWARE_VERSION};
use crate::fields::FieldTracker;
use crate::store::{NewSession, SessionSummary, StopReason};
use leukoscope_screening::{SCREENING_NOTE, SlideTally, Verdict};

/// An open slide session.
pub(super) struct OpenSession {
    pub(super) id: i64,
    pub(super) slide: String,
    pub(super) tally: SlideTally,
    pub(super) fields: FieldTracker,
    pub(super) seq: u64,
    pub(super) last_frame: Instant,
}

impl Device {
    /// Whether the next frame may open a session by itself: `auto_start` is on and the
    /// technician has not stopped a session by hand during this run.
    pub(super) fn may_auto_start(&self) -> bool {
        self.config.slide.auto_start && !self.stopped_by_hand
    }

    /// Opens a session; returns its slide id, or why it could not be opened.
    pub(super) fn open_session(&mut self, slide: Option<String>) -> Option<String> {
        self.try_open_session(slide).ok()
    }

    /// Opens a session; returns its slide id, or why it could not be opened (the database
    /// refused: classifying stops).
    pub(super) fn try_open_session(&mut self, slide: Option<String>) -> Result<String, String> {
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
                "fields": self.config.fields,
            }),
        };
        match self.store.begin_session(&new) {
            Ok(id) => {
                self.pipeline.reset_scale_watch();
                info!(session = id, slide, "session started");
                self.session = Some(OpenSession {
                    id,
                    slide: slide.clone(),
                    tally: SlideTally::new(&labels),
                    fields: FieldTracker::new(self.config.fields.clone(), self.field_mode),
                    seq: 0,
                    last_frame: Instant::now(),
                });
                self.outputs.status = DeviceStatus {
                    phase: self.phase(),
                    slide: Some(slide.clone()),
                    frames: 0,
                    fields: 0,
                    verdict: None,
                    last: None,
                };
                self.outputs.refresh();
                Ok(slide)
            }
            Err(e) => {
                let reason = e.to_string();
                self.store_failed(e);
                Err(reason)
            }
        }
    }

    /// Closes the open session, if any, for `reason` (not a fault: see
    /// [`Device::close_session_for`]).
    pub(super) fn close_session(&mut self, reason: StopReason) {
        self.close_session_for(reason, None);
    }

    /// Closes the open session, if any. Its summary is committed first; only then is it logged,
    /// sent as a `SLIDE` event and shown. A session closed by a fault (`fault` says which) stores
    /// no verdict and is sent as `verdict=incomplete`. When the commit fails, an `ERROR` goes to
    /// every output and no verdict is shown anywhere (the session is marked interrupted at the
    /// next start).
    pub(super) fn close_session_for(&mut self, reason: StopReason, fault: Option<String>) {
        let Some(session) = self.session.take() else {
            return;
        };
        let outcome = session
            .tally
            .outcome(&self.config.slide.rule, &self.config.decision);
        let verdict = if reason == StopReason::Fault {
            Verdict::Incomplete
        } else {
            outcome.verdict
        };
        let counts: Vec<(String, u32)> = session
            .tally
            .labels()
            .iter()
            .cloned()
            .zip(session.tally.counts.iter().copied())
            .collect();
        let fields = &outcome.fields;
        let summary = SessionSummary {
            counts: counts.clone(),
            good: session.tally.good,
            retakes: session.tally.retakes,
            uncertain: session.tally.uncertain,
            fields: fields.good,
            blast_fields: fields.blasts,
            uncertain_fields: fields.uncertain,
            unfamiliar_fields: fields.unfamiliar,
            blast_fraction: outcome.blast_fraction,
            verdict: (verdict != Verdict::Incomplete).then(|| verdict.as_str().to_string()),
            dominant_subtype: outcome
                .dominant_subtype
                .clone()
                .filter(|_| verdict == Verdict::Refer),
            fault: fault.clone(),
        };
        self.summary.sessions += 1;
        if let Err(e) = self.store.close_session(session.id, &summary, reason) {
            let message = format!(
                "the summary of slide {} could not be stored ({e}); no verdict is shown, rescan \
                 the slide",
                session.slide
            );
            error!(session = session.id, "{message}");
            // Every output: the panel, the serial line and stdout.
            self.outputs.show_fault(Fault::Internal, message.clone());
            self.fault.get_or_insert((Fault::Internal, message));
            self.outputs.status.verdict = None;
            self.outputs.status.phase = self.phase();
            self.outputs.refresh();
            return;
        }
        info!(
            session = session.id,
            slide = session.slide,
            verdict = verdict.headline(),
            subtype = summary.dominant_subtype.as_deref().unwrap_or("-"),
            frames = session.tally.frames,
            fields = fields.good,
            unfamiliar_fields = fields.unfamiliar,
            "session closed ({reason:?}); {SCREENING_NOTE}"
        );
        self.outputs.send(&Event::Slide(SlideSummary {
            slide: session.slide.clone(),
            verdict,
            frames: session.tally.frames,
            good: session.tally.good,
            retakes: session.tally.retakes,
            fields: fields.good,
            unfamiliar: fields.unfamiliar,
            reason: fault,
            counts,
            blast_fraction: outcome.blast_fraction,
        }));
        self.outputs.status.phase = self.phase();
        self.outputs.status.fields = fields.good;
        self.outputs.status.verdict = Some(verdict);
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
