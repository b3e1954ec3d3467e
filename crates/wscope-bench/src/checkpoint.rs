//! A pause between the end of the load and the closing of the connections, for a caller (a test,
//! a wrapper script) to look at the server while every connection is still open.

use tokio::sync::oneshot;

use crate::deadline::Deadline;

/// The run's side of the pause: put one in a mode's options.
///
/// The run signals [`CheckpointHandle::reached`] and waits until the handle is resumed or
/// dropped (or the run's deadline passes).
#[derive(Debug)]
pub struct Checkpoint {
    reached: oneshot::Sender<()>,
    resume: oneshot::Receiver<()>,
}

/// The caller's side of a [`Checkpoint`].
#[derive(Debug)]
pub struct CheckpointHandle {
    reached: oneshot::Receiver<()>,
    resume: oneshot::Sender<()>,
}

impl Checkpoint {
    /// A checkpoint to put in a mode's options, and the handle to wait on it.
    pub fn new() -> (Checkpoint, CheckpointHandle) {
        let (reached_tx, reached_rx) = oneshot::channel();
        let (resume_tx, resume_rx) = oneshot::channel();
        (
            Checkpoint {
                reached: reached_tx,
                resume: resume_rx,
            },
            CheckpointHandle {
                reached: reached_rx,
                resume: resume_tx,
            },
        )
    }

    /// Signals the caller and waits for it, at most until `deadline`.
    pub(crate) async fn pass(self, deadline: Deadline) {
        if self.reached.send(()).is_err() {
            return; // nobody is looking
        }
        tokio::select! {
            _ = self.resume => {}
            _ = deadline.reached() => {}
        }
    }
}

impl CheckpointHandle {
    /// Waits until the run reaches its checkpoint; `false` if it ended without reaching it.
    pub async fn reached(&mut self) -> bool {
        (&mut self.reached).await.is_ok()
    }

    /// Lets the run go on and close its connections (dropping the handle does too).
    pub fn resume(self) {
        let _ = self.resume.send(());
    }
}
