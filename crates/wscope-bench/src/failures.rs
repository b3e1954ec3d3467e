//! What went wrong during a run, kept small however many connections fail: a count and the first
//! failure's words.

/// Failures of a run: how many, and the first one's words.
#[derive(Debug, Default)]
pub(crate) struct Failures {
    /// Every failure counts once.
    pub(crate) count: u64,
    /// The words of the first, for the report's one line.
    pub(crate) first: Option<String>,
}

impl Failures {
    /// One more failure; `reason` is only worded if it is the first.
    pub(crate) fn add(&mut self, reason: impl FnOnce() -> String) {
        self.add_many(1, reason);
    }

    /// `n` more failures of one kind.
    pub(crate) fn add_many(&mut self, n: u64, reason: impl FnOnce() -> String) {
        if n == 0 {
            return;
        }
        self.count += n;
        if self.first.is_none() {
            self.first = Some(reason());
        }
    }

    /// Adds another tally's failures (its first comes after ours).
    pub(crate) fn merge(&mut self, other: Failures) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }
}
