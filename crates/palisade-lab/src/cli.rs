//! The command line: `list`, `run SCENARIO|all [flags]`, and the tour (no command).

use std::path::PathBuf;
use std::time::Duration;

use crate::report::ScenarioReport;
use crate::scenario::{self, Ctx, Scenario};
use crate::upstream::Mode;
use crate::LabError;

/// `--help`.
pub const USAGE: &str = "\
usage: palisade-lab [run SCENARIO|all] [--virtual] [--seed N] [--duration SECS] [--json] [--report FILE] [--config FILE]
       palisade-lab list

With no command, runs the tour: every scenario but `gateway` and `fleet`, one after the
other, in under a minute over loopback. `gateway` (blocking and CPU work on real threads)
and `fleet` (a redis-server it starts, when one is on PATH) run over loopback only, with
`run gateway`, `run fleet` or `run all`; `--virtual` skips them with a note.

  list             the scenarios and what each shows
  run SCENARIO     one scenario (`all`: every one, the tour's and the two above)
  --virtual        call the upstream in process on paused time (deterministic, fast)
                   instead of over loopback TCP on real time
  --seed N         seed of every random draw (default 1)
  --duration SECS  how long open and closed loads run (default: the scenario's own;
                   the embeddings burst is a fixed 1,000 calls)
  --json           print JSON instead of tables
  --report FILE    also write a self-contained HTML report (tables and charts) to FILE
  --config FILE    also run your own client stack, a `palisade::ClientPolicy` in TOML,
                   YAML or JSON (see examples/policy/client.toml), as an extra contender
                   in every scenario that drives one client stack
";

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `list`.
    List,
    /// `--help`.
    Help,
    /// The tour or `run`.
    Run(Box<RunArgs>),
}

/// The flags of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunArgs {
    /// The scenarios to run, in order.
    pub scenarios: Vec<&'static str>,
    /// Whether this is the tour (no command given).
    pub tour: bool,
    /// `--virtual`.
    pub mode: Mode,
    /// `--seed`.
    pub seed: u64,
    /// `--duration`.
    pub duration: Option<Duration>,
    /// `--json`.
    pub json: bool,
    /// `--report`.
    pub report: Option<PathBuf>,
    /// `--config`: the file, and the policy read from it.
    pub config: Option<(PathBuf, palisade::ClientPolicy)>,
}

/// Parses the arguments (without the program name).
///
/// # Errors
///
/// [`LabError::Usage`] for an unknown command or flag, a missing or malformed value, or
/// `--config`; [`LabError::UnknownScenario`] for a scenario that does not exist.
pub fn parse(args: &[String]) -> Result<Command, LabError> {
    let mut it = args.iter().peekable();
    let mut run = RunArgs {
        scenarios: scenario::ALL
            .iter()
            .filter(|s| s.in_tour)
            .map(|s| s.name)
            .collect(),
        tour: true,
        mode: Mode::Loopback,
        seed: 1,
        duration: None,
        json: false,
        report: None,
        config: None,
    };
    match it.peek().map(|s| s.as_str()) {
        Some("list") => {
            it.next();
            if let Some(extra) = it.next() {
                return Err(LabError::Usage(format!(
                    "`list` takes no arguments (got {extra:?})"
                )));
            }
            return Ok(Command::List);
        }
        Some("run") => {
            it.next();
            let name = it.next().ok_or_else(|| {
                LabError::Usage("`run` needs a scenario name (see `palisade-lab list`)".into())
            })?;
            run.tour = false;
            run.scenarios = if name == "all" {
                scenario::ALL.iter().map(|s| s.name).collect()
            } else {
                vec![scenario::find(name)?.name]
            };
        }
        _ => {}
    }
    while let Some(flag) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .ok_or_else(|| LabError::Usage(format!("{flag} needs {what}")))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--virtual" => run.mode = Mode::Virtual,
            "--json" => run.json = true,
            "--seed" => {
                let v = value("a number")?;
                run.seed = v
                    .parse()
                    .map_err(|_| LabError::Usage(format!("--seed: {v:?} is not a whole number")))?;
            }
            "--duration" => {
                let v = value("a number of seconds")?;
                let secs: f64 = v.parse().map_err(|_| {
                    LabError::Usage(format!("--duration: {v:?} is not a number of seconds"))
                })?;
                if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
                    return Err(LabError::Usage(format!(
                        "--duration: {v} is out of range (more than 0, at most 3600 seconds)"
                    )));
                }
                run.duration = Some(Duration::from_secs_f64(secs));
            }
            "--report" => run.report = Some(PathBuf::from(value("a file path")?)),
            "--config" => {
                let path = PathBuf::from(value("a policy file (.toml, .yaml or .json)")?);
                let policy = palisade::ClientPolicy::from_file(&path)
                    .map_err(|e| LabError::Config(format!("--config {}: {e}", path.display())))?;
                run.config = Some((path, policy));
            }
            "list" | "run" => return Err(LabError::Usage(format!("{flag:?} must come first"))),
            other if other.starts_with('-') => {
                return Err(LabError::Usage(format!(
                    "unknown flag {other:?} (see --help)"
                )))
            }
            other => {
                return Err(LabError::Usage(format!(
                    "unexpected argument {other:?}: did you mean `run {other}`? (see --help)"
                )))
            }
        }
    }
    Ok(Command::Run(Box::new(run)))
}

