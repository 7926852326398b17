//! One push button on any [`InputPin`], debounced, with short and long presses.
//!
//! [`Button::poll`] is called from the device loop with the current time; it reads the pin once
//! and never sleeps. A level must hold for `debounce_ms` before it counts. A short press is
//! reported when the button is released; a long press is reported as soon as the button has
//! been held for `long_press_ms` (and its release is then silent), so one push gives exactly
//! one event.

use embedded_hal::digital::{Error as _, ErrorKind, InputPin};

/// Timing and polarity of a button.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ButtonConfig {
    /// How long a level must be stable to count, in ms (default 30).
    pub debounce_ms: u32,
    /// How long a hold is a long press, in ms (default 1500).
    pub long_press_ms: u32,
    /// The pin reads low while pressed (button to ground with a pull-up); default true.
    pub active_low: bool,
}

impl Default for ButtonConfig {
    fn default() -> Self {
        ButtonConfig {
            debounce_ms: 30,
            long_press_ms: 1500,
            active_low: true,
        }
    }
}

/// What the button did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonEvent {
    /// Pressed and released before the long-press time.
    Press,
    /// Held for the long-press time (reported while still held).
    LongPress,
}

/// Reading the button pin failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("button pin: {0}")]
pub struct ButtonError(pub ErrorKind);

/// A debounced button.
pub struct Button<P> {
    pin: P,
    config: ButtonConfig,
    pressed: bool,
    candidate: bool,
    candidate_since: u64,
    pressed_since: u64,
    long_reported: bool,
}

impl<P: InputPin> Button<P> {
    /// A button that starts out released.
    pub fn new(pin: P, config: ButtonConfig) -> Self {
        Button {
            pin,
            config,
            pressed: false,
            candidate: false,
            candidate_since: 0,
            pressed_since: 0,
            long_reported: false,
        }
    }

    /// Whether the debounced button is down.
    pub fn is_pressed(&self) -> bool {
        self.pressed
    }

    /// Reads the pin once at `now_ms` (a monotonic clock) and reports at most one event.
    pub fn poll(&mut self, now_ms: u64) -> Result<Option<ButtonEvent>, ButtonError> {
        let high = self.pin.is_high().map_err(|e| ButtonError(e.kind()))?;
        let raw = high != self.config.active_low;
        if raw != self.candidate {
            self.candidate = raw;
            self.candidate_since = now_ms;
        }
        let stable_for = now_ms.saturating_sub(self.candidate_since);
        if self.candidate != self.pressed && stable_for >= u64::from(self.config.debounce_ms) {
            self.pressed = self.candidate;
            if self.pressed {
                self.pressed_since = self.candidate_since;
                self.long_reported = false;
            } else if !self.long_reported {
                return Ok(Some(ButtonEvent::Press));
            }
        }
        let held = now_ms.saturating_sub(self.pressed_since);
        if self.pressed && !self.long_reported && held >= u64::from(self.config.long_press_ms) {
            self.long_reported = true;
            return Ok(Some(ButtonEvent::LongPress));
        }
        Ok(None)
    }

    /// Gives the pin back.
    pub fn release(self) -> P {
        self.pin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::MockError;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};

    /// Polls a mocked pin at the given (time, level) samples and collects the events.
    fn run(config: ButtonConfig, samples: &[(u64, State)]) -> Vec<(u64, ButtonEvent)> {
        let expected: Vec<_> = samples.iter().map(|&(_, s)| Transaction::get(s)).collect();
        let mut pin = Mock::new(&expected);
        let mut button = Button::new(pin.clone(), config);
        let mut events = Vec::new();
        for &(t, _) in samples {
            if let Some(e) = button.poll(t).unwrap() {
                events.push((t, e));
            }
        }
        pin.done();
        events
    }

    use State::{High as H, Low as L};

    fn cfg() -> ButtonConfig {
        ButtonConfig::default()
    }

    #[test]
    fn short_press_is_reported_on_release() {
        let samples = [
            (0, H),
            (10, L),
            (20, L),
            (40, L),
            (100, H),
            (120, H),
            (130, H),
        ];
        assert_eq!(run(cfg(), &samples), vec![(130, ButtonEvent::Press)]);
    }

    #[test]
    fn bounces_shorter_than_the_debounce_time_are_ignored() {
        let samples = [
            (0, L),
            (5, H),
            (10, L),
            (15, H),
            (20, L),
            (25, H),
            (60, H),
            (100, H),
        ];
        assert_eq!(run(cfg(), &samples), vec![]);
    }

    #[test]
    fn long_press_fires_once_while_held_and_release_is_silent() {
        let samples = [
            (0, L),
            (30, L),
            (1000, L),
            (1499, L),
            (1500, L),
            (2500, L),
            (2600, H),
            (2700, H),
        ];
        assert_eq!(run(cfg(), &samples), vec![(1500, ButtonEvent::LongPress)]);
    }

    #[test]
    fn active_high_and_custom_timing() {
        let config = ButtonConfig {
            debounce_ms: 5,
            long_press_ms: 200,
            active_low: false,
        };
        let samples = [
            (0, H),
            (5, H),
            (50, L),
            (55, L),
            (100, H),
            (300, H),
            (301, L),
        ];
        assert_eq!(
            run(config, &samples),
            vec![(55, ButtonEvent::Press), (300, ButtonEvent::LongPress)]
        );
    }

    #[test]
    fn pin_errors_are_reported() {
        let mut pin =
            Mock::new(&[Transaction::get(H).with_error(MockError::Io(std::io::ErrorKind::Other))]);
        let mut button = Button::new(pin.clone(), cfg());
        assert!(button.poll(0).is_err());
        assert!(!button.is_pressed());
        pin.done();
    }
}
