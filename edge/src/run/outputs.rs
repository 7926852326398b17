//! Everything a result is shown or sent to: the serial line, the panel (LEDs and display),
//! the event lines on standard output, and the button that comes back in.
//!
//! [`open_outputs`] opens them as the config says. Every output gets the same events in the
//! same order; a failing output is logged and dropped from the run (a pulled USB-serial cable
//! must not stop screening).

use std::io::{IsTerminal, Write};
use std::time::Instant;

use hardware::{
    ButtonEvent, Command, ConsolePanel, DeviceStatus, Event, Fault, LineFormat, Panel, PanelKind,
    Phase, SerialLine,
};
use tracing::{error, warn};

use super::RunError;
use crate::config::RunConfig;

/// Reads the button: `now_ms` in, an event out.
pub type ButtonPoll = Box<dyn FnMut(u64) -> Result<Option<ButtonEvent>, hardware::ButtonError>>;

/// The serial port type the device opens.
pub type Port = Box<dyn serialport::SerialPort>;

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

/// The configured button's GPIO line.
#[cfg(feature = "linux")]
fn open_button(line: &hardware::ButtonLineConfig) -> Result<ButtonPoll, RunError> {
    let mut button =
        hardware::linux::open_button(line).map_err(|e| RunError::Hardware(e.to_string()))?;
    Ok(Box::new(move |now| button.poll(now)))
}

/// A configured button is refused: this build has no GPIO.
#[cfg(not(feature = "linux"))]
fn open_button(_line: &hardware::ButtonLineConfig) -> Result<ButtonPoll, RunError> {
    Err(RunError::Hardware(
        "a [button] is configured, but this build has no GPIO support (build edge with --features linux)".into(),
    ))
}

/// The device's outputs and inputs other than frames.
pub struct Outputs {
    serial: Option<SerialLine<Port>>,
    panel: Box<dyn Panel>,
    button: Option<ButtonPoll>,
    events: Option<(Box<dyn Write>, LineFormat)>,
    /// What the panel shows; the run loop edits it, [`Outputs::refresh`] draws it.
    pub status: DeviceStatus,
    clock: Instant,
    last_serial_poll: Option<Instant>,
}

impl Outputs {
    /// Outputs from their parts; `events` are event lines (e.g. standard output).
    pub fn new(
        serial: Option<SerialLine<Port>>,
        panel: Box<dyn Panel>,
        button: Option<ButtonPoll>,
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

    /// Sends an event to the serial line and the event stream.
    pub fn send(&mut self, event: &Event) {
        if let Some(line) = &mut self.serial
            && let Err(e) = line.send(event)
        {
            error!("serial line failed, no more events are sent to it: {e}");
            self.serial = None;
        }
        if let Some((out, format)) = &mut self.events {
            let line = event.to_line(*format);
            if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                // A closed pipe on stdout (e.g. `edge run | head`) ends the event stream only.
                warn!("event output closed: {e}");
                self.events = None;
            }
        }
    }

    /// Answers `LAST n` on the serial line.
    pub fn replay_last(&mut self, n: u16) {
        if let Some(line) = &mut self.serial
            && let Err(e) = line.replay_last(n)
        {
            error!("serial line failed: {e}");
            self.serial = None;
        }
    }

    /// Sends an answer to the serial line only (command replies are not results).
    pub fn reply(&mut self, event: &Event) {
        if let Some(line) = &mut self.serial
            && let Err(e) = line.send(event)
        {
            error!("serial line failed: {e}");
            self.serial = None;
        }
    }

    /// The next serial command, polling the port at most every 50 ms (a poll waits up to the
    /// port's timeout).
    pub fn poll_command(&mut self) -> Option<Command> {
        let line = self.serial.as_mut()?;
        if self
            .last_serial_poll
            .is_some_and(|t| t.elapsed().as_millis() < 50)
        {
            return None;
        }
        match line.poll() {
            Ok(Some(command)) => Some(command),
            Ok(None) => {
                self.last_serial_poll = Some(Instant::now());
                None
            }
            Err(e) => {
                error!("serial line failed, commands are no longer read: {e}");
                self.serial = None;
                None
            }
        }
    }

    /// The button's next event.
    pub fn poll_button(&mut self) -> Option<ButtonEvent> {
        let now = self.now_ms();
        let poll = self.button.as_mut()?;
        match poll(now) {
            Ok(event) => event,
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
