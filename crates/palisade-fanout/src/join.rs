//! A typed join of different calls under one deadline, with partial results.
//!
//! [`FanOut`](crate::FanOut) sends one request to many *alike* backends. A page that
//! needs a cache lookup, a profile, some search shards and a policy check calls
//! *different* services with different request and response types; [`within`] joins
//! them as a tuple, each branch keeping its own type, and when the deadline comes gives
//! back what finished and [`Branch::Cancelled`] for the rest (dropping them: nothing is
//! spawned, nothing outlives the join). No boxing, no index bookkeeping: the tuple's
//! positions are the names.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::{BoxError, Deadline};
//! use palisade_fanout::{join, Branch};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let profile = async { Ok::<_, BoxError>(String::from("ada")) };
//! let score = async { Ok::<_, std::io::Error>(0.97_f64) };
//! let slow = async {
//!     tokio::time::sleep(Duration::from_secs(5)).await;
//!     Ok::<_, BoxError>(vec![1, 2, 3])
//! };
//! let (profile, score, recs) = join::within(Deadline::after(Duration::from_millis(300)), (profile, score, slow)).await;
//! assert_eq!(profile.into_result().unwrap().unwrap(), "ada");
//! assert_eq!(score.into_result().unwrap().unwrap(), 0.97);
//! assert!(matches!(recs, Branch::Cancelled));
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::{maybe_done, MaybeDone};
use palisade_core::{BoxError, Deadline};
use pin_project_lite::pin_project;
use tokio::time::{sleep_until, Sleep};

use crate::Branch;

/// Joins the futures of `branches` (a tuple of 1 to 8 futures, each yielding a
/// `Result<T, E>` with `E: Into<BoxError>`), until all finish or `deadline` passes.
///
/// Each position of the output is that future's [`Branch`]: `Done(result)` if it finished
/// in time, `Cancelled` if the deadline came first (it is dropped then).
pub fn within<J: IntoJoin>(deadline: Deadline, branches: J) -> J::Join {
    branches.into_join(deadline)
}

/// Tuples of futures that [`within`] can join. Implemented for tuples of 1 to 8 futures
/// whose outputs are `Result<T, E>` with `E: Into<BoxError>`.
pub trait IntoJoin {
    /// The join future.
    type Join: Future;

    /// The join of these futures under `deadline`.
    fn into_join(self, deadline: Deadline) -> Self::Join;
}

fn branch<T, E: Into<BoxError>>(out: Option<Result<T, E>>) -> Branch<T> {
    match out {
        Some(r) => Branch::Done(r.map_err(Into::into)),
        None => Branch::Cancelled,
    }
}

macro_rules! join_tuple {
    ($Join:ident; $($F:ident $f:ident $T:ident $E:ident),+) => {
        pin_project! {
            /// The future of [`within`] for this many branches.
            #[must_use = "futures do nothing unless polled"]
            pub struct $Join<$($F: Future),+> {
                $( #[pin] $f: MaybeDone<$F>, )+
                #[pin]
                deadline: Sleep,
            }
        }

        impl<$($F: Future),+> std::fmt::Debug for $Join<$($F),+> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($Join)).finish_non_exhaustive()
            }
        }

        impl<$($F, $T, $E),+> IntoJoin for ($($F,)+)
        where
            $( $F: Future<Output = Result<$T, $E>>, $E: Into<BoxError>, )+
        {
            type Join = $Join<$($F),+>;

            fn into_join(self, deadline: Deadline) -> Self::Join {
                let ($($f,)+) = self;
                $Join {
                    $( $f: maybe_done($f), )+
                    deadline: sleep_until(deadline.instant()),
                }
            }
        }

        impl<$($F, $T, $E),+> Future for $Join<$($F),+>
        where
            $( $F: Future<Output = Result<$T, $E>>, $E: Into<BoxError>, )+
        {
            type Output = ($(Branch<$T>,)+);

            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
                let mut this = self.project();
                // Poll every unfinished branch; a finished one keeps its output in place.
                let mut all_done = true;
                $( all_done &= this.$f.as_mut().poll(cx).is_ready(); )+
                // Done when all are, or when the deadline passes: then what finished is
                // `Done`, the rest `Cancelled` (dropped with this future).
                if all_done || this.deadline.poll(cx).is_ready() {
                    return Poll::Ready(($( branch(this.$f.as_mut().take_output()), )+));
                }
                Poll::Pending
            }
        }
    };
}

join_tuple!(Join1; F1 f1 T1 E1);
join_tuple!(Join2; F1 f1 T1 E1, F2 f2 T2 E2);
join_tuple!(Join3; F1 f1 T1 E1, F2 f2 T2 E2, F3 f3 T3 E3);
join_tuple!(Join4; F1 f1 T1 E1, F2 f2 T2 E2, F3 f3 T3 E3, F4 f4 T4 E4);
join_tuple!(Join5; F1 f1 T1 E1, F2 f2 T2 E2, F3 f3 T3 E3, F4 f4 T4 E4, F5 f5 T5 E5);
join_tuple!(Join6; F1 f1 T1 E1, F2 f2 T2 E2, F3 f3 T3 E3, F4 f4 T4 E4, F5 f5 T5 E5, F6 f6 T6 E6);
join_tuple!(Join7; F1 f1 T1 E1, F2 f2 T2 E2, F3 f3 T3 E3, F4 f4 T4 E4, F5 f5 T5 E5, F6 f6 T6 E6, F7 f7 T7 E7);
join_tuple!(Join8; F1 f1 T1 E1, F2 f2 T2 E2, F3 f3 T3 E3, F4 f4 T4 E4, F5 f5 T5 E5, F6 f6 T6 E6, F7 f7 T7 E7, F8 f8 T8 E8);

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn returns_when_all_finish_before_the_deadline() {
        let t0 = tokio::time::Instant::now();
        let a = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, BoxError>(1u8)
        };
        let b = async { Err::<&str, _>(std::io::Error::other("down")) };
        let (a, b) = within(Deadline::after(Duration::from_secs(1)), (a, b)).await;
        assert_eq!(
            t0.elapsed(),
            Duration::from_millis(20),
            "did not wait for the deadline"
        );
        assert_eq!(a.into_result().unwrap().unwrap(), 1);
        assert_eq!(b.into_result().unwrap().unwrap_err().to_string(), "down");
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn the_deadline_cancels_and_drops_the_slow_ones() {
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = Dropped(dropped.clone());
        let slow = async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, BoxError>(())
        };
        let fast = async { Ok::<_, BoxError>("fast") };
        let t0 = tokio::time::Instant::now();
        let (fast, slow) = within(Deadline::after(Duration::from_millis(300)), (fast, slow)).await;
        assert_eq!(t0.elapsed(), Duration::from_millis(300));
        assert!(fast.is_done());
        assert!(matches!(slow, Branch::Cancelled));
        assert!(
            dropped.load(Ordering::SeqCst),
            "the slow branch is dropped with the join"
        );
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn an_expired_deadline_still_takes_what_is_ready() {
        let (a,) = within(
            Deadline::after(Duration::ZERO),
            (async { Ok::<_, BoxError>(7) },),
        )
        .await;
        assert_eq!(a.into_result().unwrap().unwrap(), 7);
    }
}
