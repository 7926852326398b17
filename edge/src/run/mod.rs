//! `edge run`: the device program.
//!
//! Start-up: open the outputs (so a refusal is visible on the LEDs and the serial line), check
//! the model files' integrity, load them and keep the fastest variant, self-test (model on a
//! known input, database writable, disk space above the floor, camera opens), then loop:
//!
//! * serial commands and the button are served between frames;
//! * each frame: quality gate → model → decision → **committed to SQLite** → only then shown
//!   on the panel, sent on the serial line and printed;
//! * a slide session opens with `START`, a button press, or (when `auto_start`) the first
//!   frame; it closes with `STOP`, a button press, an idle gap, the end of a finite source, or
//!   shutdown, and its summary is stored and sent as a `SLIDE` event.
//!
//! SIGINT/SIGTERM finish the current frame, close the session, flush and exit 0. A full disk or
//! a database error stops classifying (frames are then dropped, never half-recorded), says so
//! on every output, and keeps what is stored; the exit status is then non-zero.

pub mod bench;
mod outputs;
mod pipeline;
mod selftest;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use chrono::Utc;
use hardware::{
    ButtonEvent, Command, ConsolePanel, DeviceStatus, Event, Fault, Format, LastFrame, Panel,
    PanelKind, Phase, SerialLine, Verdict,
};
use tracing::{error, info, warn};

pub use outputs::{ButtonPoll, Outputs};
pub use pipeline::{FrameError, FramePipeline, Outcome, Processed};

use crate::config::RunConfig;
use crate::decision::{FrameKind, SlideTally, SlideVerdict};
use crate::flagged::{CapPolicy, FlaggedImages};
use crate::source::FrameData;
use crate::source::{self, Frame, SourceEvent, SourceHandle, SourceSpec};
use crate::store::{self, FrameRecord, NewSession, SessionSummary, StopReason, Store, StoreError};
use leukoscope_model::classifier::OnnxClassifier;
use leukoscope_model::onnx::ContractOverrides;
use leukoscope_model::variant::{Precision, Variant, VariantError};

/// Timed inferences per candidate model when choosing the variant at start-up.
const VARIANT_WARMUP_RUNS: usize = 20;

/// The program's name and version, as recorded with every frame.
pub const SOFTWARE_VERSION: &str = concat!("leukoscope-edge ", env!("CARGO_PKG_VERSION"));

/// `edge run` could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// No usable model: missing, not ONNX, failing integrity, or failing its self-test.
    #[error("model refused: {0}")]
    ModelRefused(String),
    /// The audit database cannot be used.
    #[error("audit database: {0}")]
    Store(#[from] StoreError),
    /// The frame source cannot be opened.
    #[error("frame source: {0}")]
    Source(String),
    /// A panel, button or serial line from the config cannot be opened.
    #[error("hardware: {0}")]
    Hardware(String),
    /// A start-up self-test failed.
    #[error("self-test failed: {0}")]
    SelfTest(String),
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// Frames received.
    pub frames: u64,
    /// Frames committed to the database.
    pub recorded: u64,
    /// Frames that could not be decoded.
    pub undecodable: u64,
    /// Sessions closed during the run.
    pub sessions: u32,
    /// A fault that stopped classifying (disk full, database error), if any.
    pub fault: Option<String>,
}

/// What the loaded model is, for the records and the `MODEL` answer.
struct LoadedModel {
    classifier: OnnxClassifier,
    sha256: String,
    variant: String,
    name: String,
}

/// An open slide session.
struct OpenSession {
    id: i64,
    slide: String,
    tally: SlideTally,
    seq: u64,
    last_frame: Instant,
}

/// The device program's state.
pub struct Device {
    config: RunConfig,
    model: LoadedModel,
    pipeline: FramePipeline,
    store: Store,
    flagged: Option<FlaggedImages>,
    outputs: Outputs,
    session: Option<OpenSession>,
    fault: Option<(Fault, String)>,
    started: Instant,
    summary: RunSummary,
    last_disk_check: Option<Instant>,
}

