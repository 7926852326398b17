//! Status LEDs: green, amber, red and an optional blue, on any [`OutputPin`]s.
//!
//! | LED | steady | meaning |
//! | --- | --- | --- |
//! | green | on | no blasts seen on this slide, or idle and ready |
//! | amber | on | retake the last frame, or the verdict is uncertain, insufficient or unfamiliar (not validated for these pictures) |
//! | red | on | blasts seen: refer the slide |
//! | amber and red | blink together, 1 Hz | the scan was cut short by a fault: no verdict, rescan |
//! | blue (optional) | on | busy: screening a slide |
//! | all | on | lamp test while starting |
//!
//! Faults blink (the blue LED keeps showing busy):
//!
//! | fault | pattern |
//! | --- | --- |
//! | camera lost | red blinks, 1 Hz |
//! | disk full | amber blinks, 1 Hz |
//! | model refused | red and amber alternate, 2 Hz |
//! | internal error | green, amber and red blink together, 2 Hz |
//!
//! Red outranks amber, amber outranks green: a retake never hides a refer.
//!
//! Nothing here sleeps: [`StatusLights::set`] chooses a pattern and [`StatusLights::tick`],
//! called from the device loop, writes the pins whose level changed.

use embedded_hal::digital::{Error as _, ErrorKind, ErrorType, OutputPin};

use crate::status::{DeviceStatus, Fault, LastFrame, Phase, Verdict};

/// One of the four LEDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Led {
    /// Green: ready / no blasts.
    Green,
    /// Amber: retake / uncertain.
    Amber,
    /// Red: blasts seen, refer.
    Red,
    /// Blue: busy.
    Blue,
}

impl Led {
    /// All LEDs, in the order used by [`LightState::modes`].
    pub const ALL: [Led; 4] = [Led::Green, Led::Amber, Led::Red, Led::Blue];

    /// The LED's initial, e.g. `'G'`.
    pub fn letter(self) -> char {
        match self {
            Led::Green => 'G',
            Led::Amber => 'A',
            Led::Red => 'R',
            Led::Blue => 'B',
        }
    }
}

/// What the green, amber and red LEDs show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LightState {
    /// All off.
    #[default]
    Off,
    /// Green: no blasts, or idle and ready.
    Ready,
    /// Amber: retake or uncertain.
    Uncertain,
    /// Red: blasts seen, refer.
    Refer,
    /// Amber and red blink together: the scan was cut short by a fault, no verdict.
    Incomplete,
    /// A blinking fault pattern.
    Fault(Fault),
    /// Every LED on (including blue), to check the lamps at start-up.
    LampTest,
}

/// How one LED behaves over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedMode {
    /// Dark.
    Off,
    /// Lit.
    On,
    /// Lit while `elapsed % period_ms` is in `on_from_ms..on_until_ms`, where `elapsed` counts
    /// from the moment the pattern was set.
    Blink {
        /// Length of one cycle.
        period_ms: u32,
        /// Start of the lit part of the cycle.
        on_from_ms: u32,
        /// End (exclusive) of the lit part of the cycle.
        on_until_ms: u32,
    },
}

impl LedMode {
    const SLOW: LedMode = LedMode::Blink {
        period_ms: 1000,
        on_from_ms: 0,
        on_until_ms: 500,
    };
    const FAST: LedMode = LedMode::Blink {
        period_ms: 500,
        on_from_ms: 0,
        on_until_ms: 250,
    };
    const FAST_OTHER: LedMode = LedMode::Blink {
        period_ms: 500,
        on_from_ms: 250,
        on_until_ms: 500,
    };

    /// Whether the LED is lit `elapsed_ms` after the pattern was set.
    pub fn level(self, elapsed_ms: u64) -> bool {
        match self {
            LedMode::Off => false,
            LedMode::On => true,
            LedMode::Blink {
                period_ms,
                on_from_ms,
                on_until_ms,
            } => {
                let t = elapsed_ms % u64::from(period_ms.max(1));
                (u64::from(on_from_ms)..u64::from(on_until_ms)).contains(&t)
            }
        }
    }
}

