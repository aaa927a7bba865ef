//! `etl-pipe` binary: parse the command line, set up logging, run, map the result to an exit code.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = etl_pipe::cli::Cli::parse();
    match etl_pipe::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(1)
        }
    }
}