/// Opens the panel, button and serial line of `config`. Events go to `events` too (standard
/// output for `edge run`), in the serial line's format.
pub fn open_outputs(
    config: &RunConfig,
    events: Option<Box<dyn Write>>,
) -> Result<Outputs, RunError> {
    let panel: Box<dyn Panel> = match config.panel.kind {
        // The console panel draws on stderr: stdout carries the event lines.
        PanelKind::Console => Box::new(ConsolePanel::new(
            std::io::stderr(),
            std::io::stderr().is_terminal(),
        )),
        _ => hardware::open_panel(&config.panel).map_err(|e| RunError::Hardware(e.to_string()))?,
    };
    let serial = match &config.serial {
        Some(serial) => Some(
            SerialLine::open(serial)
                .map_err(|e| RunError::Hardware(format!("serial line {}: {e}", serial.path)))?,
        ),
        None => None,
    };
    let button = open_button(config)?;
    let format = config
        .serial
        .as_ref()
        .map(|s| s.format)
        .or(config.events_format)
        .unwrap_or(Format::Text);
    Ok(Outputs::new(
        serial,
        panel,
        button,
        events.map(|w| (w, format)),
    ))
}

#[cfg(feature = "linux")]
fn open_button(config: &RunConfig) -> Result<Option<ButtonPoll>, RunError> {
    let Some(line) = &config.button else {
        return Ok(None);
    };
    let mut button =
        hardware::linux::open_button(line).map_err(|e| RunError::Hardware(e.to_string()))?;
    Ok(Some(Box::new(move |now| button.poll(now))))
}

#[cfg(not(feature = "linux"))]
fn open_button(config: &RunConfig) -> Result<Option<ButtonPoll>, RunError> {
    match &config.button {
        None => Ok(None),
        Some(_) => Err(RunError::Hardware(
            "a [button] is configured, but this build has no GPIO support (build edge with --features linux)".into(),
        )),
    }
}

