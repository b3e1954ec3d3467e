//! Progress bars on stderr while a run goes on; hidden when stderr is not a terminal (or the
//! caller is a test), so pipes and `--json` output stay clean.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `len` steps (or a spinner when `len` is zero), drawn only when `shown`.
pub(crate) fn bar(shown: bool, len: u64, prefix: &str) -> ProgressBar {
    if !shown {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let template = if len == 0 {
        "{prefix:>12} {spinner} {elapsed} {msg}"
    } else {
        "{prefix:>12} [{bar:30}] {pos}/{len} {elapsed} {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
