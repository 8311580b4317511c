use std::time::Duration;

use palisade::{preset, ClientPolicy, Format, InvalidPolicy, ServerPolicy};
use proptest::prelude::*;

/// Each invalid field, the path its error names, and what it says.
#[test]
fn every_invalid_field_is_named_by_its_path() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[retry.budget]\npercent = 1500",
            "retry.budget.percent",
            "must be within 0..=1000, got 1500",
        ),
        (
            "[retry.budget]\npercent = -1",
            "retry.budget.percent",
            "must be within 0..=1000, got -1",
        ),
        (
            "[retry.budget]\nttl = \"100ms\"",
            "retry.budget.ttl",
            "must be within 1s..=60s, got 100ms",
        ),
        (
            "[retry]\nmax_attempts = 0",
            "retry.max_attempts",
            "must be at least 1, got 0",
        ),
        (
            "[retry.backoff]\nbase = \"0s\"",
            "retry.backoff.base",
            "must be more than 0s",
        ),
        (
            "[retry.backoff]\nbase = \"1s\"\nmax = \"10ms\"",
            "retry.backoff.max",
            "must be at least base (1s), got 10ms",
        ),
        (
            "[retry.backoff]\nkind = \"linear\"",
            "retry.backoff.kind",
            "must be \"exponential\" or \"decorrelated\", got \"linear\"",
        ),
        (
            "[hedge]\npercentile = 120",
            "hedge.percentile",
            "must be within (0, 100], got 120",
        ),
        (
            "[hedge]\ndelay = \"5ms\"\npercentile = 90",
            "hedge.percentile",
            "give either delay or percentile, not both",
        ),
        (
            "[hedge]\nbudget_percent = 101",
            "hedge.budget_percent",
            "must be within 0..=100, got 101",
        ),
        (
            "[breaker]\nconsecutive_failures = 0",
            "breaker.consecutive_failures",
            "must be at least 1, got 0",
        ),
        (
            "[breaker]\nwindow_calls = 0",
            "breaker.window_calls",
            "must be at least 1, got 0",
        ),
        (
            "[breaker]\nwindow = \"0s\"",
            "breaker.window",
            "must be more than 0s",
        ),
        (
            "[breaker]\nconsecutive_failures = 3\nwindow_calls = 10",
            "breaker",
            "give one of consecutive_failures, window_calls or window",
        ),
        (
            "[breaker]\nfailure_rate = 0",
            "breaker.failure_rate",
            "must be within (0, 100], got 0",
        ),
        (
            "[breaker]\nopen_for = \"0s\"",
            "breaker.open_for",
            "must be more than 0s",
        ),
        (
            "[breaker]\nprobes = 0",
            "breaker.probes",
            "must be at least 1, got 0",
        ),
        (
            "[rate_limit]\nrequests = 0",
            "rate_limit.requests",
            "must be at least 1, got 0",
        ),
        (
            "[rate_limit]\nper = \"0s\"",
            "rate_limit.per",
            "must be more than 0s",
        ),
        (
            "[rate_limit]\nburst = 0",
            "rate_limit.burst",
            "must be at least 1, got 0",
        ),
        (
            "[concurrency]\nmax = 0",
            "concurrency.max",
            "must be at least 1, got 0",
        ),
        (
            "[concurrency]\nqueue = 5\nmax_wait = \"0s\"",
            "concurrency.max_wait",
            "must be more than 0s",
        ),
        ("deadline = \"0s\"", "deadline", "must be more than 0s"),
        (
            "attempt_timeout = \"0ms\"",
            "attempt_timeout",
            "must be more than 0s",
        ),
    ];
    for (toml, path, reason) in cases {
        let err = ClientPolicy::from_toml(toml).expect_err(toml);
        assert_eq!(err.path(), *path, "{toml}");
        assert_eq!(err.to_string(), format!("{path}: {reason}"), "{toml}");
        assert!(matches!(err, InvalidPolicy::Field { .. }));
    }

    let server: &[(&str, &str, &str)] = &[
        (
            "[responses]\nbody = \"html\"",
            "responses.body",
            "must be \"text\", \"problem_json\" or \"empty\", got \"html\"",
        ),
        (
            "[responses]\nrate_limit_fields = true",
            "responses.rate_limit_fields",
            "needs a rate_limit section",
        ),
        (
            "[deadline]\nmax = \"0s\"",
            "deadline.max",
            "must be more than 0s",
        ),
        (
            "[deadline]\nheader = \"bad header\"",
            "deadline.header",
            "not a header name: \"bad header\"",
        ),
        (
            "[concurrency]\nmax = 0",
            "concurrency.max",
            "must be at least 1, got 0",
        ),
        (
            "[rate_limit]\nrequests = 0",
            "rate_limit.requests",
            "must be at least 1, got 0",
        ),
    ];
    for (toml, path, reason) in server {
        let err = ServerPolicy::from_toml(toml).expect_err(toml);
        assert_eq!(err.to_string(), format!("{path}: {reason}"), "{toml}");
    }
}

