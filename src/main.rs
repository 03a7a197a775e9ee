//! The `moat` command: parses arguments and hands each subcommand to [`moat::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    moat::cli::main()
}
