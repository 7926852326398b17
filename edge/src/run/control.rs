//! What the operator asks between frames: serial commands (`START`, `STOP`, `STATUS`, …), the
//! button (press: open or close a session; long press: close it, safe to power off), and the
//! device's phase and status as they answer them. `START` answers `OK` with the slide id only
//! when the session is open; otherwise `ERR code=refused`. After `STOP` or a press, sessions
//! open only with `START` or a press for the rest of the run. `LAST n` is answered from the
//! database, so it also covers results recorded before a restart.

use hardware::{ButtonEvent, Command, CommandError, Event, Phase};
use tracing::{info, warn};

use super::Device;
use crate::store::StopReason;

impl Device {
    /// Answers a serial command (on the serial line only).
    pub(super) fn on_command(&mut self, command: Command) {
        match command {
            Command::Help => self.outputs.reply(&Event::Help),
            Command::Ping => self.outputs.reply(&Event::Pong),
            Command::Status => {
                let status = self.status_event();
                self.outputs.reply(&status);
            }
            Command::Start(slide) => {
                let slide = slide.map(|s| s.as_str().to_string());
                let refused = |reason: String| {
                    Event::Err(CommandError::Refused {
                        command: "START",
                        reason,
                    })
                };
                if let Some((_, message)) =
                    self.fault.as_ref().filter(|_| self.classifying_stopped())
                {
                    let event = refused(format!("classifying stopped by a fault: {message}"));
                    self.outputs.reply(&event);
                    return;
                }
                self.close_session(StopReason::Command);
                let event = match self.try_open_session(slide) {
                    Ok(id) => Event::Ok {
                        command: "START",
                        detail: Some(id),
                    },
                    Err(reason) => refused(reason),
                };
                self.outputs.reply(&event);
            }
            Command::Stop => {
                let slide = self.session.as_ref().map(|s| s.slide.clone());
                self.stopped_by_hand = true;
                self.outputs.reply(&Event::Ok {
                    command: "STOP",
                    detail: slide,
                });
                self.close_session(StopReason::Command);
            }
            Command::Last(n) => match self.store.last_events(n.into()) {
                Ok(events) => self.outputs.reply_last(&events),
                Err(e) => {
                    warn!("LAST {n}: {e}");
                    self.outputs.reply(&Event::Err(CommandError::Refused {
                        command: "LAST",
                        reason: format!("the database could not be read: {e}"),
                    }));
                }
            },
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

    /// A press opens or closes a session; a long press closes it for power-off.
    pub(super) fn on_button(&mut self, event: ButtonEvent) {
        self.stopped_by_hand = true;
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

    /// The `STATUS` answer.
    fn status_event(&self) -> Event {
        Event::Status {
            state: self.phase(),
            slide: self.session.as_ref().map(|s| s.slide.clone()),
            frames: self.session.as_ref().map_or(0, |s| s.tally.frames),
            model: self.model.name.clone(),
            uptime_s: self.started.elapsed().as_secs(),
        }
    }

    /// The phase the panel and `STATUS` show: a fault first, then screening while a session
    /// is open, else idle.
    pub(super) fn phase(&self) -> Phase {
        match (&self.fault, &self.session) {
            (Some((fault, _)), _) => Phase::Fault(*fault),
            (None, Some(_)) => Phase::Screening,
            (None, None) => Phase::Idle,
        }
    }
}
