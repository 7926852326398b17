//! leukoscope hardware: the status LEDs, the two-line display, the push button and the
//! technician's serial line of a field kit.
//!
//! The drivers are generic over the embedded-hal 1.0 traits and hold no board code, so they
//! are tested with `embedded-hal-mock` and run on any board. Nothing here sleeps or blocks for
//! long: the device loop calls [`Panel::show`], [`SerialLink::poll`] and
//! [`ButtonEvents::try_recv`] with a monotonic time in milliseconds where one is needed. The
//! button is read on its own thread from timestamped edges, so no press is missed while the
//! loop is busy.
//!
//! * [`lights`]: green / amber / red (/ blue) LEDs with blinking fault patterns.
//! * [`display`]: the two 16-character status lines, HD44780 (PCF8574 backpack) and SSD1306
//!   backends.
//! * [`button`]: debounced short and long presses from timestamped edges, on a thread.
//! * [`panel`]: LEDs and display together; a console panel and a none panel.
//! * [`open`]: the panel a [`PanelConfig`] asks for ([`open_panel`]).
//! * [`serial`]: the line protocol (`RESULT`, `SLIDE`, … out; `PING`, `START`, … in) and the
//!   link that reopens the port with backoff.
//! * [`config`]: the TOML sections; `linux` (feature `linux`): building it all on a board
//!   with linux-embedded-hal (needs `CONFIG_GPIO_CDEV_V1`).
//!
//! ```
//! use hardware::{ConsolePanel, DeviceStatus, Panel, Phase};
//!
//! // What a person sees on the device, drawn as text (here into a buffer).
//! let mut panel = ConsolePanel::new(Vec::new(), false);
//! let mut status = DeviceStatus::idle();
//! panel.show(&status, 0)?;
//! status.phase = Phase::Screening;
//! status.slide = Some("S-0012".into());
//! panel.show(&status, 40)?;
//! panel.show(&status, 80)?; // unchanged: nothing drawn
//! let text = String::from_utf8(panel.into_inner())?;
//! assert_eq!(
//!     text,
//!     "[G] [a] [r] [b]  | READY            | no slide         |\n\
//!      [g] [a] [r] [B]  | S-0012       F:0 | screening        |\n"
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod button;
pub mod config;
pub mod display;
pub mod lights;
#[cfg(feature = "linux")]
pub mod linux;
pub mod open;
pub mod panel;
pub mod serial;
pub mod status;

pub use button::{
    ButtonConfig, ButtonError, ButtonEvent, ButtonEvents, Debouncer, Edge, EdgeSource, StampedEvent,
};
pub use config::{
    ButtonLineConfig, DisplayConfig, DisplayKind, HardwareConfig, LedsConfig, OpenError,
    PanelConfig, PanelKind,
};
pub use display::{
    DisplayError, Hd44780Display, NoDisplay, Ssd1306Display, TextDisplay, fit_line, status_lines,
};
pub use lights::{Led, LedMode, LightState, LightsError, NoLed, StatusLights};
pub use open::open_panel;
pub use panel::{ConsolePanel, HardwarePanel, NonePanel, Panel, PanelError};
pub use serial::{
    Command, CommandError, Event, LineFormat, Opener, PortOpener, SerialConfig, SerialError,
    SerialLine, SerialLink,
};
pub use status::{DeviceStatus, Fault, LastFrame, Phase, RetakeReason, Verdict};
