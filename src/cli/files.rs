//! Input and output files, where "-" means standard input or output.

use anyhow::Context;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// The whole of `path`, or of standard input for "-".
pub(super) fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    if is_stdio(path) {
        let mut input = Vec::new();
        io::stdin()
            .lock()
            .read_to_end(&mut input)
            .context("cannot read standard input")?;
        return Ok(input);
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// A buffered writer to `path`, created or truncated, or to standard
/// output for "-".
pub(super) fn open_output(path: &Path) -> anyhow::Result<Box<dyn Write>> {
    if is_stdio(path) {
        return Ok(Box::new(BufWriter::new(io::stdout().lock())));
    }
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(Box::new(BufWriter::new(file)))
}
