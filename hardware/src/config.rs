//! Configuration of the panel, the button and the serial line, as read from the device's
//! TOML file. These are plain data and compile everywhere; building hardware from them needs
//! the `linux` feature (see [`crate::linux`]).
//!
//! ```toml
//! [panel]
//! kind = "hardware"           # none | console | hardware
//!
//! [panel.leds]
//! chip = "/dev/gpiochip0"
//! green = 17
//! amber = 27
//! red = 22
//! blue = 23                   # optional
//! active_low = false
//!
//! [panel.display]
//! kind = "hd44780"            # hd44780 | ssd1306
//! bus = "/dev/i2c-1"
//! address = 0x27              # optional: 0x27 for hd44780, 0x3C for ssd1306
//!
//! [button]
//! chip = "/dev/gpiochip0"
//! line = 24
//! active_low = true
//! debounce_ms = 30
//! long_press_ms = 1500
//!
//! [serial]
//! path = "/dev/ttyGS0"
//! baud = 115200
//! format = "text"             # text | json
//! retry_max_ms = 30000        # reopen after an error: 0.5 s doubling up to this
//! ```

use serde::Deserialize;

use crate::button::ButtonConfig;
use crate::display::{DisplayError, PCF8574_ADDRESS, SSD1306_ADDRESS};
use crate::serial::SerialConfig;

/// The hardware sections of the device config.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareConfig {
    /// LEDs and display.
    #[serde(default)]
    pub panel: PanelConfig,
    /// The push button, if the kit has one.
    pub button: Option<ButtonLineConfig>,
    /// The technician's serial line, if used.
    pub serial: Option<SerialConfig>,
}

/// Which panel to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PanelKind {
    /// No panel.
    #[default]
    None,
    /// The panel drawn on standard output.
    Console,
    /// GPIO LEDs and an I2C display (needs the `linux` feature).
    Hardware,
}

/// The `[panel]` section.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PanelConfig {
    /// Which panel.
    #[serde(default)]
    pub kind: PanelKind,
    /// The LED lines (required for `hardware`).
    pub leds: Option<LedsConfig>,
    /// The display (optional for `hardware`: none means LEDs only).
    pub display: Option<DisplayConfig>,
}

fn default_chip() -> String {
    "/dev/gpiochip0".to_string()
}

/// GPIO lines of the LEDs (line offsets on the chip, not header pin numbers).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedsConfig {
    /// GPIO character device (default `/dev/gpiochip0`).
    #[serde(default = "default_chip")]
    pub chip: String,
    /// Green LED line.
    pub green: u32,
    /// Amber LED line.
    pub amber: u32,
    /// Red LED line.
    pub red: u32,
    /// Blue LED line, if fitted.
    pub blue: Option<u32>,
    /// LEDs light when the line is low.
    #[serde(default)]
    pub active_low: bool,
}

/// Which display controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DisplayKind {
    /// 16×2 HD44780 LCD on a PCF8574 backpack.
    Hd44780,
    /// 128×64 SSD1306 OLED.
    Ssd1306,
}

/// The `[panel.display]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisplayConfig {
    /// Controller.
    pub kind: DisplayKind,
    /// I2C bus device, e.g. `/dev/i2c-1`.
    pub bus: String,
    /// 7-bit I2C address; defaults to 0x27 (HD44780 backpack) or 0x3C (SSD1306).
    pub address: Option<u8>,
}

impl DisplayConfig {
    /// The configured address, or the controller's usual one.
    pub fn address(&self) -> u8 {
        self.address.unwrap_or(match self.kind {
            DisplayKind::Hd44780 => PCF8574_ADDRESS,
            DisplayKind::Ssd1306 => SSD1306_ADDRESS,
        })
    }
}

/// The `[button]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ButtonLineConfig {
    /// GPIO character device (default `/dev/gpiochip0`).
    #[serde(default = "default_chip")]
    pub chip: String,
    /// Button line offset.
    pub line: u32,
    /// Reads low while pressed (default true: button to ground, pull-up).
    #[serde(default = "default_true")]
    pub active_low: bool,
    /// Debounce time in ms (default 30).
    #[serde(default = "default_debounce")]
    pub debounce_ms: u32,
    /// Long-press time in ms (default 1500).
    #[serde(default = "default_long_press")]
    pub long_press_ms: u32,
}

