//! Classify a call's result when it completes and hand the outcome to a recorder: the one
//! "record the outcome" future of the layers that learn from outcomes (the breaker, the
//! throttle).
//!
//! [`Recording`] wraps the inner call. When it completes, the result is classified once,
//! through [`classify::outcome`](crate::classify::outcome) (so local rejections are marked
//! as such), and the [`Recorder`] is consumed with the outcome. If the future is dropped
//! before completion, the recorder is dropped unconsumed: its `Drop` forgets the call (a
//! breaker hands a probe slot back, a throttle counts nothing). A result whose outcome is
//! only known at the end of its body ([`Classify::deferred`]) is recorded then.
//!
//! # Example
//!
//! ```
//! use palisade_core::record::{Recorder, Recording};
//! use palisade_core::{BoxError, ErrorsAsFailures, Outcome};
//! use std::sync::{Arc, Mutex};
//!
//! struct Log(Arc<Mutex<Vec<bool>>>);
//! impl Recorder for Log {
//!     fn record(self, outcome: &Outcome) {
//!         self.0.lock().unwrap().push(outcome.is_success());
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let log = Arc::new(Mutex::new(Vec::new()));
//! let call = async { Err::<(), BoxError>("boom".into()) };
//! let _ = Recording::new(call, ErrorsAsFailures, Log(log.clone())).await;
//! assert_eq!(*log.lock().unwrap(), [false]);
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use crate::{BoxError, Classify, Outcome};

/// Receives one call's outcome; dropped unconsumed if the call is dropped first.
pub trait Recorder {
    /// Records the finished call's outcome.
    fn record(self, outcome: &Outcome);
}

pin_project! {
    /// A call whose outcome is classified and recorded when it completes; see the
    /// [module docs](self).
    pub struct Recording<F, C, R> {
        #[pin]
        fut: F,
        classify: C,
        // Taken when the call completes; dropped unconsumed if the call never does.
        recorder: Option<R>,
    }
}

impl<F, C, R> Recording<F, C, R> {
    /// Records `fut`'s outcome, classified by `classify`, into `recorder`.
    pub fn new(fut: F, classify: C, recorder: R) -> Self {
        Self {
            fut,
            classify,
            recorder: Some(recorder),
        }
    }
}

impl<F, C, R, T, E> Future for Recording<F, C, R>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T>,
    R: Recorder + Send + 'static,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.fut.poll(cx)).map_err(Into::into);
        // Classify once, record once: now, or when a streamed body ends (a gRPC status in
        // the trailers of a long stream). A deferred outcome holds the recorder until
        // then; if the body is dropped first, the recorder is dropped unconsumed, as if
        // this future had been.
        if let Some(recorder) = this.recorder.take() {
            match this.classify.deferred(&result) {
                Some(later) => later.then(move |outcome| recorder.record(outcome)),
                None => recorder.record(&crate::classify::outcome(this.classify, &result)),
            }
        }
        Poll::Ready(result)
    }
}

impl<F, C, R> fmt::Debug for Recording<F, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recording")
            .field("recorded", &self.recorder.is_none())
            .finish_non_exhaustive()
    }
}
