//! The binary's answers to good and bad input: clear messages, exit code 2, no panic.

use std::process::{Command, Output};

fn lab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade-lab"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn list_names_every_scenario() {
    let o = lab(&["list"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    for s in palisade_lab::scenario::ALL {
        assert!(out.contains(s.name), "{out}");
    }
}

/// The tour leaves out the two loopback-only scenarios (it stays under a minute with no
/// services to install); `run all` and `run NAME` run them, and `list` says so.
#[test]
fn the_tour_leaves_out_gateway_and_fleet_and_run_all_has_them() {
    use palisade_lab::cli::{parse, Command};
    let scenarios =
        |args: &[&str]| match parse(&args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>()) {
            Ok(Command::Run(run)) => run.scenarios,
            other => panic!("{args:?}: {other:?}"),
        };
    let tour = scenarios(&[]);
    assert_eq!(tour.len(), 6, "{tour:?}");
    assert!(
        !tour.contains(&"gateway") && !tour.contains(&"fleet"),
        "{tour:?}"
    );
    let all = scenarios(&["run", "all"]);
    assert_eq!(all.len(), palisade_lab::scenario::ALL.len());
    assert!(
        all.contains(&"gateway") && all.contains(&"fleet"),
        "{all:?}"
    );
    assert_eq!(scenarios(&["run", "fleet"]), vec!["fleet"]);

    let o = lab(&["list"]);
    let out = String::from_utf8_lossy(&o.stdout);
    for name in ["gateway", "fleet"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(line.ends_with("(not in the tour)"), "{out}");
    }
}

#[test]
fn bad_input_is_a_clear_error_and_exit_code_2() {
    for (args, says) in [
        (&["run", "nope"][..], "no scenario named \"nope\""),
        (&["run"][..], "needs a scenario name"),
        (&["run", "embeddings", "--seed", "x"][..], "--seed"),
        (&["run", "embeddings", "--duration", "-1"][..], "--duration"),
        (&["run", "embeddings", "--frobnicate"][..], "unknown flag"),
        (
            &["--config", "/nonexistent/my-stack.toml"][..],
            "--config /nonexistent/my-stack.toml",
        ),
        (&["--config", "stack.ini"][..], "unknown extension"),
        (
            &[
                "run",
                "embeddings",
                "--virtual",
                "--report",
                "/nonexistent/dir/r.html",
            ][..],
            "cannot write the report",
        ),
    ] {
        let o = lab(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn a_config_file_runs_as_one_more_contender_and_bad_fields_are_named() {
    let dir = std::env::temp_dir().join(format!("palisade-lab-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[concurrency]\nmax = 0\n").unwrap();
    let o = lab(&[
        "run",
        "embeddings",
        "--virtual",
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("concurrency.max: must be at least 1, got 0"),
        "{}",
        stderr(&o)
    );

    let good = dir.join("mine.toml");
    std::fs::write(
        &good,
        "[concurrency]\nmax = 15\nqueue = 1000\nmax_wait = \"60s\"\n",
    )
    .unwrap();
    let o = lab(&[
        "run",
        "embeddings",
        "--virtual",
        "--json",
        "--config",
        good.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = doc["scenarios"][0]["rows"].as_array().unwrap();
    let mine = rows
        .iter()
        .find(|r| r["stack"] == "your stack (mine.toml)")
        .unwrap_or_else(|| panic!("no row for the config's stack: {rows:?}"));
    // A limit of 15 under the upstream's cap of 20, queueing the rest: every call served.
    assert_eq!(mine["metrics"]["calls ok"], 1000.0, "{mine}");
    assert_eq!(mine["metrics"]["429s"], 0.0, "{mine}");
    std::fs::remove_dir_all(&dir).unwrap();
}