fn default_true() -> bool {
    true
}

fn default_debounce() -> u32 {
    ButtonConfig::default().debounce_ms
}

fn default_long_press() -> u32 {
    ButtonConfig::default().long_press_ms
}

impl ButtonLineConfig {
    /// The timing and polarity part.
    pub fn button(&self) -> ButtonConfig {
        ButtonConfig {
            debounce_ms: self.debounce_ms,
            long_press_ms: self.long_press_ms,
            active_low: self.active_low,
        }
    }
}

/// Building hardware from config failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// `kind = "hardware"` in a build without the `linux` feature.
    #[error("panel kind \"hardware\" needs the hardware crate's `linux` feature")]
    NotBuilt,
    /// A section the chosen kind needs is missing.
    #[error("panel kind \"hardware\" needs a [panel.{0}] section")]
    Missing(&'static str),
    /// A GPIO line could not be requested.
    #[error(
        "GPIO {chip} line {line}: {source} (is the line free, and does the kernel have CONFIG_GPIO_CDEV_V1?)"
    )]
    Gpio {
        /// Chip device.
        chip: String,
        /// Line offset.
        line: u32,
        /// What failed.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The I2C bus could not be opened.
    #[error("I2C bus {bus}: {source}")]
    I2c {
        /// Bus device.
        bus: String,
        /// What failed.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The display did not initialise.
    #[error("display: {0}")]
    Display(#[from] DisplayError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serial::LineFormat;

    #[test]
    fn the_documented_example_parses() {
        let text = include_str!("config.rs")
            .split("```toml\n")
            .nth(1)
            .unwrap()
            .split("//! ```")
            .next()
            .unwrap()
            .lines()
            .map(|l| l.trim_start_matches("//!").trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        let config: HardwareConfig = toml::from_str(&text).unwrap();
        assert_eq!(config.panel.kind, PanelKind::Hardware);
        let leds = config.panel.leds.unwrap();
        assert_eq!(
            (leds.green, leds.amber, leds.red, leds.blue),
            (17, 27, 22, Some(23))
        );
        let display = config.panel.display.unwrap();
        assert_eq!(display.kind, DisplayKind::Hd44780);
        assert_eq!(display.address(), 0x27);
        let button = config.button.unwrap();
        assert_eq!(button.line, 24);
        assert_eq!(button.button(), ButtonConfig::default());
        let serial = config.serial.unwrap();
        assert_eq!((serial.baud, serial.format), (115_200, LineFormat::Text));
        assert_eq!(serial.retry_max_ms, 30_000);
    }

    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!("../README.md");
        let text = readme.split("```toml\n").nth(1).unwrap();
        let text = text.split("```").next().unwrap();
        let config: HardwareConfig = toml::from_str(text).unwrap();
        assert_eq!(config.panel.kind, PanelKind::Hardware);
        assert_eq!(config.button.unwrap().line, 24);
        assert_eq!(config.serial.unwrap().path, "/dev/ttyGS0");
    }

    #[test]
    fn defaults_and_mistakes() {
        let config: HardwareConfig = toml::from_str("").unwrap();
        assert_eq!(config.panel.kind, PanelKind::None);
        let config: HardwareConfig = toml::from_str(
            "[panel]\nkind = \"hardware\"\n[panel.leds]\ngreen = 1\namber = 2\nred = 3\n\
             [panel.display]\nkind = \"ssd1306\"\nbus = \"/dev/i2c-0\"\n\
             [button]\nline = 5\nactive_low = false",
        )
        .unwrap();
        let leds = config.panel.leds.unwrap();
        assert_eq!(leds.chip, "/dev/gpiochip0");
        assert_eq!(leds.blue, None);
        assert_eq!(config.panel.display.unwrap().address(), 0x3c);
        assert!(!config.button.unwrap().button().active_low);
        for bad in [
            "[panel]\nkind = \"lcd\"",
            "[panel]\ncolour = true",
            "[panel.display]\nkind = \"hd44780\"\nbus = \"/dev/i2c-1\"\naddress = 300",
            "[button]\npin = 4",
        ] {
            assert!(toml::from_str::<HardwareConfig>(bad).is_err(), "{bad}");
        }
    }
}
