//! The `echokit` command: serve, send and bench on this host's sockets.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