/// The `.onnx` files named by `paths` (files as given, folders' `*.onnx` sorted by name).
pub fn model_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, RunError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            files.extend(
                leukoscope_model::variant::model_files(path)
                    .map_err(|e| RunError::ModelRefused(e.to_string()))?,
            );
        } else if path.exists() {
            files.push(path.clone());
        } else {
            return Err(RunError::ModelRefused(format!(
                "{}: no such file",
                path.display()
            )));
        }
    }
    if files.is_empty() {
        return Err(RunError::ModelRefused(format!(
            "no .onnx file in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(files)
}

impl Device {
    /// Starts the device: integrity, model choice, self-test, database. Each self-test result
    /// is logged and sent as a `SELFTEST` event; a failure also shows as a fault on the panel.
    pub fn start(config: RunConfig, mut outputs: Outputs) -> Result<Device, RunError> {
        outputs.refresh();
        let started = Instant::now();
        let result = Self::start_inner(&config, &mut outputs);
        match result {
            Ok((model, store, flagged)) => {
                let pipeline = FramePipeline::new(
                    &model.classifier,
                    config.quality.clone(),
                    config.decision.clone(),
                    config.source.tile,
                );
                outputs.status = DeviceStatus::idle();
                outputs.refresh();
                Ok(Device {
                    config,
                    model,
                    pipeline,
                    store,
                    flagged,
                    outputs,
                    session: None,
                    fault: None,
                    started,
                    summary: RunSummary {
                        frames: 0,
                        recorded: 0,
                        undecodable: 0,
                        sessions: 0,
                        fault: None,
                    },
                    last_disk_check: None,
                })
            }
            Err(e) => {
                let fault = match &e {
                    RunError::ModelRefused(_) => Fault::ModelRefused,
                    RunError::Store(StoreError::DiskFull { .. }) => Fault::DiskFull,
                    RunError::Source(_) => Fault::CameraLost,
                    _ => Fault::Internal,
                };
                outputs.status.phase = Phase::Fault(fault);
                outputs.send(&Event::Error {
                    code: fault,
                    message: e.to_string(),
                });
                outputs.refresh();
                Err(e)
            }
        }
    }

    fn start_inner(
        config: &RunConfig,
        outputs: &mut Outputs,
    ) -> Result<(LoadedModel, Store, Option<FlaggedImages>), RunError> {
        let mut check = |name: &str, result: Result<String, String>| {
            let (ok, detail) = match &result {
                Ok(d) => (true, d.clone()),
                Err(d) => (false, d.clone()),
            };
            if ok {
                info!(check = name, "self-test passed: {detail}");
            } else {
                error!(check = name, "self-test failed: {detail}");
            }
            outputs.send(&Event::SelfTest {
                check: name.to_string(),
                ok,
                detail,
            });
            result
        };
        let model = load_model(config)
            .map_err(|e| match e {
                RunError::ModelRefused(m) => m,
                other => other.to_string(),
            })
            .and_then(|model| {
                selftest::model_check(&model.classifier, &config.model).map(|d| (model, d))
            });
        let _ = check(
            "model",
            model.as_ref().map(|(_, d)| d.clone()).map_err(Clone::clone),
        );
        let (model, _) = model.map_err(RunError::ModelRefused)?;
        let store = Store::open(&config.store.db);
        let detail = match &store {
            Ok(_) => Ok(format!("{} writable", config.store.db.display())),
            Err(e) => Err(e.to_string()),
        };
        let _ = check("database", detail);
        let store = store?;
        check(
            "disk",
            selftest::disk_check(&config.store.db, config.store.min_free_mib),
        )
        .map_err(RunError::SelfTest)?;
        if !store.recovered_sessions().is_empty() {
            warn!(
                sessions = ?store.recovered_sessions(),
                "sessions left open by an earlier run are marked interrupted; their frames are kept"
            );
        }
        let flagged = match &config.store.flagged_dir {
            Some(dir) => {
                let mut flagged = FlaggedImages::open(
                    dir,
                    config.store.flagged_cap_mib << 20,
                    CapPolicy::EvictOldest,
                )
                .map_err(|e| RunError::SelfTest(e.to_string()))?;
                match flagged.sweep_orphans(&store) {
                    Ok(0) => {}
                    Ok(n) => info!(
                        "removed {n} kept pictures no frame refers to (a crash between the file and its row)"
                    ),
                    Err(e) => warn!("flagged pictures: {e}"),
                }
                Some(flagged)
            }
            None => None,
        };
        Ok((model, store, flagged))
    }

    /// Runs until the source ends (finite sources, with `exit_on_end`), `shutdown` is set
    /// (SIGINT/SIGTERM), or the source is gone for good.
    pub fn run(mut self, shutdown: &AtomicBool) -> Result<RunSummary, RunError> {
        let spec: SourceSpec = self
            .config
            .source
            .spec
            .parse()
            .map_err(|e| RunError::Source(format!("{e}")))?;
        let options = self.config.source.options.clone();
        let source = match source::open(&spec, &options) {
            Ok(s) => {
                self.selftest("camera", true, format!("{} open", self.config.source.spec));
                s
            }
            Err(e) => {
                self.selftest("camera", false, e.to_string());
                self.set_fault(Fault::CameraLost, e.to_string());
                return Err(RunError::Source(e.to_string()));
            }
        };
        self.run_source(source, shutdown)
    }

    /// [`Device::run`] on a source that is already open.
    pub fn run_source(
        mut self,
        source: SourceHandle,
        shutdown: &AtomicBool,
    ) -> Result<RunSummary, RunError> {
        let end_reason = loop {
            if shutdown.load(Ordering::SeqCst) {
                info!("shutdown requested");
                break StopReason::Shutdown;
            }
            while let Some(command) = self.outputs.poll_command() {
                self.on_command(command);
            }
            if let Some(event) = self.outputs.poll_button() {
                self.on_button(event);
            }
            match source.recv_timeout(Duration::from_millis(50)) {
                Ok(SourceEvent::Frame(frame)) => self.on_frame(&frame),
                Ok(SourceEvent::Skipped { origin, reason }) => {
                    self.summary.undecodable += 1;
                    warn!("skipped {origin}: {reason}");
                }
                Ok(SourceEvent::Lost { reason }) => {
                    self.set_fault(Fault::CameraLost, reason);
                }
                Ok(SourceEvent::Restored) => {
                    if matches!(self.fault, Some((Fault::CameraLost, _))) {
                        info!("camera back");
                        self.fault = None;
                        self.outputs.status.phase = self.phase();
                    }
                }
                Ok(SourceEvent::End) => {
                    if self.config.source.exit_on_end {
                        info!("source ended");
                        break StopReason::SourceEnd;
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.check_idle(),
                Err(RecvTimeoutError::Disconnected) => break StopReason::SourceEnd,
            }
            self.outputs.refresh();
        };
        self.close_session(end_reason);
        source.stop();
        self.outputs.status.phase = self.phase();
        self.outputs.refresh();
        self.summary.fault = self.fault.as_ref().map(|(_, m)| m.clone());
        Ok(self.summary)
    }

    fn selftest(&mut self, check: &str, ok: bool, detail: String) {
        if ok {
            info!(check, "self-test passed: {detail}");
        } else {
            error!(check, "self-test failed: {detail}");
        }
        self.outputs.send(&Event::SelfTest {
            check: check.into(),
            ok,
            detail,
        });
    }

    fn phase(&self) -> Phase {
        match (&self.fault, &self.session) {
            (Some((fault, _)), _) => Phase::Fault(*fault),
            (None, Some(_)) => Phase::Screening,
            (None, None) => Phase::Idle,
        }
    }

    fn set_fault(&mut self, fault: Fault, message: String) {
        error!("{}: {message}", fault.describe());
        self.fault = Some((fault, message.clone()));
        self.outputs.status.phase = Phase::Fault(fault);
        self.outputs.send(&Event::Error {
            code: fault,
            message,
        });
        self.outputs.refresh();
    }

    /// Disk-full and database faults stop classifying until restart.
    fn classifying_stopped(&self) -> bool {
        matches!(self.fault, Some((Fault::DiskFull | Fault::Internal, _)))
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Help => self.outputs.reply(&Event::Help),
            Command::Ping => self.outputs.reply(&Event::Pong),
            Command::Status => {
                let status = self.status_event();
                self.outputs.reply(&status);
            }
            Command::Start(slide) => {
                let slide = slide.map(|s| s.as_str().to_string());
                if self.classifying_stopped() {
                    self.outputs.reply(&Event::Ok {
                        command: "START",
                        detail: Some("refused: classifying stopped by a fault".into()),
                    });
                    return;
                }
                self.close_session(StopReason::Command);
                let id = self.open_session(slide);
                self.outputs.reply(&Event::Ok {
                    command: "START",
                    detail: id,
                });
            }
            Command::Stop => {
                let slide = self.session.as_ref().map(|s| s.slide.clone());
                self.outputs.reply(&Event::Ok {
                    command: "STOP",
                    detail: slide,
                });
                self.close_session(StopReason::Command);
            }
            Command::Last(n) => self.outputs.replay_last(n),
            Command::Model => self.outputs.reply(&Event::Model {
                name: self.model.name.clone(),
                digest: self.model.sha256.clone(),
                classes: self.model.classifier.contract().labels.clone(),
            }),
            Command::Version => self.outputs.reply(&Event::Version {
                name: "leukoscope-edge".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            }),
        }
    }

    fn on_button(&mut self, event: ButtonEvent) {
        match event {
            ButtonEvent::Press if self.session.is_some() => self.close_session(StopReason::Button),
            ButtonEvent::Press => {
                if !self.classifying_stopped() {
                    self.open_session(None);
                }
            }
            ButtonEvent::LongPress => {
                // Shutdown-safe: the session is closed and everything is on disk.
                // Every frame is already committed (WAL, synchronous=FULL): closing the session
                // is all that is left to make power-off safe.
                self.close_session(StopReason::Button);
                info!("long press: session closed, everything is on disk; safe to power off");
            }
        }
    }

    fn status_event(&self) -> Event {
        Event::Status {
            state: self.phase(),
            slide: self.session.as_ref().map(|s| s.slide.clone()),
            frames: self.session.as_ref().map_or(0, |s| s.tally.frames),
            model: self.model.name.clone(),
            uptime_s: self.started.elapsed().as_secs(),
        }
    }

    /// Opens a session; returns its slide id (`None` when the database refused).
    fn open_session(&mut self, slide: Option<String>) -> Option<String> {
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

    fn close_session(&mut self, reason: StopReason) {
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
                verdict: panel_verdict(outcome.verdict),
                frames: session.tally.frames,
                good: session.tally.good,
                retakes: session.tally.retakes,
                counts,
                blast_fraction: outcome.blast_fraction,
            }));
        self.outputs.status.phase = self.phase();
        self.outputs.status.verdict = Some(panel_verdict(outcome.verdict));
        self.outputs.refresh();
    }

    fn check_idle(&mut self) {
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

    fn check_disk(&mut self) {
        if self
            .last_disk_check
            .is_some_and(|t| t.elapsed() < Duration::from_secs(5))
        {
            return;
        }
        self.last_disk_check = Some(Instant::now());
        if let Err(message) =
            selftest::disk_check(&self.config.store.db, self.config.store.min_free_mib)
        {
            self.set_fault(Fault::DiskFull, message);
        }
    }

    fn store_failed(&mut self, e: StoreError) {
        let fault = if matches!(e, StoreError::DiskFull { .. }) {
            Fault::DiskFull
        } else {
            Fault::Internal
        };
        self.set_fault(
            fault,
            format!("{e}; classifying stopped, everything stored so far is kept"),
        );
    }

    fn on_frame(&mut self, frame: &Frame) {
        self.summary.frames += 1;
        self.check_disk();
        if self.classifying_stopped() {
            return;
        }
        if self.session.is_none() {
            if !self.config.slide.auto_start {
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
        let processed = match self.pipeline.process(&self.model.classifier, frame) {
            Ok(p) => p,
            Err(FrameError::Decode { origin, reason }) => {
                self.summary.undecodable += 1;
                warn!("skipped {origin}: {reason}");
                return;
            }
            Err(FrameError::Model(e)) => {
                self.set_fault(Fault::Internal, e.to_string());
                return;
            }
        };
        let session = self.session.as_mut().expect("opened above");
        session.seq += 1;
        session.last_frame = Instant::now();
        let seq = session.seq;
        for part in &processed {
            if !self.record_and_announce(frame, seq, part) {
                return;
            }
        }
    }

    /// Records one result (a frame, or a tile of it) and, once committed, shows and sends it.
    /// False when the database refused it (classifying has stopped).
    fn record_and_announce(&mut self, frame: &Frame, seq: u64, processed: &Processed) -> bool {
        let session_id = self
            .session
            .as_ref()
            .expect("a frame belongs to a session")
            .id;
        let time = Utc::now();
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
            } => (
                if decision.kind == FrameKind::Uncertain {
                    store::StoredDecision::Uncertain
                } else {
                    store::StoredDecision::Label
                },
                Some(decision.label.clone()),
                Some(decision.confidence),
                probabilities.clone(),
                None,
                decision.kind != FrameKind::Normal,
            ),
        };
        let kept_image = if flagged {
            self.keep_flagged(frame, session_id, seq, processed.tile.as_ref())
        } else {
            None
        };
        let record = FrameRecord {
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
            tile: processed.tile.as_ref().map(|(i, _)| *i),
        };
        // Committed before anything is shown or sent.
        if let Err(e) = self.store.record_frame(&record) {
            self.store_failed(e);
            return false;
        }
        self.summary.recorded += 1;
        self.announce(seq, processed, time);
        true
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

    /// Shows and sends a recorded frame's result.
    fn announce(&mut self, seq: u64, processed: &Processed, time: chrono::DateTime<Utc>) {
        let session = self.session.as_mut().expect("a frame belongs to a session");
        let stamp = hardware::serial::protocol::Timestamp(
            u64::try_from(time.timestamp_millis()).unwrap_or(0),
        );
        let (event, last) = match &processed.outcome {
            Outcome::Retake(reason) => {
                session.tally.add_retake();
                let reason = panel_retake(*reason);
                (
                    Event::Retake {
                        frame: seq,
                        reason,
                        time: stamp,
                        tile: processed.tile.as_ref().map(|(i, _)| *i),
                    },
                    LastFrame::Retake(reason),
                )
            }
            Outcome::Classified { decision, .. } => {
                session.tally.add(decision);
                (
                    Event::Result {
                        frame: seq,
                        slide: Some(session.slide.clone()),
                        label: decision.label.clone(),
                        confidence: decision.confidence,
                        decision: match decision.kind {
                            FrameKind::Normal => hardware::serial::protocol::Decision::Normal,
                            FrameKind::Blast => hardware::serial::protocol::Decision::Blast,
                            FrameKind::Uncertain => hardware::serial::protocol::Decision::Uncertain,
                        },
                        time: stamp,
                        tile: processed.tile.as_ref().map(|(i, _)| *i),
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
        self.outputs.status.slide = Some(session.slide.clone());
        self.outputs.status.last = Some(last);
        self.outputs.status.verdict = Some(panel_verdict(outcome.verdict));
        self.outputs.status.phase = Phase::Screening;
        self.outputs.send(&event);
        self.outputs.refresh();
    }
}

fn panel_verdict(v: SlideVerdict) -> Verdict {
    match v {
        SlideVerdict::NoBlasts => Verdict::NoBlasts,
        SlideVerdict::Refer => Verdict::Refer,
        SlideVerdict::Uncertain => Verdict::Uncertain,
        SlideVerdict::Insufficient => Verdict::Insufficient,
    }
}

fn panel_retake(r: crate::quality::RetakeReason) -> hardware::RetakeReason {
    match r {
        crate::quality::RetakeReason::Focus => hardware::RetakeReason::Focus,
        crate::quality::RetakeReason::Exposure => hardware::RetakeReason::Exposure,
        crate::quality::RetakeReason::Empty => hardware::RetakeReason::Empty,
    }
}

/// Checks integrity, loads every candidate model and keeps the one `config.model.variant`
/// asks for (or the fastest).
fn load_model(config: &RunConfig) -> Result<LoadedModel, RunError> {
    let files = model_files(&config.model.paths)?;
    let mut digests = Vec::new();
    for file in &files {
        digests.push(
            crate::integrity::verify_model(
                file,
                &config.model.sha256,
                config.model.public_key.as_deref(),
            )
            .map_err(|e| RunError::ModelRefused(e.to_string()))?,
        );
    }
    let refused = |e: VariantError| RunError::ModelRefused(e.to_string());
    let mut models = leukoscope_model::variant::load_all(&files, &ContractOverrides::default())
        .map_err(refused)?;
    let wanted: Variant = config.model.variant.parse().map_err(refused)?;
    let choice = leukoscope_model::variant::choose(
        &models,
        wanted,
        VARIANT_WARMUP_RUNS,
        config.model.threads,
    )
    .map_err(refused)?;
    for t in &choice.timings {
        if let Some(ms) = t.inference_ms_p50 {
            info!(model = %t.path.display(), precision = ?t.precision, "warm-up: {ms:.2} ms per frame (median)");
        }
    }
    let classifier = models.swap_remove(choice.index);
    let sha256 = digests.swap_remove(choice.index);
    let variant = match Precision::of(&classifier) {
        Precision::F32 => "f32".to_string(),
        Precision::Int8 => "int8".to_string(),
    };
    let name = file_name(classifier.path());
    info!(model = name, sha256, variant, "model loaded");
    Ok(LoadedModel {
        classifier,
        sha256,
        variant,
        name,
    })
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Installs SIGINT/SIGTERM handlers that set the returned flag; a second signal exits at once.
pub fn shutdown_flag() -> std::io::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // Order matters: the conditional exit is armed first, so it fires only once the flag
        // is already set, i.e. on the second signal.
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag))?;
        signal_hook::flag::register(signal, Arc::clone(&flag))?;
    }
    Ok(flag)
}