/// Runs the command line.
///
/// # Errors
///
/// Bad arguments, an unwritable report path, or a scenario that could not run.
pub fn main(args: &[String]) -> Result<(), LabError> {
    match parse(args)? {
        Command::Help => print!("{USAGE}"),
        Command::List => {
            let w = scenario::ALL
                .iter()
                .map(|s| s.name.len())
                .max()
                .unwrap_or(0);
            for s in scenario::ALL {
                let tour = if s.in_tour { "" } else { " (not in the tour)" };
                println!("{:<w$}  {}{tour}", s.name, s.title);
            }
        }
        Command::Run(args) => run(&args)?,
    }
    Ok(())
}

fn run(args: &RunArgs) -> Result<(), LabError> {
    // Fail on a bad report path now, not after the runs.
    if let Some(path) = &args.report {
        std::fs::write(path, "").map_err(|e| {
            LabError::Io(format!(
                "cannot write the report to {}: {e}",
                path.display()
            ))
        })?;
    }
    let runtime = match args.mode {
        Mode::Virtual => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build(),
        Mode::Loopback => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    }
    .map_err(|e| LabError::Io(format!("cannot start a tokio runtime: {e}")))?;
    // The user's stack, leaked once: the scenarios take it by `&'static` (`Ctx` is `Copy`).
    let extra = args.config.as_ref().map(|(path, policy)| {
        let name = format!(
            "your stack ({})",
            path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned()
            )
        );
        &*Box::leak(Box::new(scenario::Contender::new(name, policy.clone())))
    });
    let ctx = Ctx {
        mode: args.mode,
        seed: args.seed,
        duration: args.duration,
        extra,
    };
    let scenarios: Vec<&Scenario> = args
        .scenarios
        .iter()
        .map(|n| scenario::find(n))
        .collect::<Result<_, _>>()?;
    // Wall-clock time of the whole run, to tell the reader what the tour cost; on paused
    // time tokio's clock would say how much time was simulated instead.
    let wall = std::time::SystemTime::now();
    if args.tour && !args.json {
        println!(
            "palisade-lab tour: {} scenarios, upstream {} (see `palisade-lab --help`)\n",
            scenarios.len(),
            match args.mode {
                Mode::Virtual => "in process on paused time",
                Mode::Loopback => "over loopback TCP on real time",
            }
        );
    }
    let mut reports: Vec<ScenarioReport> = Vec::new();
    for s in scenarios {
        let report = runtime.block_on(s.run(ctx))?;
        if !args.json {
            println!("{}", report.text());
        }
        reports.push(report);
    }
    let took = wall.elapsed().unwrap_or_default();
    if args.json {
        let all: Vec<_> = reports.iter().map(ScenarioReport::json).collect();
        let doc = serde_json::json!({
            "mode": args.mode.as_str(),
            "seed": args.seed,
            "scenarios": all,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("plain values")
        );
    } else {
        println!("took {:.1} s of wall-clock time", took.as_secs_f64());
    }
    if let Some(path) = &args.report {
        let html = crate::html::render(&reports, args.seed);
        std::fs::write(path, html).map_err(|e| {
            LabError::Io(format!(
                "cannot write the report to {}: {e}",
                path.display()
            ))
        })?;
        if !args.json {
            println!("report written to {}", path.display());
        }
    }
    Ok(())
}
