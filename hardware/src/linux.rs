//! Building the drivers on a Linux board (Raspberry Pi, Jetson) with `linux-embedded-hal`.
//!
//! GPIO goes through the GPIO character device (`/dev/gpiochipN`) with the **v1** uAPI that
//! `gpio-cdev` uses, so the kernel needs `CONFIG_GPIO_CDEV_V1=y` (Raspberry Pi OS and
//! JetPack kernels have it; some newer distribution kernels turn it off). Lines are chip line
//! offsets (`gpioinfo` lists them), not header pin numbers. The v1 uAPI cannot set pull
//! resistors: give the button an external pull-up, or set one in the device tree /
//! `config.txt` (`gpio=24=ip,pu` on a Pi).
//!
//! The display is on `/dev/i2cN` (`i2c-dev` module loaded, the user in the `i2c` group).

use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
use linux_embedded_hal::{CdevPin, Delay, I2cdev};

use crate::button::Button;
use crate::config::{
    ButtonLineConfig, DisplayConfig, DisplayKind, LedsConfig, OpenError, PanelConfig,
};
use crate::display::{Hd44780Display, NoDisplay, Ssd1306Display, TextDisplay};
use crate::lights::StatusLights;
use crate::panel::{HardwarePanel, Panel};

/// The LEDs of a Linux board.
pub type LinuxLights = StatusLights<CdevPin, CdevPin, CdevPin, CdevPin>;

const CONSUMER: &str = "leukoscope";

fn request(
    chip: &str,
    line: u32,
    flags: LineRequestFlags,
    value: u8,
) -> Result<CdevPin, OpenError> {
    let gpio = |source: linux_embedded_hal::gpio_cdev::Error| OpenError::Gpio {
        chip: chip.to_string(),
        line,
        source: Box::new(source),
    };
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

/// Requests the button line as an input.
pub fn open_button(config: &ButtonLineConfig) -> Result<Button<CdevPin>, OpenError> {
    let pin = request(&config.chip, config.line, LineRequestFlags::INPUT, 0)?;
    Ok(Button::new(pin, config.button()))
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
