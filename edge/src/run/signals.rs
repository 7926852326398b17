//! SIGINT/SIGTERM: the first asks the run loop to finish and close the session, a second exits
//! at once.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Installs SIGINT/SIGTERM handlers that set the returned flag; a second signal exits at once.
pub fn shutdown_flag() -> std::io::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // Order matters: the conditional exit is armed first, so it fires only once the flag
        // is already set, i.e. on the second signal.
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag))?;
        signal_hook::flag::register(signal, Arc::clone(&flag))?;
    }
    Ok(flag)
}
