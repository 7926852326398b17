//! Everything a result is shown or sent to: the serial line, the panel (LEDs and display),
//! the event lines on standard output, and the button that comes back in.
//!
//! [`open_outputs`] opens them as the config says. Every output gets the same events in the
//! same order. The serial line is reopened with backoff after an error (a pulled USB-serial
//! cable must not stop screening); another failing output is logged and dropped from the run.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use hardware::{
    ButtonEvent, ButtonEvents, Command, ConsolePanel, DeviceStatus, Event, Fault, LineFormat,
    Panel, PanelKind, Phase, PortOpener, SerialLink,
};
use tracing::{error, warn};

use super::RunError;
use crate::config::RunConfig;

/// Opens the panel, button and serial line of `config`. Events go to `events` too (standard
/// output for `edge run`), in the serial line's format. A serial port that does not open is
/// logged and tried again with backoff (it may be plugged in later); a panel or button that
/// does not open is an error.
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
    let serial = config.serial.as_ref().map(|serial| {
        let mut link = SerialLink::new(
            PortOpener::new(serial.clone()),
            serial.format,
            serial.retry_max_ms,
        );
        if let Err(e) = link.connect(0) {
            warn!(
                "serial line {}: {e}; retrying with backoff (up to every {} ms)",
                serial.path, serial.retry_max_ms
            );
        }
        link
    });
    let button = match &config.button {
        Some(line) => Some(open_button(line)?),
        None => None,
    };
    let format = config
        .serial
        .as_ref()
        .map(|s| s.format)
        .or(config.events_format)
        .unwrap_or(LineFormat::Text);
    Ok(Outputs::new(
        serial,
        panel,
        button,
        events.map(|w| (w, format)),
    ))
}

/// The configured button's GPIO line, read on its own thread.
#[cfg(feature = "linux")]
fn open_button(line: &hardware::ButtonLineConfig) -> Result<ButtonEvents, RunError> {
    hardware::linux::open_button(line).map_err(|e| RunError::Hardware(e.to_string()))
}

/// A configured button is refused: this build has no GPIO.
#[cfg(not(feature = "linux"))]
fn open_button(_line: &hardware::ButtonLineConfig) -> Result<ButtonEvents, RunError> {
    Err(RunError::Hardware(
        "a [button] is configured, but this build has no GPIO support (build edge with --features linux)".into(),
    ))
}

/// The device's outputs and inputs other than frames.
pub struct Outputs {
    serial: Option<SerialLink<PortOpener>>,
    panel: Box<dyn Panel>,
    button: Option<ButtonEvents>,
    events: Option<(Box<dyn Write>, LineFormat)>,
    /// What the panel shows; the run loop edits it, [`Outputs::refresh`] draws it.
    pub status: DeviceStatus,
    clock: Instant,
    last_serial_poll: Option<Instant>,
}

impl Outputs {
    /// Outputs from their parts; `events` are event lines (e.g. standard output).
    pub fn new(
        serial: Option<SerialLink<PortOpener>>,
        panel: Box<dyn Panel>,
        button: Option<ButtonEvents>,
        events: Option<(Box<dyn Write>, LineFormat)>,
    ) -> Self {
        Outputs {
            serial,
            panel,
            button,
            events,
            status: DeviceStatus::starting(),
            clock: Instant::now(),
            last_serial_poll: None,
        }
    }

    /// Milliseconds since the outputs were made (the panel's blink clock).
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Sends an event to the serial line and the event stream. A closed serial line drops it
    /// (the link reopens the port with backoff).
    pub fn send(&mut self, event: &Event) {
        self.reply(event);
        if let Some((out, format)) = &mut self.events {
            let line = event.to_line(*format);
            if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                // A closed pipe on stdout (e.g. `edge run | head`) ends the event stream only.
                warn!("event output closed: {e}");
                self.events = None;
            }
        }
    }

    /// Answers `LAST n` on the serial line with `events` (from the database).
    pub fn reply_last(&mut self, events: &[Event]) {
        let now = self.now_ms();
        if let Some(line) = &mut self.serial {
            line.send_last(events, now);
        }
    }

    /// Sends an answer to the serial line only (command replies are not results).
    pub fn reply(&mut self, event: &Event) {
        let now = self.now_ms();
        if let Some(line) = &mut self.serial {
            line.send(event, now);
        }
    }

    /// The next serial command, polling the port at most every 50 ms (a poll waits up to the
    /// port's timeout). A closed port is reopened here when its backoff says so.
    pub fn poll_command(&mut self) -> Option<Command> {
        let now = self.now_ms();
        let line = self.serial.as_mut()?;
        if self
            .last_serial_poll
            .is_some_and(|t| t.elapsed().as_millis() < 50)
        {
            return None;
        }
        let command = line.poll(now);
        if command.is_none() {
            self.last_serial_poll = Some(Instant::now());
        }
        command
    }

    /// The button's next event, if one is waiting (never blocks: the button is read on its
    /// own thread).
    pub fn poll_button(&mut self) -> Option<ButtonEvent> {
        let button = self.button.as_ref()?;
        match button.try_recv() {
            Ok(event) => event.map(|e| e.event),
            Err(e) => {
                error!("button failed, it is no longer read: {e}");
                self.button = None;
                None
            }
        }
    }

    /// Shows `fault` on the panel and sends it as an `ERROR` event.
    pub(super) fn show_fault(&mut self, fault: Fault, message: String) {
        self.status.phase = Phase::Fault(fault);
        self.send(&Event::Error {
            code: fault,
            message,
        });
        self.refresh();
    }

    /// Draws the status on the panel (cheap when unchanged).
    pub fn refresh(&mut self) {
        let now = self.now_ms();
        if let Err(e) = self.panel.show(&self.status, now) {
            warn!("panel: {e}");
        }
    }
}
