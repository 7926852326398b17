//! `edge run`: the device program.
//!
//! Start-up (`startup.rs`): open the outputs ([`open_outputs`], so a refusal is visible on the
//! LEDs and the serial line), check the model files' integrity, load them and keep the fastest
//! variant (`model.rs`), self-test (model on a known input, database writable, disk space above
//! the floor, camera opens: `selftest.rs`), then loop ([`Device::run`], in this file):
//!
//! * serial commands and the button are served between frames (`control.rs`);
//! * each frame (`record.rs`): quality gate → model → decision (`pipeline.rs`) → **committed to
//!   SQLite** → only then shown on the panel, sent on the serial line and printed
//!   (`outputs.rs`);
//! * each frame gets its microscope field ([`crate::fields`]); the slide verdict counts fields;
//! * a slide session (`session.rs`) opens with `START`, a button press, or (when `auto_start`)
//!   the first frame of the run; it closes with `STOP`, a button press, an idle gap, the end of
//!   a finite source, shutdown or a fault, and its summary is committed, then sent as a `SLIDE`
//!   event (`verdict=incomplete` after a fault).
//!
//! When a finite source ends (stdin, files), the session closes; the run ends with it, or, with
//! `exit_on_end = false` (`--keep-running`), stays up serving the serial line, the button and
//! the panel until SIGINT/SIGTERM. A watched folder's pictures from before the start that the
//! database already has (same path and sha256) are skipped (`already_recorded`).
//!
//! SIGINT/SIGTERM ([`shutdown_flag`], `signals.rs`) finish the current frame, close the
//! session, flush and exit 0. A full disk, a database or an inference error stops classifying
//! (`faults.rs`: frames are then dropped, never half-recorded), closes the open session with no
//! verdict, says so on every output, and keeps what is stored; the exit status is then non-zero.
//!
//! With `[fleet] broker` set, the database queues every change in its outbox and a publisher
//! thread ([`crate::fleet::publisher`]) sends it to the broker; classifying never waits for it.
//! An outbox full of unsent rows is a fault like a full disk (`ERROR code=outbox_full`).
//!
//! [`bench`](mod@bench) times the same path end to end (`edge bench --pipeline`).

pub mod bench;
mod control;
mod faults;
mod model;
mod outputs;
mod pipeline;
mod record;
mod scale_watch;
pub mod selftest;
mod session;
mod signals;
mod startup;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use hardware::Fault;
use tracing::info;

pub use model::model_files;
pub use outputs::{Outputs, open_outputs};
pub use pipeline::{FrameError, FramePipeline, Framing, Outcome, Processed, scale_framing};
pub use signals::shutdown_flag;

use crate::config::RunConfig;
use crate::fields::FieldMode;
use crate::flagged::FlaggedImages;
use crate::source::{self, FramePolicy, SourceEvent, SourceHandle, SourceSpec};
use crate::store::{StopReason, Store, StoreError};
use model::LoadedModel;
use session::OpenSession;

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
    /// Frames the source dropped because a newer one arrived before the classifier took them
    /// (policy `latest`: cameras, live pipes); 0 with policy `all`.
    pub dropped: u64,
    /// Pictures a watched folder held at start that the database already had (same origin and
    /// sha256): skipped, not counted in `frames`.
    pub already_recorded: u64,
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
    /// How the source's frames map to fields.
    field_mode: FieldMode,
    /// A session was stopped with `STOP` or the button: `auto_start` no longer opens one.
    stopped_by_hand: bool,
    /// Catch-up pictures skipped as already recorded since that was last logged.
    catch_up_unlogged: u64,
    /// The fleet publisher (`[fleet] broker`), sending the outbox in its own thread.
    publisher: Option<crate::fleet::Publisher>,
}

impl Device {
    /// Runs until the source ends (finite sources, with `exit_on_end`; without it the run stays
    /// up after the source's end), or `shutdown` is set (SIGINT/SIGTERM). The source opens with
    /// the configured policy (`[source] policy`), else its default ([`FramePolicy::default_for`]).
    pub fn run(mut self, shutdown: &AtomicBool) -> Result<RunSummary, RunError> {
        let spec: SourceSpec = self
            .config
            .source
            .spec
            .parse()
            .map_err(|e| RunError::Source(format!("{e}")))?;
        let options = self.config.source.options.clone();
        let policy = self
            .config
            .source
            .policy
            .unwrap_or_else(|| FramePolicy::default_for(&spec));
        let source = match source::open_with_policy(&spec, &options, policy) {
            Ok(s) => {
                let detail = format!("{} open", self.config.source.spec);
                selftest::report(&mut self.outputs, "camera", &Ok(detail));
                s
            }
            Err(e) => {
                selftest::report(&mut self.outputs, "camera", &Err(e.to_string()));
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
        if let Ok(spec) = self.config.source.spec.parse::<SourceSpec>() {
            self.field_mode = FieldMode::of_source(&spec);
        }
        let mut ended = false;
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
            if ended {
                // Kept running after the source's end: serve commands, the button and signals.
                std::thread::sleep(Duration::from_millis(50));
                self.outputs.refresh();
                continue;
            }
            match source.recv_timeout(Duration::from_millis(50)) {
                Ok(SourceEvent::Frame(frame)) => self.on_frame(&frame),
                Ok(SourceEvent::Skipped { origin, reason }) => self.skipped(&origin, &reason),
                Ok(SourceEvent::Lost { reason }) => {
                    self.set_fault(Fault::CameraLost, reason);
                }
                Ok(SourceEvent::Restored) => self.camera_restored(),
                Ok(SourceEvent::End) | Err(RecvTimeoutError::Disconnected) => {
                    self.log_catch_up();
                    if self.config.source.exit_on_end {
                        info!("source ended");
                        break StopReason::SourceEnd;
                    }
                    info!(
                        "source ended; still running (exit_on_end = false, --keep-running) \
                         until SIGTERM or SIGINT"
                    );
                    self.close_session(StopReason::SourceEnd);
                    ended = true;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.log_catch_up();
                    self.check_idle();
                }
            }
            self.outputs.refresh();
        };
        self.close_session(end_reason);
        if let Some(publisher) = self.publisher.take() {
            // The closing session's message and what else is unsent, if the broker is there.
            publisher.stop(Duration::from_secs(3));
        }
        self.log_catch_up();
        self.summary.dropped = source.dropped_frames();
        source.stop();
        self.outputs.status.phase = self.phase();
        self.outputs.refresh();
        self.summary.fault = self.fault.as_ref().map(|(_, m)| m.clone());
        Ok(self.summary)
    }
}

impl Device {
    /// Logs how many catch-up pictures were skipped as already recorded, once a batch is over.
    fn log_catch_up(&mut self) {
        if self.catch_up_unlogged > 0 {
            info!(
                "watch catch-up: {} picture(s) already in the database skipped ({} in this run)",
                self.catch_up_unlogged, self.summary.already_recorded
            );
            self.catch_up_unlogged = 0;
        }
    }
}
