//! Building the panel a config asks for: [`open_panel`] turns a [`PanelConfig`] into a
//! [`NonePanel`], a [`ConsolePanel`] on standard output or, with the `linux` feature, the
//! [`HardwarePanel`](crate::HardwarePanel) that `crate::linux` opens on the board. The
//! drivers in [`crate::panel`] know nothing of config or boards; this module ties the two.

use std::io::{self, IsTerminal};

use crate::config::{OpenError, PanelConfig, PanelKind};
use crate::panel::{ConsolePanel, NonePanel, Panel};

/// Builds the panel `config` asks for. The console panel draws on standard output, in colour
/// when that is a terminal; the hardware panel needs the `linux` feature.
pub fn open_panel(config: &PanelConfig) -> Result<Box<dyn Panel>, OpenError> {
    match config.kind {
        PanelKind::None => Ok(Box::new(NonePanel)),
        PanelKind::Console => {
            let color = io::stdout().is_terminal();
            Ok(Box::new(ConsolePanel::new(io::stdout(), color)))
        }
        #[cfg(feature = "linux")]
        PanelKind::Hardware => crate::linux::open_hardware_panel(config),
        #[cfg(not(feature = "linux"))]
        PanelKind::Hardware => Err(OpenError::NotBuilt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_panel_builds_the_configured_kind() {
        let config = |kind| PanelConfig {
            kind,
            ..PanelConfig::default()
        };
        assert!(open_panel(&config(PanelKind::None)).is_ok());
        assert!(open_panel(&config(PanelKind::Console)).is_ok());
        #[cfg(not(feature = "linux"))]
        assert!(matches!(
            open_panel(&config(PanelKind::Hardware)),
            Err(OpenError::NotBuilt)
        ));
        #[cfg(feature = "linux")]
        assert!(matches!(
            open_panel(&config(PanelKind::Hardware)),
            Err(OpenError::Missing("leds"))
        ));
    }
}
