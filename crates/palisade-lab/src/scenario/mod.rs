//! The scenarios: each starts a misbehaving upstream per stack, drives the same load
//! through each stack, and reports what the caller and the upstream saw.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::load::{drive, Load, Run};
use crate::report::ScenarioReport;
use crate::upstream::{Client, Mode, Upstream, UpstreamConfig, UpstreamHandle};
use crate::LabError;

mod embeddings;
mod fanout;
mod fleet;
mod gateway;
mod outage;
mod overload;
mod retry_storm;
mod tail;

/// How a scenario runs.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    /// In process on paused time, or over loopback on real time.
    pub mode: Mode,
    /// Seed of every random draw (latencies, faults, jitter).
    pub seed: u64,
    /// How long its load runs, if not its own default.
    pub duration: Option<Duration>,
    /// The user's own stack (`--config`), run as one more contender.
    pub extra: Option<&'static Contender>,
}

/// A client stack read from a policy file (`--config`).
#[derive(Debug)]
pub struct Contender {
    name: &'static str,
    policy: palisade::ClientPolicy,
}

impl Contender {
    /// The policy under `name`.
    pub fn new(name: String, policy: palisade::ClientPolicy) -> Self {
        Self {
            name: Box::leak(name.into_boxed_str()),
            policy,
        }
    }

    /// A fresh stack of the policy (its breaker, limits and budgets new for each run).
    fn stack(&'static self) -> Stack {
        Box::new(move |client| {
            let layer = self
                .policy
                .http_layer()
                .expect("the policy was checked when its file was read");
            Client::new(tower::Layer::layer(&layer, client))
        })
    }
}

impl Ctx {
    /// The load's duration: `--duration`, or the scenario's default for the mode (over
    /// loopback, shorter: real time is spent, not simulated).
    pub fn duration(&self, virtual_default: Duration, loopback_default: Duration) -> Duration {
        self.duration.unwrap_or(match self.mode {
            Mode::Virtual => virtual_default,
            Mode::Loopback => loopback_default,
        })
    }
}

/// A client stack: policies put on top of the upstream's client.
pub(crate) type Stack = Box<dyn Fn(Client) -> Client + Send + Sync>;

/// One stack's run: what the caller saw, and the handle of the upstream it ran against.
pub(crate) struct Measured {
    pub(crate) stack: &'static str,
    pub(crate) run: Run,
    pub(crate) upstream: UpstreamHandle,
}

/// Drives `load` through each stack, each against a fresh upstream of `config`.
pub(crate) async fn each_stack(
    ctx: Ctx,
    config: UpstreamConfig,
    load: Load,
    stacks: Vec<(&'static str, Stack)>,
) -> Result<Vec<Measured>, LabError> {
    each_stack_with(ctx, config, load, stacks, |_| {}).await
}

/// [`each_stack`], calling `on_start` with each upstream just before its load starts (to
/// script changes to it).
pub(crate) async fn each_stack_with(
    ctx: Ctx,
    config: UpstreamConfig,
    load: Load,
    stacks: Vec<(&'static str, Stack)>,
    on_start: impl Fn(&UpstreamHandle),
) -> Result<Vec<Measured>, LabError> {
    let mut out = Vec::new();
    let mut stacks = stacks;
    if let Some(extra) = ctx.extra {
        stacks.push((extra.name, extra.stack()));
    }
    for (stack, build) in stacks {
        let upstream = Upstream::start(config, ctx.mode).await?;
        on_start(upstream.handle());
        let run = drive(build(upstream.client()), load, upstream.handle()).await;
        out.push(Measured {
            stack,
            run,
            upstream: upstream.handle().clone(),
        });
    }
    Ok(out)
}

type Pending = Pin<Box<dyn Future<Output = Result<ScenarioReport, LabError>> + Send>>;

/// A scenario the lab can run.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Its name on the command line.
    pub name: &'static str,
    /// What it shows, in one line.
    pub title: &'static str,
    /// Whether the tour (no command) runs it; `run all` runs every scenario.
    pub in_tour: bool,
    run: fn(Ctx) -> Pending,
}

impl Scenario {
    /// Runs it.
    ///
    /// # Errors
    ///
    /// If its upstream cannot start or a stack is misconfigured.
    pub async fn run(&self, ctx: Ctx) -> Result<ScenarioReport, LabError> {
        let start = tokio::time::Instant::now();
        // A spinner on stderr while it runs (indicatif hides it when stderr is not a
        // terminal, so piped output and `--json` stay clean); it draws only after a
        // second, so short runs show none.
        let progress =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::hidden())
                .with_style(
                    indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                )
                .with_message(format!("{}: {}", self.name, self.title));
        let shown = progress.clone();
        let reveal = std::thread::spawn(move || {
            // Reveal after a second of wall-clock time (paused tokio time says nothing
            // about how long the user waits).
            std::thread::park_timeout(std::time::Duration::from_secs(1));
            if !shown.is_finished() {
                shown.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                shown.enable_steady_tick(std::time::Duration::from_millis(120));
            }
        });
        let result = (self.run)(ctx).await;
        progress.finish_and_clear();
        reveal.thread().unpark();
        let _ = reveal.join();
        let mut report = result?;
        report.elapsed = start.elapsed();
        report.mode = ctx.mode.as_str();
        Ok(report)
    }
}

/// Every scenario: the tour's, in its order, then the ones only `run` runs.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "embeddings",
        title: embeddings::TITLE,
        in_tour: true,
        run: |ctx| Box::pin(embeddings::run(ctx)),
    },
    Scenario {
        name: "tail-latency",
        title: tail::TITLE,
        in_tour: true,
        run: |ctx| Box::pin(tail::run(ctx)),
    },
    Scenario {
        name: "cascading-outage",
        title: outage::TITLE,
        in_tour: true,
        run: |ctx| Box::pin(outage::run(ctx)),
    },
    Scenario {
        name: "overload",
        title: overload::TITLE,
        in_tour: true,
        run: |ctx| Box::pin(overload::run(ctx)),
    },
    Scenario {
        name: "retry-storm",
        title: retry_storm::TITLE,
        in_tour: true,
        run: |ctx| Box::pin(retry_storm::run(ctx)),
    },
    Scenario {
        name: "partial-fanout",
        title: fanout::TITLE,
        in_tour: true,
        run: |ctx| Box::pin(fanout::run(ctx)),
    },
    // Outside the tour: it keeps the tour under a minute, and these two run over loopback
    // only (real threads; a real redis-server).
    Scenario {
        name: "gateway",
        title: gateway::TITLE,
        in_tour: false,
        run: |ctx| Box::pin(gateway::run(ctx)),
    },
    Scenario {
        name: "fleet",
        title: fleet::TITLE,
        in_tour: false,
        run: |ctx| Box::pin(fleet::run(ctx)),
    },
];

/// The scenario called `name`.
///
/// # Errors
///
/// [`LabError::UnknownScenario`] naming the ones there are.
pub fn find(name: &str) -> Result<&'static Scenario, LabError> {
    ALL.iter()
        .find(|s| s.name == name)
        .ok_or_else(|| LabError::UnknownScenario(name.to_owned()))
}
