//! Where a connection failed by the guard lingers once the engine lets it go: half-closed, its
//! peer's last bytes read, in a task the process tracks ([`lingering`]) rather than a detached
//! one, so that a server can wait for them as it waits for its connections.

use std::sync::LazyLock;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::task::TaskTracker;

use crate::io::Io;

/// How long a failed connection lingers, and how many bytes it reads meanwhile, at most.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// The lingering tasks of every guard in the process (they run for at most [`LINGER`] each).
static LINGERING: LazyLock<TaskTracker> = LazyLock::new(TaskTracker::new);

/// The tasks in which connections failed by the frame guard linger (each for at most 2 s): a
/// server that stops waits for them after its connections' tasks (`close()`, then `wait()`),
/// so that their sockets end as the guard means them to (half-closed, the peer's last bytes
/// read), not with a reset when the runtime goes away.
pub fn lingering() -> TaskTracker {
    LINGERING.clone()
}

/// Lingers `io` in a tracked task, if there is a runtime to run it (else it is dropped now).
pub(crate) fn spawn<S: Io>(io: S) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(LINGERING.track_future(linger(io)));
    }
}

/// Half-closes a failed connection (its close frame is written) and reads what the peer still
/// sends, until it hangs up or the linger is over, so that the kernel has no unread bytes to
/// answer with a reset when the socket is dropped.
async fn linger<S: Io>(mut io: S) {
    let drain = async {
        let _ = io.shutdown().await;
        let (mut scratch, mut read) = ([0u8; 4096], 0);
        while read < LINGER_BYTES {
            match io.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
