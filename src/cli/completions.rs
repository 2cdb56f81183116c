//! `echokit completions`: a shell's completion script for the command
//! line, generated from its definition by `clap_complete`.

use anyhow::Context;
use clap::Args;
use clap_complete::Shell;
use std::io::{self, Write};

/// Options of `echokit completions`.
#[derive(Debug, Args)]
pub(super) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

/// The completion script of `echokit` for `shell`.
pub(super) fn script(shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut super::command(), "echokit", &mut script);
    script
}

/// Prints the script on stdout. It is made whole first: `clap_complete`
/// panics when its writer fails, as stdout does when a pipe closes early.
pub(super) fn run(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(&script(args.shell))
        .and_then(|()| stdout.flush())
        .context("cannot write the completion script")
}
