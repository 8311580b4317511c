//! Tracing spans: one `debug` span per call per policy, nested in stack order, with each
//! decision event inside its policy's span; nothing recorded (and nothing allocated) when
//! `debug` is off. A small hand-written subscriber records what `tracing` hands it.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::stack::POLICY;
use palisade::{BoxError, ClientPolicy, WithDeadline};
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

/// One recorded span: its name and its parent's id.
#[derive(Debug, Clone)]
struct SpanRec {
    id: u64,
    name: &'static str,
    parent: Option<u64>,
}

#[derive(Default)]
struct Log {
    next: AtomicU64,
    spans: Mutex<Vec<SpanRec>>,
    // The entered spans of the (single) test thread, innermost last.
    stack: Mutex<Vec<u64>>,
    // (the span the event happened in, the event's target)
    events: Mutex<Vec<(Option<u64>, String)>>,
}

/// A subscriber that listens up to `max` and records spans and events.
#[derive(Clone)]
struct Collector {
    max: Level,
    log: Arc<Log>,
}

impl Collector {
    fn new(max: Level) -> Self {
        Self {
            max,
            log: Arc::default(),
        }
    }

    fn spans(&self) -> Vec<SpanRec> {
        self.log.spans.lock().unwrap().clone()
    }

    fn named(&self, name: &str) -> Vec<SpanRec> {
        self.spans()
            .into_iter()
            .filter(|s| s.name == name)
            .collect()
    }
}

impl Subscriber for Collector {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // Asked per call, so tests with other subscribers (or none) do not share a cache.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.log.next.fetch_add(1, Ordering::Relaxed) + 1;
        let parent = if attrs.is_contextual() {
            self.log.stack.lock().unwrap().last().copied()
        } else {
            attrs.parent().map(Id::into_u64)
        };
        self.log.spans.lock().unwrap().push(SpanRec {
            id,
            name: attrs.metadata().name(),
            parent,
        });
        Id::from_u64(id)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let current = self.log.stack.lock().unwrap().last().copied();
        self.log
            .events
            .lock()
            .unwrap()
            .push((current, event.metadata().target().to_owned()));
    }

    fn enter(&self, id: &Id) {
        self.log.stack.lock().unwrap().push(id.into_u64());
    }

    fn exit(&self, id: &Id) {
        let mut stack = self.log.stack.lock().unwrap();
        let top = stack.pop();
        assert_eq!(top, Some(id.into_u64()), "spans exited out of order");
    }
}

/// `100` fails its first two attempts (the first and its hedge, sent at once after a
/// failure) and succeeds on the retry; anything else succeeds.
fn upstream() -> impl Service<
    WithDeadline<u32>,
    Response = u32,
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<u32, BoxError>> + Send,
> + Clone {
    let flaky = Arc::new(AtomicU64::new(0));
    service_fn(move |req: WithDeadline<u32>| {
        let n = req.request;
        let fail = n == 100 && flaky.fetch_add(1, Ordering::SeqCst) < 2;
        async move {
            if fail {
                Err::<u32, BoxError>("flaky".into())
            } else {
                Ok(n)
            }
        }
    })
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// The canonical stack's policies, outermost first, as their spans nest.
const CHAIN: [&str; 7] = [
    "palisade.deadline",
    "palisade.retry",
    "palisade.hedge",
    "palisade.circuit_breaker",
    "palisade.rate_limit",
    "palisade.concurrency_limit",
    "palisade.timeout",
];

#[test]
fn each_policy_opens_a_debug_span_nested_in_stack_order() {
    let collector = Collector::new(Level::DEBUG);
    let result = tracing::subscriber::with_default(collector.clone(), || {
        paused_runtime().block_on(async {
            let stack = ServiceBuilder::new()
                .layer(ClientPolicy::from_toml(POLICY).unwrap().layer().unwrap())
                .service(upstream());
            stack.oneshot(WithDeadline::new(100)).await
        })
    });
    assert_eq!(result.unwrap(), 100);

    // One span per call through each policy: the retry sends the request twice below it.
    let spans = collector.spans();
    for (name, calls) in [
        ("palisade.deadline", 1),
        ("palisade.retry", 1),
        ("palisade.hedge", 2),
        ("palisade.circuit_breaker", 3),
        ("palisade.rate_limit", 3),
        ("palisade.concurrency_limit", 3),
        ("palisade.timeout", 3),
    ] {
        assert_eq!(collector.named(name).len(), calls, "{name}: {spans:?}");
    }
    // Each span's parent is the span of the policy above it.
    let by_id = |id: u64| spans.iter().find(|s| s.id == id).unwrap();
    for pair in CHAIN.windows(2) {
        for child in collector.named(pair[1]) {
            let parent = child.parent.map(by_id);
            assert_eq!(
                parent.map(|p| p.name),
                Some(pair[0]),
                "{} should be inside {}: {spans:?}",
                pair[1],
                pair[0]
            );
        }
    }
    assert_eq!(collector.named("palisade.deadline")[0].parent, None);
    // The retry's decision ("retrying") is an event inside the retry's span.
    let retry = collector.named("palisade.retry")[0].id;
    let events = collector.log.events.lock().unwrap().clone();
    assert!(
        events
            .iter()
            .any(|(span, target)| *span == Some(retry) && target == "palisade::retry"),
        "no retry event inside the retry span: {events:?}"
    );
    // Every span was exited.
    assert!(collector.log.stack.lock().unwrap().is_empty());
}

#[test]
fn with_debug_off_no_span_is_made_and_nothing_is_allocated() {
    let collector = Collector::new(Level::INFO);
    tracing::subscriber::with_default(collector.clone(), || {
        let rt = paused_runtime();
        let _enter = rt.enter();
        let mut stack = ServiceBuilder::new()
            .layer(ClientPolicy::from_toml(POLICY).unwrap().layer().unwrap())
            .service(upstream());
        let mut cx = Context::from_waker(Waker::noop());
        let mut one_call = |n: u32| {
            assert!(matches!(stack.poll_ready(&mut cx), Poll::Ready(Ok(()))));
            let fut = pin!(stack.call(WithDeadline::new(n)));
            match fut.poll(&mut cx) {
                Poll::Ready(Ok(m)) => assert_eq!(m, n),
                Poll::Ready(Err(e)) => panic!("call {n} failed: {e}"),
                Poll::Pending => panic!("call {n} pending"),
            }
        };
        one_call(0); // warm-up: lazily initialised state is not per call
        let info = allocation_counter::measure(|| {
            for n in 1000..1100 {
                one_call(n);
            }
        });
        // The stack's own allocations with debug on are the spans' boxes; with it off,
        // the canonical stack allocates nothing (as with no subscriber at all).
        assert_eq!(info.count_total, 0, "allocations over 100 calls: {info:?}");
    });
    assert!(collector.spans().is_empty(), "{:?}", collector.spans());
}
