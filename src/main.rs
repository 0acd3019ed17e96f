//! The `steno` binary: parse the command line, run it, map the outcome to an exit code.
//! Everything else lives in the library.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    steno::memory::map_large_blocks();
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("steno: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
