//! Building the drivers on a Linux board (Raspberry Pi, Jetson) with `linux-embedded-hal`.
//!
//! GPIO goes through the GPIO character device (`/dev/gpiochipN`) with the **v1** uAPI that
//! `gpio-cdev` uses, so the kernel needs `CONFIG_GPIO_CDEV_V1=y` (Raspberry Pi OS and
//! JetPack kernels have it; some newer distribution kernels turn it off). Lines are chip line
//! offsets (`gpioinfo` lists them), not header pin numbers. The v1 uAPI cannot set pull
//! resistors: give the button an external pull-up, or set one in the device tree /
//! `config.txt` (`gpio=24=ip,pu` on a Pi).
//!
//! The button is read from the line's edge events (`GPIO_GET_LINEEVENT`, both edges), stamped
//! by the kernel, on its own thread ([`open_button`]). The v1 uAPI has no kernel debounce
//! (that came with v2's `debounce_period_us`, which `gpio-cdev` 0.6 does not speak): bounces
//! arrive as edges and are debounced in software from their timestamps
//! ([`Debouncer`](crate::button::Debouncer)).
//!
//! The display is on `/dev/i2cN` (`i2c-dev` module loaded, the user in the `i2c` group).

use std::os::fd::AsFd;
use std::time::Duration;

use linux_embedded_hal::gpio_cdev::{
    Chip, EventRequestFlags, EventType, LineEventHandle, LineRequestFlags,
};
use linux_embedded_hal::{CdevPin, Delay, I2cdev};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::time::{ClockId, clock_gettime};

use crate::button::{ButtonError, ButtonEvents, Edge, EdgeSource};
use crate::config::{
    ButtonLineConfig, DisplayConfig, DisplayKind, LedsConfig, OpenError, PanelConfig,
};
use crate::display::{Hd44780Display, NoDisplay, Ssd1306Display, TextDisplay};
use crate::lights::StatusLights;
use crate::panel::{HardwarePanel, Panel};

/// The LEDs of a Linux board.
pub type LinuxLights = StatusLights<CdevPin, CdevPin, CdevPin, CdevPin>;

const CONSUMER: &str = "leukoscope";

/// A GPIO error of `line` of `chip`, naming both.
fn gpio_error(
    chip: &str,
    line: u32,
) -> impl Fn(linux_embedded_hal::gpio_cdev::Error) -> OpenError + Copy + '_ {
    move |source| OpenError::Gpio {
        chip: chip.to_string(),
        line,
        source: Box::new(source),
    }
}

fn request(
    chip: &str,
    line: u32,
    flags: LineRequestFlags,
    value: u8,
) -> Result<CdevPin, OpenError> {
    let gpio = gpio_error(chip, line);
    let handle = Chip::new(chip)
        .and_then(|mut c| c.get_line(line))
        .and_then(|l| l.request(flags, value, CONSUMER))
        .map_err(gpio)?;
    CdevPin::new(handle).map_err(gpio)
}

/// Requests the LED lines as outputs, all dark.
pub fn open_lights(config: &LedsConfig) -> Result<LinuxLights, OpenError> {
    let dark = u8::from(config.active_low);
    let out = |line| request(&config.chip, line, LineRequestFlags::OUTPUT, dark);
    let green = out(config.green)?;
    let amber = out(config.amber)?;
    let red = out(config.red)?;
    let blue = config.blue.map(out).transpose()?;
    Ok(StatusLights::from_pins(green, amber, red, blue).active_low(config.active_low))
}

/// A GPIO line's edge events (GPIO character device, v1 uAPI), as an [`EdgeSource`].
///
/// The v1 uAPI has no kernel debounce: every bounce is an edge, so give the edges to a
/// [`Debouncer`](crate::button::Debouncer) (as [`ButtonEvents`] does). The kernel stamps each
/// edge when it happens, on `CLOCK_MONOTONIC` (kernels before 5.7: `CLOCK_REALTIME`, which is
/// detected from the first edge and then used for [`EdgeSource::now_ns`] too).
#[derive(Debug)]
pub struct GpioEdges {
    handle: LineEventHandle,
    clock: ClockId,
}

impl GpioEdges {
    /// Requests `line` of `chip` as an input with events on both edges.
    pub fn open(chip: &str, line: u32) -> Result<Self, OpenError> {
        let gpio = gpio_error(chip, line);
        let handle = Chip::new(chip)
            .and_then(|mut c| c.get_line(line))
            .and_then(|l| {
                l.events(
                    LineRequestFlags::INPUT,
                    EventRequestFlags::BOTH_EDGES,
                    CONSUMER,
                )
            })
            .map_err(gpio)?;
        Ok(GpioEdges {
            handle,
            clock: ClockId::CLOCK_MONOTONIC,
        })
    }
}