impl LightState {
    /// The state for a device status: fault and lamp test first, then red over amber over green.
    pub fn from_status(status: &DeviceStatus) -> Self {
        match status.phase {
            Phase::Starting => return LightState::LampTest,
            Phase::Fault(fault) => return LightState::Fault(fault),
            Phase::Idle | Phase::Screening => {}
        }
        let retake = matches!(status.last, Some(LastFrame::Retake(_)));
        match status.verdict {
            Some(Verdict::Incomplete) => LightState::Incomplete,
            Some(Verdict::Refer) => LightState::Refer,
            Some(Verdict::Uncertain | Verdict::Insufficient | Verdict::Unfamiliar) => {
                LightState::Uncertain
            }
            _ if retake => LightState::Uncertain,
            Some(Verdict::NoBlasts) => LightState::Ready,
            None if status.phase == Phase::Idle => LightState::Ready,
            None => LightState::Off,
        }
    }

    /// The mode of each LED, in [`Led::ALL`] order; `busy` lights the blue LED.
    pub fn modes(self, busy: bool) -> [LedMode; 4] {
        use LedMode::{Off, On};
        let blue = if busy { On } else { Off };
        match self {
            LightState::Off => [Off, Off, Off, blue],
            LightState::Ready => [On, Off, Off, blue],
            LightState::Uncertain => [Off, On, Off, blue],
            LightState::Refer => [Off, Off, On, blue],
            LightState::Incomplete => [Off, LedMode::SLOW, LedMode::SLOW, blue],
            LightState::LampTest => [On, On, On, On],
            LightState::Fault(Fault::CameraLost) => [Off, Off, LedMode::SLOW, blue],
            // An outbox full of unsent results stops recording like a full disk, and shows so.
            LightState::Fault(Fault::DiskFull | Fault::OutboxFull) => {
                [Off, LedMode::SLOW, Off, blue]
            }
            LightState::Fault(Fault::ModelRefused) => {
                [Off, LedMode::FAST_OTHER, LedMode::FAST, blue]
            }
            LightState::Fault(Fault::Internal) => {
                [LedMode::FAST, LedMode::FAST, LedMode::FAST, blue]
            }
        }
    }
}

/// A pin that writing to does nothing: the blue LED of a kit that has none.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLed;

impl ErrorType for NoLed {
    type Error = core::convert::Infallible;
}

