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

#[test]
fn bad_input_is_a_clear_error_and_exit_code_2() {
    for (args, says) in [
        (&["run", "nope"][..], "no scenario named \"nope\""),
        (&["run"][..], "needs a scenario name"),
        (&["run", "embeddings", "--seed", "x"][..], "--seed"),
        (&["run", "embeddings", "--duration", "-1"][..], "--duration"),
        (&["run", "embeddings", "--frobnicate"][..], "unknown flag"),
        (&["--config", "my-stack.toml"][..], "not available yet"),
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