fn clock_ns(clock: ClockId) -> u64 {
    clock_gettime(clock).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(t.tv_nsec()).unwrap_or(0)
    })
}

impl EdgeSource for GpioEdges {
    fn next_edge(&mut self, timeout: Duration) -> Result<Option<Edge>, ButtonError> {
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.handle.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(ButtonError(Box::new(e))),
        }
        let event = self
            .handle
            .get_event()
            .map_err(|e| ButtonError(Box::new(e)))?;
        let timestamp_ns = event.timestamp();
        // More than a day away from the monotonic clock: a kernel before 5.7 stamps realtime.
        if self.clock == ClockId::CLOCK_MONOTONIC
            && timestamp_ns.abs_diff(clock_ns(ClockId::CLOCK_MONOTONIC)) > 86_400 * 1_000_000_000
        {
            self.clock = ClockId::CLOCK_REALTIME;
        }
        Ok(Some(Edge {
            timestamp_ns,
            rising: event.event_type() == EventType::RisingEdge,
        }))
    }

    fn now_ns(&mut self) -> u64 {
        clock_ns(self.clock)
    }
}

/// Requests the button line's edge events and starts the thread that debounces them.
pub fn open_button(config: &ButtonLineConfig) -> Result<ButtonEvents, OpenError> {
    let edges = GpioEdges::open(&config.chip, config.line)?;
    ButtonEvents::spawn(edges, config.button()).map_err(|e| OpenError::Gpio {
        chip: config.chip.clone(),
        line: config.line,
        source: e.0,
    })
}

/// Opens the I2C bus and initialises the display on it.
pub fn open_display(config: &DisplayConfig) -> Result<Box<dyn TextDisplay>, OpenError> {
    let bus = I2cdev::new(&config.bus).map_err(|source| OpenError::I2c {
        bus: config.bus.clone(),
        source: Box::new(source),
    })?;
    Ok(match config.kind {
        DisplayKind::Hd44780 => Box::new(Hd44780Display::new(bus, config.address(), Delay)?),
        DisplayKind::Ssd1306 => Box::new(Ssd1306Display::new(bus, config.address())?),
    })
}

/// The LEDs and (if configured) the display of `config`.
pub fn open_hardware_panel(config: &PanelConfig) -> Result<Box<dyn Panel>, OpenError> {
    let leds = config.leds.as_ref().ok_or(OpenError::Missing("leds"))?;
    let lights = open_lights(leds)?;
    let display: Box<dyn TextDisplay> = match &config.display {
        Some(display) => open_display(display)?,
        None => Box::new(NoDisplay),
    };
    Ok(Box::new(HardwarePanel::new(lights, display)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PanelKind;

    fn leds(chip: &str) -> LedsConfig {
        LedsConfig {
            chip: chip.into(),
            green: 0,
            amber: 1,
            red: 2,
            blue: None,
            active_low: false,
        }
    }

    #[test]
    fn a_missing_gpio_chip_is_an_error_that_names_it() {
        let err = open_lights(&leds("/dev/leukoscope-no-gpiochip"))
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(
            text.contains("/dev/leukoscope-no-gpiochip line 0"),
            "{text}"
        );
        assert!(text.contains("CONFIG_GPIO_CDEV_V1"), "{text}");
        let button = ButtonLineConfig {
            chip: "/dev/leukoscope-no-gpiochip".into(),
            line: 7,
            active_low: true,
            debounce_ms: 30,
            long_press_ms: 1500,
        };
        assert!(matches!(
            open_button(&button),
            Err(OpenError::Gpio { line: 7, .. })
        ));
    }

    #[test]
    fn a_missing_i2c_bus_is_an_error() {
        let config = DisplayConfig {
            kind: DisplayKind::Ssd1306,
            bus: "/dev/leukoscope-no-i2c".into(),
            address: None,
        };
        assert!(matches!(open_display(&config), Err(OpenError::I2c { .. })));
    }

    #[test]
    fn the_hardware_panel_needs_leds() {
        let mut config = PanelConfig {
            kind: PanelKind::Hardware,
            ..PanelConfig::default()
        };
        assert!(matches!(
            open_hardware_panel(&config),
            Err(OpenError::Missing("leds"))
        ));
        config.leds = Some(leds("/dev/leukoscope-no-gpiochip"));
        assert!(matches!(
            open_hardware_panel(&config),
            Err(OpenError::Gpio { .. })
        ));
    }
}
