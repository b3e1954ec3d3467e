//! Progress bars on stderr while a run goes on; hidden when stderr is not a terminal (or the
//! caller is a test), so pipes and `--json` output stay clean.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What a bar counts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Steps {
    /// Things done out of a total (handshakes, messages).
    Count(u64),
    /// Milliseconds of a timed run.
    Millis(Duration),
    /// Nothing to count: a spinner.
    Spinner,
}

/// A bar drawn on stderr only when `shown`.
pub(crate) fn bar(shown: bool, steps: Steps, prefix: &str) -> ProgressBar {
    if !shown {
        return ProgressBar::hidden();
    }
    let (len, template) = match steps {
        Steps::Count(n) => (n, "{prefix:>12} [{bar:30}] {pos}/{len} {elapsed} {msg}"),
        Steps::Millis(d) => (
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            "{prefix:>12} [{bar:30}] {elapsed} {msg}",
        ),
        Steps::Spinner => (0, "{prefix:>12} {spinner} {elapsed} {msg}"),
    };
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
