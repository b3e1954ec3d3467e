//! The proxy's wait for an upstream's response head: a deadline counted from the request, re-armed
//! each time the upstream takes a chunk of the request body, so that a long upload is not cut
//! off while an upstream that stalls still is.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Instant;

/// When a request body last moved: shared by the body the upstream reads and the wait for its
/// answer.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    /// When the request started on its way.
    start: Instant,
    /// Nanoseconds from `start` to the last chunk taken.
    moved: Arc<AtomicU64>,
}

impl Progress {
    /// Progress of a request starting now.
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            moved: Arc::new(AtomicU64::new(0)),
        }
    }

    /// `body`, noting here each chunk of it taken.
    pub(crate) fn watch(&self, body: Body) -> Body {
        Body::new(Watched {
            inner: body,
            progress: self.clone(),
        })
    }

    /// Notes that the body moved now.
    fn mark(&self) {
        let since = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.moved.fetch_max(since, Ordering::Relaxed);
    }

    /// When the body last moved (the start if it never did).
    fn last(&self) -> Instant {
        self.start + Duration::from_nanos(self.moved.load(Ordering::Relaxed))
    }
}

/// A request body that marks its [`Progress`] at each frame taken from it.
struct Watched {
    inner: Body,
    progress: Progress,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            self.progress.mark();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `answer`'s output, or `None` once `idle` has passed since the later of the request's start
/// and the last move of its body ([`Progress`]) without it.
pub(crate) async fn within<F: Future>(
    answer: F,
    idle: Duration,
    progress: &Progress,
) -> Option<F::Output> {
    tokio::pin!(answer);
    loop {
        match tokio::time::timeout_at(progress.last() + idle, &mut answer).await {
            Ok(output) => return Some(output),
            // The body moved while the timer ran: wait on from its last move.
            Err(_) if progress.last() + idle > Instant::now() => continue,
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use futures_util::StreamExt;

    use super::*;

    const IDLE: Duration = Duration::from_millis(300);

    #[tokio::test(start_paused = true)]
    async fn no_answer_and_no_progress_is_none_after_the_idle_time() {
        let start = Instant::now();
        let answer = within(std::future::pending::<()>(), IDLE, &Progress::new()).await;
        assert!(answer.is_none());
        assert_eq!(start.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_in_time_is_returned() {
        let answer = async {
            tokio::time::sleep(IDLE / 2).await;
            7
        };
        assert_eq!(within(answer, IDLE, &Progress::new()).await, Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn body_progress_rearms_the_deadline() {
        let progress = Progress::new();
        let marker = progress.clone();
        // The body moves every 200 ms until 600 ms; the answer comes at 700 ms, past the idle
        // time from the start but within it from the last move.
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                marker.mark();
            }
        });
        let answer = async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            "head"
        };
        assert_eq!(within(answer, IDLE, &progress).await, Some("head"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_runs_from_the_last_move() {
        let progress = Progress::new();
        let marker = progress.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            marker.mark();
        });
        let start = Instant::now();
        let answer = within(std::future::pending::<()>(), IDLE, &progress).await;
        assert!(answer.is_none());
        assert_eq!(start.elapsed(), Duration::from_millis(200) + IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn taking_a_chunk_of_the_body_marks_progress() {
        let progress = Progress::new();
        let mut body = progress.watch(Body::from("chunk")).into_data_stream();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(progress.last(), progress.start);
        assert_eq!(body.next().await.unwrap().unwrap(), "chunk");
        assert_eq!(progress.last(), progress.start + Duration::from_secs(1));
    }

    #[tokio::test]
    async fn the_watched_body_keeps_its_size() {
        let body = Progress::new().watch(Body::from("12345"));
        assert_eq!(HttpBody::size_hint(&body).exact(), Some(5));
        let empty = Progress::new().watch(Body::empty());
        assert!(HttpBody::is_end_stream(&empty));
    }
}
