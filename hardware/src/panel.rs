//! The panel: LEDs and display together, behind one call.
//!
//! The device loop calls [`Panel::show`] with the current [`DeviceStatus`] and a monotonic time
//! on every iteration; panels only touch their outputs when something changed (or a blinking
//! LED flips). Three kinds:
//!
//! * [`HardwarePanel`]: real LEDs and a [`TextDisplay`];
//! * [`ConsolePanel`]: the same LEDs and text drawn as a line on any [`std::io::Write`], e.g.
//!   `[g] [a] [R] [B]  | S-0012     F:120 | REFER blast  91% |` — an upper-case letter is a
//!   lit LED, lower-case a dark one, `{R}` a blinking one;
//! * [`NonePanel`]: shows nothing.
//!
//! [`crate::open_panel`] builds the one a [`crate::PanelConfig`] asks for.

use std::io::{self, Write};

use embedded_hal::digital::OutputPin;

use crate::display::{DisplayError, TextDisplay, status_lines};
use crate::lights::{Led, LedMode, LightState, LightsError, StatusLights};
use crate::status::{DeviceStatus, Phase};

/// Updating the panel failed.
#[derive(Debug, thiserror::Error)]
pub enum PanelError {
    /// An LED pin.
    #[error(transparent)]
    Lights(#[from] LightsError),
    /// The display.
    #[error(transparent)]
    Display(#[from] DisplayError),
    /// The console.
    #[error("console panel: {0}")]
    Io(#[from] io::Error),
}

/// Something that shows the device status to the person at the microscope.
pub trait Panel {
    /// Shows `status` at `now_ms` (a monotonic clock, used for blinking). Cheap when nothing
    /// changed; call it on every loop iteration.
    fn show(&mut self, status: &DeviceStatus, now_ms: u64) -> Result<(), PanelError>;
}

impl<P: Panel + ?Sized> Panel for Box<P> {
    fn show(&mut self, status: &DeviceStatus, now_ms: u64) -> Result<(), PanelError> {
        (**self).show(status, now_ms)
    }
}

/// Whether the blue LED shows busy for this status.
fn busy(status: &DeviceStatus) -> bool {
    status.phase == Phase::Screening
}

/// Real LEDs and a display.
pub struct HardwarePanel<G, A, R, B, D> {
    lights: StatusLights<G, A, R, B>,
    display: D,
}

impl<G, A, R, B, D> HardwarePanel<G, A, R, B, D> {
    /// Bundles LEDs and a display (use [`crate::NoDisplay`] for a kit without one).
    pub fn new(lights: StatusLights<G, A, R, B>, display: D) -> Self {
        HardwarePanel { lights, display }
    }

    /// Gives the parts back.
    pub fn into_parts(self) -> (StatusLights<G, A, R, B>, D) {
        (self.lights, self.display)
    }
}

impl<G, A, R, B, D> Panel for HardwarePanel<G, A, R, B, D>
where
    G: OutputPin,
    A: OutputPin,
    R: OutputPin,
    B: OutputPin,
    D: TextDisplay,
{
    /// Updates the LEDs, then the display; a failing LED does not keep the display stale.
    fn show(&mut self, status: &DeviceStatus, now_ms: u64) -> Result<(), PanelError> {
        let lights = self
            .lights
            .set(LightState::from_status(status), busy(status), now_ms);
        let display = self.display.show(&status_lines(status));
        lights?;
        display?;
        Ok(())
    }
}

/// The panel drawn as text: one line per change.
pub struct ConsolePanel<W> {
    out: W,
    color: bool,
    last: Option<String>,
}

impl<W: Write> ConsolePanel<W> {
    /// Draws on `out`; `color` adds ANSI colours (blinking LEDs use the blink attribute).
    pub fn new(out: W, color: bool) -> Self {
        ConsolePanel {
            out,
            color,
            last: None,
        }
    }

    /// Gives the writer back.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// The console rendering of a status, without colours or line end.
pub fn render_console(status: &DeviceStatus) -> String {
    render(status, false)
}

fn render(status: &DeviceStatus, color: bool) -> String {
    let modes = LightState::from_status(status).modes(busy(status));
    let mut leds = Vec::with_capacity(4);
    for (led, mode) in Led::ALL.into_iter().zip(modes) {
        let letter = led.letter();
        let (text, ansi) = match mode {
            LedMode::Off => (format!("[{}]", letter.to_ascii_lowercase()), None),
            LedMode::On => (format!("[{letter}]"), Some("1")),
            LedMode::Blink { .. } => (format!("{{{letter}}}"), Some("1;5")),
        };
        let code = match led {
            Led::Green => "32",
            Led::Amber => "33",
            Led::Red => "31",
            Led::Blue => "34",
        };
        leds.push(match ansi {
            Some(attr) if color => format!("\x1b[{attr};{code}m{text}\x1b[0m"),
            _ => text,
        });
    }
    let [first, second] = status_lines(status);
    format!("{}  | {first} | {second} |", leds.join(" "))
}

impl<W: Write> Panel for ConsolePanel<W> {
    fn show(&mut self, status: &DeviceStatus, _now_ms: u64) -> Result<(), PanelError> {
        let text = render(status, self.color);
        if self.last.as_deref() != Some(text.as_str()) {
            writeln!(self.out, "{text}")?;
            self.out.flush()?;
            self.last = Some(text);
        }
        Ok(())
    }
}

/// A panel that shows nothing (headless runs, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NonePanel;

impl Panel for NonePanel {
    fn show(&mut self, _status: &DeviceStatus, _now_ms: u64) -> Result<(), PanelError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::display::NoDisplay;
    use crate::status::{Fault, LastFrame, Verdict};
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};

    fn refer() -> DeviceStatus {
        DeviceStatus {
            phase: Phase::Screening,
            slide: Some("S-0012".into()),
            frames: 120,
            fields: 30,
            verdict: Some(Verdict::Refer),
            last: Some(LastFrame::Classified {
                label: "blast".into(),
                confidence: 0.91,
            }),
        }
    }

    #[test]
    fn console_shows_leds_and_both_lines() {
        assert_eq!(
            render_console(&refer()),
            "[g] [a] [R] [B]  | S-0012      F:30 | REFER blast  91% |"
        );
        assert_eq!(
            render_console(&DeviceStatus::idle()),
            "[G] [a] [r] [b]  | READY            | no slide         |"
        );
        let mut fault = DeviceStatus::idle();
        fault.phase = Phase::Fault(Fault::ModelRefused);
        assert_eq!(
            render_console(&fault),
            "[g] {A} {R} [b]  | FAULT            | model refused    |"
        );
    }

    #[test]
    fn console_writes_only_on_change_and_colours_on_request() {
        let mut panel = ConsolePanel::new(Vec::new(), false);
        panel.show(&DeviceStatus::starting(), 0).unwrap();
        panel.show(&DeviceStatus::starting(), 500).unwrap();
        panel.show(&DeviceStatus::idle(), 600).unwrap();
        let text = String::from_utf8(panel.into_inner()).unwrap();
        assert_eq!(
            text,
            "[G] [A] [R] [B]  | LEUKOSCOPE       | starting         |\n\
             [G] [a] [r] [b]  | READY            | no slide         |\n"
        );

        let mut panel = ConsolePanel::new(Vec::new(), true);
        panel.show(&refer(), 0).unwrap();
        let text = String::from_utf8(panel.into_inner()).unwrap();
        assert!(text.starts_with("[g] [a] \x1b[1;31m[R]\x1b[0m \x1b[1;34m[B]\x1b[0m  | S-0012"));
    }

    #[test]
    fn hardware_panel_drives_leds_and_display() {
        struct Recording(Vec<[String; 2]>);
        impl TextDisplay for Recording {
            fn show(&mut self, lines: &[String; 2]) -> Result<(), DisplayError> {
                self.0.push(lines.clone());
                Ok(())
            }
        }
        use State::{High as H, Low as L};
        let g = Mock::new(&[T::set(H), T::set(L)]);
        let a = Mock::new(&[T::set(H), T::set(L)]);
        let r = Mock::new(&[T::set(H), T::set(L), T::set(H)]);
        let b = Mock::new(&[T::set(H), T::set(L), T::set(H)]);
        let lights = StatusLights::with_blue(g, a, r, b);
        let mut panel = HardwarePanel::new(lights, Recording(Vec::new()));
        panel.show(&DeviceStatus::starting(), 0).unwrap();
        let mut idle = DeviceStatus::idle();
        idle.phase = Phase::Fault(Fault::CameraLost);
        panel.show(&idle, 100).unwrap(); // red blinks (on), others off
        panel.show(&idle, 600).unwrap(); // red off
        panel.show(&refer(), 700).unwrap(); // red on, blue on
        let (lights, display) = panel.into_parts();
        let (mut g, mut a, mut r, b) = lights.release();
        g.done();
        a.done();
        r.done();
        b.unwrap().done();
        assert_eq!(display.0.len(), 4);
        assert_eq!(display.0[3], status_lines(&refer()));
    }

    #[test]
    fn none_panel_and_boxes() {
        let mut panel: Box<dyn Panel> = Box::new(NonePanel);
        panel.show(&refer(), 0).unwrap();
        let lights = StatusLights::new(crate::NoLed, crate::NoLed, crate::NoLed);
        let mut panel: Box<dyn Panel> = Box::new(HardwarePanel::new(lights, NoDisplay));
        panel.show(&refer(), 0).unwrap();
    }
}