impl OutputPin for NoLed {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Writing an LED pin failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{led:?} LED pin: {kind}")]
pub struct LightsError {
    /// Which LED.
    pub led: Led,
    /// What the pin driver said.
    pub kind: ErrorKind,
}

/// The status LEDs. Green, amber and red are required; blue is optional.
pub struct StatusLights<G, A, R, B = NoLed> {
    green: G,
    amber: A,
    red: R,
    blue: Option<B>,
    active_low: bool,
    state: LightState,
    busy: bool,
    since_ms: u64,
    // What each pin was last successfully set to (lit or not); None forces a write.
    written: [Option<bool>; 4],
}

impl<G, A, R> StatusLights<G, A, R, NoLed>
where
    G: OutputPin,
    A: OutputPin,
    R: OutputPin,
{
    /// Three LEDs, no blue one. All pins are driven on the first [`tick`](Self::tick) or
    /// [`set`](Self::set).
    pub fn new(green: G, amber: A, red: R) -> Self {
        Self::from_pins(green, amber, red, None)
    }
}

impl<G, A, R, B> StatusLights<G, A, R, B>
where
    G: OutputPin,
    A: OutputPin,
    R: OutputPin,
    B: OutputPin,
{
    /// Four LEDs.
    pub fn with_blue(green: G, amber: A, red: R, blue: B) -> Self {
        Self::from_pins(green, amber, red, Some(blue))
    }

    /// Three or four LEDs, as the board has them.
    pub fn from_pins(green: G, amber: A, red: R, blue: Option<B>) -> Self {
        StatusLights {
            green,
            amber,
            red,
            blue,
            active_low: false,
            state: LightState::Off,
            busy: false,
            since_ms: 0,
            written: [None; 4],
        }
    }

    /// LEDs wired from the supply to the pin light when the pin is low.
    pub fn active_low(mut self, active_low: bool) -> Self {
        self.active_low = active_low;
        self
    }

    /// The current state and busy flag.
    pub fn state(&self) -> (LightState, bool) {
        (self.state, self.busy)
    }

    /// Shows `state` (and busy on the blue LED) and writes the pins. Setting the state it already
    /// has keeps the blink phase, so this can be called on every loop iteration.
    pub fn set(&mut self, state: LightState, busy: bool, now_ms: u64) -> Result<(), LightsError> {
        if (state, busy) != (self.state, self.busy) {
            if state != self.state {
                self.since_ms = now_ms;
            }
            self.state = state;
            self.busy = busy;
        }
        self.tick(now_ms)
    }

    /// Writes the pins whose level changed at `now_ms` (blinking). Never blocks.
    pub fn tick(&mut self, now_ms: u64) -> Result<(), LightsError> {
        let elapsed = now_ms.saturating_sub(self.since_ms);
        let modes = self.state.modes(self.busy);
        for (i, led) in Led::ALL.into_iter().enumerate() {
            let lit = modes[i].level(elapsed);
            if self.written[i] == Some(lit) {
                continue;
            }
            let high = lit != self.active_low;
            let result = match led {
                Led::Green => drive(&mut self.green, high),
                Led::Amber => drive(&mut self.amber, high),
                Led::Red => drive(&mut self.red, high),
                Led::Blue => match self.blue.as_mut() {
                    Some(pin) => drive(pin, high),
                    None => Ok(()),
                },
            };
            match result {
                Ok(()) => self.written[i] = Some(lit),
                Err(kind) => {
                    self.written[i] = None;
                    return Err(LightsError { led, kind });
                }
            }
        }
        Ok(())
    }

    /// Gives the pins back.
    pub fn release(self) -> (G, A, R, Option<B>) {
        (self.green, self.amber, self.red, self.blue)
    }
}

fn drive<P: OutputPin>(pin: &mut P, high: bool) -> Result<(), ErrorKind> {
    let result = if high { pin.set_high() } else { pin.set_low() };
    result.map_err(|e| e.kind())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::RetakeReason;
    use embedded_hal_mock::eh1::MockError;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};

    fn pins(g: &[State], a: &[State], r: &[State]) -> (Mock, Mock, Mock) {
        let m = |s: &[State]| Mock::new(&s.iter().map(|&s| T::set(s)).collect::<Vec<_>>());
        (m(g), m(a), m(r))
    }

    fn done<B: OutputPin>(lights: StatusLights<Mock, Mock, Mock, B>) {
        let (mut g, mut a, mut r, _) = lights.release();
        g.done();
        a.done();
        r.done();
    }

    use State::{High as H, Low as L};

    #[test]
    fn first_tick_drives_every_pin_off() {
        let (g, a, r) = pins(&[L], &[L], &[L]);
        let mut lights = StatusLights::new(g, a, r);
        lights.tick(0).unwrap();
        lights.tick(10).unwrap();
        done(lights);
    }

    #[test]
    fn steady_states_write_only_changed_pins() {
        // off -> ready -> refer -> refer (no writes) -> uncertain
        let (g, a, r) = pins(&[L, H, L], &[L, H], &[L, H, L]);
        let mut lights = StatusLights::new(g, a, r);
        lights.tick(0).unwrap();
        lights.set(LightState::Ready, false, 5).unwrap();
        lights.set(LightState::Refer, false, 10).unwrap();
        lights.set(LightState::Refer, false, 2000).unwrap();
        lights.tick(5000).unwrap();
        lights.set(LightState::Uncertain, false, 6000).unwrap();
        assert_eq!(lights.state(), (LightState::Uncertain, false));
        done(lights);
    }

    #[test]
    fn blue_shows_busy_and_lamp_test_lights_all() {
        let (g, a, r) = pins(&[H, L], &[H, L], &[H, L]);
        let b = Mock::new(&[T::set(H), T::set(L), T::set(H)]);
        let mut lights = StatusLights::with_blue(g, a, r, b);
        lights.set(LightState::LampTest, false, 0).unwrap();
        lights.set(LightState::Off, false, 1000).unwrap();
        lights.set(LightState::Off, true, 1100).unwrap();
        let (mut g, mut a, mut r, b) = lights.release();
        g.done();
        a.done();
        r.done();
        b.unwrap().done();
    }

