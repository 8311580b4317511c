//! A worker program for palisade-offload's process-pool tests and examples.
//!
//! Serves text commands over [`worker::serve`]:
//!
//! | request | answer |
//! |---|---|
//! | `echo:TEXT` | `TEXT` |
//! | `pid` | the worker's process id |
//! | `sleep:MS:TEXT` | `TEXT`, after MS milliseconds |
//! | `sleep-once:PATH:MS:TEXT` | as `sleep`, but only if PATH does not exist yet (it is created); else at once |
//! | `exit:CODE` | exits with CODE mid-job |
//! | `abort` | aborts (SIGABRT) mid-job |
//! | `fail:TEXT` | an error answer `TEXT` |
//! | `panic:TEXT` | panics with `TEXT` (caught: an error answer) |
//! | `garbage` | writes a frame the protocol does not allow |
//!
//! Started with `--json` (feature `serde`), it serves JSON instead through
//! [`worker::serve_json`]: `{"a": A, "b": B}` is answered with `{"sum": A + B}`.

use std::io::Write;
use std::time::Duration;

use palisade_offload::process::worker;

fn main() -> std::io::Result<()> {
    #[cfg(feature = "serde")]
    if std::env::args().nth(1).as_deref() == Some("--json") {
        return worker::serve_json(|req: serde_json::Value| {
            let (a, b) = (req["a"].as_i64(), req["b"].as_i64());
            match (a, b) {
                (Some(a), Some(b)) => Ok(serde_json::json!({ "sum": a + b })),
                _ => Err("expected {\"a\": int, \"b\": int}".to_owned()),
            }
        });
    }
    worker::serve(|request| {
        let text = String::from_utf8(request).map_err(|e| e.to_string())?;
        let (cmd, rest) = text.split_once(':').unwrap_or((text.as_str(), ""));
        match cmd {
            "echo" => Ok(rest.as_bytes().to_vec()),
            "pid" => Ok(std::process::id().to_string().into_bytes()),
            "sleep" => {
                let (ms, answer) = rest.split_once(':').unwrap_or((rest, ""));
                pause(ms.parse().map_err(|_| "bad ms")?);
                Ok(answer.as_bytes().to_vec())
            }
            "sleep-once" => {
                let mut parts = rest.splitn(3, ':');
                let (path, ms, answer) = (
                    parts.next().unwrap_or(""),
                    parts.next().unwrap_or("0"),
                    parts.next().unwrap_or(""),
                );
                if std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(path)
                    .is_ok()
                {
                    pause(ms.parse().map_err(|_| "bad ms")?);
                }
                Ok(answer.as_bytes().to_vec())
            }
            "exit" => {
                let code = rest.parse().unwrap_or(1);
                #[allow(clippy::exit)] // dying mid-job is this command's point
                std::process::exit(code)
            }
            "abort" => std::process::abort(),
            "fail" => Err(rest.to_owned()),
            "panic" => panic!("{rest}"),
            "garbage" => {
                // A frame with an unknown tag, written behind `serve`'s back.
                let mut out = std::io::stdout().lock();
                out.write_all(&[0, 0, 0, 1, 9]).map_err(|e| e.to_string())?;
                out.flush().map_err(|e| e.to_string())?;
                pause(60_000);
                Ok(Vec::new())
            }
            other => Err(format!("unknown command {other:?}")),
        }
    })
}

/// Blocks for `ms` milliseconds (a worker has no runtime; this is its "legacy call").
fn pause(ms: u64) {
    let (_keep, rx) = std::sync::mpsc::channel::<()>();
    let _ = rx.recv_timeout(Duration::from_millis(ms));
}
