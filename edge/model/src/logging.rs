//! The one logging set-up of leukoscope's programs (`trainer`, `quantize`, `edge`).

use std::io::IsTerminal;

/// Sends `tracing` logs to stderr, filtered by `RUST_LOG` (default `warn`), in colour only on a
/// terminal: under systemd or in a pipe the lines are plain text.
pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
