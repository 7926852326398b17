//! Progress bars (indicatif) in one style.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` items with a message; hidden when stderr is not a terminal.
pub fn bar(len: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed}, ETA {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(message.to_string());
    bar
}
