//! The `tiaojie` binary: parses the command line and hands over to [`tiaojie::cli`].

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    tiaojie::cli::main(tiaojie::cli::Cli::parse()).await
}
