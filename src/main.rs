use clap::Parser;
use echokit::cli::{Cli, Command, EXIT_FAILURE, EXIT_MISMATCH};
use echokit::client::EchoMismatch;
use echokit::commands;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Serve(args) => commands::serve(args),
        Command::Send(args) => commands::send(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("echokit: {err:#}");
            if err.is::<EchoMismatch>() {
                ExitCode::from(EXIT_MISMATCH)
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
    }
}