#[test]
fn parse_errors_name_the_path_and_the_line() {
    // An unknown key, in each format.
    let err = ClientPolicy::from_toml("deadline = \"1s\"\n[retry]\nmax_attempt = 3\n").unwrap_err();
    let InvalidPolicy::Parse {
        path,
        location,
        message,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(path, "retry.max_attempt");
    assert_eq!(*location, Some((3, 1)), "{err}");
    assert!(message.contains("unknown field `max_attempt`"), "{message}");

    let err = ClientPolicy::from_yaml("retry:\n  budget:\n    percnt: 5\n").unwrap_err();
    assert_eq!(err.path(), "retry.budget.percnt", "{err}");
    assert!(err.to_string().contains("unknown field `percnt`"), "{err}");

    let err = ClientPolicy::from_json(r#"{"rate_limit": {"requests": "many"}}"#).unwrap_err();
    assert_eq!(err.path(), "rate_limit.requests", "{err}");
    let InvalidPolicy::Parse { location, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(location.map(|l| l.0), Some(1));

    // A duration that does not parse.
    let err = ClientPolicy::from_toml("[retry.backoff]\nbase = \"soon\"").unwrap_err();
    assert_eq!(err.path(), "retry.backoff.base", "{err}");
    assert!(
        err.to_string().contains("invalid duration \"soon\""),
        "{err}"
    );

    // Unknown top-level keys too, and syntax errors.
    assert!(ClientPolicy::from_toml("retries = 3").is_err());
    let err = ClientPolicy::from_toml("deadline = ").unwrap_err();
    assert!(
        matches!(
            err,
            InvalidPolicy::Parse {
                location: Some((1, _)),
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn files_by_extension_and_errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("palisade-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml = dir.join("client.toml");
    std::fs::write(&toml, "deadline = \"2s\"\n[retry]\nmax_attempts = 2\n").unwrap();
    let p = ClientPolicy::from_file(&toml).unwrap();
    assert_eq!(p.deadline, Some(Duration::from_secs(2)));
    assert_eq!(p.retry.unwrap().max_attempts, 2);

    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "retry:\n  max_attempts: many\n").unwrap();
    let err = ClientPolicy::from_file(&bad).unwrap_err();
    assert_eq!(err.path(), "retry.max_attempts");
    assert!(err.to_string().contains("bad.yaml"), "{err}");

    let err = ClientPolicy::from_file(dir.join("client.ini")).unwrap_err();
    assert!(matches!(err, InvalidPolicy::File { .. }), "{err:?}");
    let err = ClientPolicy::from_file(dir.join("missing.toml")).unwrap_err();
    assert!(matches!(err, InvalidPolicy::File { .. }), "{err:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn policies_round_trip_in_every_format() {
    let mut full = preset::vendor_api();
    let mut hedge = palisade::HedgePolicy::default();
    hedge.delay = Some(Duration::from_millis(40));
    full.hedge = Some(hedge);
    let mut rate = palisade::RatePolicy::default();
    rate.burst = Some(5);
    rate.wait = Some(Duration::from_millis(1500));
    full.rate_limit = Some(rate);
    let clients = [
        full,
        preset::http_client(),
        preset::grpc_channel(),
        ClientPolicy::default(),
    ];
    for format in [Format::Toml, Format::Yaml, Format::Json] {
        for p in &clients {
            let text = p.to_string_in(format);
            let back = ClientPolicy::from_str_in(&text, format)
                .unwrap_or_else(|e| panic!("{format:?}: {e}\n{text}"));
            assert_eq!(&back, p, "{format:?}:\n{text}");
        }
        for p in [
            preset::http_server(),
            preset::grpc_server(),
            ServerPolicy::default(),
        ] {
            let text = p.to_string_in(format);
            assert_eq!(
                ServerPolicy::from_str_in(&text, format).unwrap(),
                p,
                "{text}"
            );
        }
    }
    // Durations are written in human form.
    let text = preset::http_client().to_string_in(Format::Toml);
    assert!(text.contains("deadline = \"10s\""), "{text}");
    assert!(text.contains("base = \"100ms\""), "{text}");
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        (0u64..120_000).prop_map(Duration::from_millis)
    ]
}

fn client_policy() -> impl Strategy<Value = ClientPolicy> {
    let retry = (
        0u32..6,
        duration(),
        duration(),
        -10.0f64..1200.0,
        duration(),
        any::<bool>(),
    )
        .prop_map(|(max_attempts, base, max, percent, ttl, unlimited)| {
            let mut r = palisade::RetryPolicy::default();
            r.max_attempts = max_attempts;
            r.backoff.base = base;
            r.backoff.max = max;
            r.budget.percent = percent;
            r.budget.ttl = ttl;
            r.budget.unlimited = unlimited;
            r
        });
    let breaker = (
        proptest::option::of(0u64..50),
        proptest::option::of(0usize..2000),
        proptest::option::of(duration()),
        -5.0f64..120.0,
        duration(),
        0u32..4,
    )
        .prop_map(
            |(consecutive_failures, window_calls, window, failure_rate, open_for, probes)| {
                let mut b = palisade::BreakerPolicy::default();
                b.consecutive_failures = consecutive_failures;
                b.window_calls = window_calls;
                b.window = window;
                b.failure_rate = failure_rate;
                b.open_for = open_for;
                b.probes = probes;
                b
            },
        );
    let rate = (
        0u32..1000,
        duration(),
        proptest::option::of(0u32..100),
        proptest::option::of(duration()),
    )
        .prop_map(|(requests, per, burst, wait)| {
            let mut r = palisade::RatePolicy::default();
            r.requests = requests;
            r.per = per;
            r.burst = burst;
            r.wait = wait;
            r
        });
    let conc = (0usize..100, 0usize..100, duration()).prop_map(|(max, queue, max_wait)| {
        let mut c = palisade::ConcurrencyPolicy::default();
        c.max = max;
        c.queue = queue;
        c.max_wait = max_wait;
        c
    });
    let hedge = (
        proptest::option::of(duration()),
        proptest::option::of(-10.0f64..150.0),
        0u32..3,
        -1.0f64..120.0,
    )
        .prop_map(|(delay, percentile, max_extra, budget_percent)| {
            let mut h = palisade::HedgePolicy::default();
            h.delay = delay;
            h.percentile = percentile;
            h.max_extra = max_extra;
            h.budget_percent = budget_percent;
            h
        });
    (
        proptest::option::of(duration()),
        proptest::option::of(retry),
        proptest::option::of(hedge),
        proptest::option::of(breaker),
        proptest::option::of(rate),
        proptest::option::of(conc),
        proptest::option::of(duration()),
    )
        .prop_map(
            |(deadline, retry, hedge, breaker, rate_limit, concurrency, attempt_timeout)| {
                let mut p = ClientPolicy::default();
                p.deadline = deadline;
                p.retry = retry;
                p.hedge = hedge;
                p.breaker = breaker;
                p.rate_limit = rate_limit;
                p.concurrency = concurrency;
                p.attempt_timeout = attempt_timeout;
                p
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any text, in any format: an error or a policy, never a panic.
    #[test]
    fn the_parser_never_panics(text in "(?s).{0,200}", format in 0usize..3) {
        let format = [Format::Toml, Format::Yaml, Format::Json][format];
        let _ = ClientPolicy::from_str_in(&text, format);
        let _ = ServerPolicy::from_str_in(&text, format);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any policy value builds or names a field; what builds round-trips.
    #[test]
    fn any_policy_builds_or_names_a_field(p in client_policy()) {
        match p.layer() {
            Ok(_) => {
                for format in [Format::Toml, Format::Json] {
                    let text = p.to_string_in(format);
                    let back = ClientPolicy::from_str_in(&text, format);
                    prop_assert_eq!(back.as_ref(), Ok(&p), "{}", text);
                }
            }
            Err(e) => {
                prop_assert!(matches!(e, InvalidPolicy::Field { .. }), "{:?}", e);
                prop_assert!(!e.path().is_empty());
                // The same policy from text fails the same way.
                let text = p.to_string_in(Format::Toml);
                prop_assert_eq!(ClientPolicy::from_toml(&text).err(), Some(e));
            }
        }
    }
}
