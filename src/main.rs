//! The `rollguard` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

/// A wrong command line exits EX_USAGE (64), not clap's 2: `deploy --wait` reserves 2 for an
/// inconclusive verdict, and a pipeline with a mistyped flag must not read "inconclusive".
/// `--help` and `--version` print to stdout and exit 0.
fn main() -> ExitCode {
    match rollguard::cli::Cli::try_parse() {
        Ok(cli) => rollguard::cli::main(cli),
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() {
                ExitCode::from(rollguard::exit::EX_USAGE)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}
