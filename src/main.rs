use clap::Parser;
use echokit::cli::{exit_status, Cli, Command};
use echokit::commands;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Serve(args) => commands::serve(args),
        Command::Send(args) => commands::send(args),
        Command::Bench(args) => commands::bench(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("echokit: {err:#}");
            ExitCode::from(exit_status(&err))
        }
    }
}
