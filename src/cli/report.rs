//! `echokit report`: histogram logs of bench runs, merged into one report.

use super::EXIT_CODES;
use anyhow::Context;
use clap::Args;
use echokit::bench::log;
use echokit::bench::Event;
use std::io::{self, Write};
use std::path::PathBuf;

/// Options of `echokit report`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub(super) struct ReportArgs {
    /// Histogram logs written by `echokit bench --histogram-log FILE`, from
    /// one machine or several; the wasm build needs their directories
    /// granted (`wasmtime run --dir`).
    #[arg(value_name = "FILE", required = true)]
    logs: Vec<PathBuf>,

    /// Print the merged report as one JSON object (an `end` event).
    #[arg(long)]
    json: bool,
}

/// Reads every log, then merges and prints them: a file that cannot be
/// read leaves nothing printed.
pub(super) fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for path in &args.logs {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {name}"))?;
        let run = log::read(&bytes).with_context(|| name.clone())?;
        runs.push((name, run));
    }
    let report = log::merge(&runs)?;
    let mut stdout = io::stdout().lock();
    match args.json {
        true => {
            serde_json::to_writer(&mut stdout, &Event::End(Box::new(report)))?;
            writeln!(stdout)?;
        }
        false => writeln!(stdout, "{report}")?,
    }
    stdout.flush()?;
    Ok(())
}
