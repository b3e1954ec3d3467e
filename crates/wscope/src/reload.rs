//! [`Reloader`]: what SIGHUP rereads — a list of named reload actions (the listeners'
//! certificates; a proxy's routes can join them) run in order on each SIGHUP, each failure
//! logged as one error line and leaving what it would have replaced in place.

use std::io;

use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;

/// A reload action: rereads what it owns and puts it in place, or leaves the old in place and
/// says why.
type Action = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The reload actions SIGHUP runs, each under a name for its log line.
#[derive(Default)]
pub struct Reloader {
    actions: Vec<(String, Action)>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.actions.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("Reloader").field("actions", &names).finish()
    }
}

impl Reloader {
    /// No actions yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `action`, run on each SIGHUP after those added before it; `name` says what it
    /// reloads in its log line (`--tls-cert and --tls-key`).
    pub fn add(
        &mut self,
        name: impl Into<String>,
        action: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.actions.push((name.into(), Box::new(action)));
    }

    /// Whether there is anything to reload.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Runs every action once, in order: each logs one line, `reloaded NAME` or the error, and a
    /// failure does not stop the next. Returns how many failed.
    pub fn reload(&self) -> usize {
        let mut failed = 0;
        for (name, action) in &self.actions {
            match action() {
                Ok(()) => tracing::info!("SIGHUP: reloaded {name}"),
                Err(why) => {
                    failed += 1;
                    tracing::error!("SIGHUP: {name} not reloaded, the last good one kept: {why}");
                }
            }
        }
        failed
    }

    /// Listens for SIGHUP and runs [`Reloader::reload`] on each, until the task is aborted.
    /// Without actions nothing is installed (`None`): SIGHUP keeps its default, ending the
    /// process, as before any reload existed.
    pub fn listen(self) -> io::Result<Option<JoinHandle<()>>> {
        if self.is_empty() {
            return Ok(None);
        }
        let mut hangups = signal(SignalKind::hangup())?;
        Ok(Some(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                self.reload();
            }
        })))
    }
}