    #[test]
    fn camera_lost_blinks_red_at_one_hertz_from_the_moment_it_is_set() {
        let (g, a, r) = pins(&[L], &[L], &[H, L, H, L]);
        let mut lights = StatusLights::new(g, a, r);
        lights
            .set(LightState::Fault(Fault::CameraLost), false, 10_000)
            .unwrap(); // red on
        lights.tick(10_499).unwrap(); // still on: no write
        lights.tick(10_500).unwrap(); // off
        lights.tick(10_900).unwrap(); // no write
        lights.tick(11_000).unwrap(); // on
        lights.tick(11_700).unwrap(); // off
        // Setting the same fault again keeps the phase.
        lights
            .set(LightState::Fault(Fault::CameraLost), false, 11_800)
            .unwrap();
        done(lights);
    }

    #[test]
    fn model_refused_alternates_red_and_amber() {
        let (g, a, r) = pins(&[L], &[L, H, L], &[H, L, H]);
        let mut lights = StatusLights::new(g, a, r);
        lights
            .set(LightState::Fault(Fault::ModelRefused), false, 0)
            .unwrap();
        lights.tick(250).unwrap();
        lights.tick(500).unwrap();
        done(lights);
    }

    #[test]
    fn active_low_inverts_levels() {
        let (g, a, r) = pins(&[L], &[H], &[H]);
        let mut lights = StatusLights::new(g, a, r).active_low(true);
        lights.set(LightState::Ready, false, 0).unwrap();
        done(lights);
    }

    #[test]
    fn a_failed_write_is_reported_and_retried() {
        let g = Mock::new(&[
            T::set(H).with_error(MockError::Io(std::io::ErrorKind::Other)),
            T::set(H),
        ]);
        let a = Mock::new(&[T::set(L)]);
        let r = Mock::new(&[T::set(L)]);
        let mut lights = StatusLights::new(g, a, r);
        let err = lights.set(LightState::Ready, false, 0).unwrap_err();
        assert_eq!(err.led, Led::Green);
        lights.tick(1).unwrap();
        done(lights);
    }

    #[test]
    fn status_maps_to_lights_with_red_over_amber_over_green() {
        let mut s = DeviceStatus::starting();
        assert_eq!(LightState::from_status(&s), LightState::LampTest);
        s.phase = Phase::Idle;
        assert_eq!(LightState::from_status(&s), LightState::Ready);
        s.phase = Phase::Screening;
        assert_eq!(LightState::from_status(&s), LightState::Off);
        s.verdict = Some(Verdict::NoBlasts);
        assert_eq!(LightState::from_status(&s), LightState::Ready);
        s.last = Some(LastFrame::Retake(RetakeReason::Focus));
        assert_eq!(LightState::from_status(&s), LightState::Uncertain);
        s.verdict = Some(Verdict::Refer);
        assert_eq!(LightState::from_status(&s), LightState::Refer);
        s.last = None;
        s.verdict = Some(Verdict::Unfamiliar);
        assert_eq!(LightState::from_status(&s), LightState::Uncertain);
        s.verdict = Some(Verdict::Refer);
        s.phase = Phase::Idle;
        s.verdict = Some(Verdict::Incomplete);
        assert_eq!(LightState::from_status(&s), LightState::Incomplete);
        let modes = LightState::Incomplete.modes(false);
        assert_eq!(modes[0], LedMode::Off);
        assert!(modes[1] == modes[2] && matches!(modes[1], LedMode::Blink { .. }));
        s.phase = Phase::Fault(Fault::DiskFull);
        assert_eq!(
            LightState::from_status(&s),
            LightState::Fault(Fault::DiskFull)
        );
    }

    #[test]
    fn every_fault_pattern_blinks_something() {
        for fault in [
            Fault::CameraLost,
            Fault::DiskFull,
            Fault::OutboxFull,
            Fault::ModelRefused,
            Fault::Internal,
        ] {
            let modes = LightState::Fault(fault).modes(false);
            let levels = |t| modes.map(|m| m.level(t));
            assert_ne!(levels(0), levels(750), "{fault:?}");
        }
    }
}
