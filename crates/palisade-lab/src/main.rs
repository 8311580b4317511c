//! `palisade-lab`: see the crate docs (`cargo doc -p palisade-lab --open`) or `--help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match palisade_lab::cli::main(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("palisade-lab: {e}");
            ExitCode::from(2)
        }
    }
}
