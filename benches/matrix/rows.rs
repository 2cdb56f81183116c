//! The rows of the matrix: what load each measurement runs.

use echokit::bench::{Mode, Report};

/// One row of the matrix.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Row {
    pub(crate) name: &'static str,
    pub(crate) mode: Mode,
    pub(crate) connections: u32,
    pub(crate) size: u32,
    /// Datagrams instead of a stream: echokit only (the tokio reference
    /// echoes TCP).
    pub(crate) udp: bool,
}

const fn row(name: &'static str, mode: Mode, connections: u32, size: u32) -> Row {
    Row {
        name,
        mode,
        connections,
        size,
        udp: false,
    }
}

const fn udp_row(name: &'static str, connections: u32, size: u32) -> Row {
    Row {
        udp: true,
        ..row(name, Mode::Pingpong, connections, size)
    }
}

/// The matrix, in the order it runs and prints.
pub(crate) const ROWS: &[Row] = &[
    row("pingpong-1x1", Mode::Pingpong, 1, 1),
    row("pingpong-50x512", Mode::Pingpong, 50, 512),
    row("pingpong-1000x128", Mode::Pingpong, 1000, 128),
    row("stream-1x65536", Mode::Stream, 1, 65536),
    row("stream-8x65536", Mode::Stream, 8, 65536),
    row("connect-8x64", Mode::Connect, 8, 64),
    udp_row("udp-pingpong-50x512", 50, 512),
];

impl Row {
    /// The unit of the figure a row is judged by.
    pub(crate) fn unit(&self) -> &'static str {
        match self.mode {
            Mode::Stream => "MiB/s",
            Mode::Pingpong | Mode::Connect => "req/s",
        }
    }

    /// The figure a run is judged by: echoed MiB/s when streaming, echoes
    /// per second otherwise.
    pub(crate) fn figure(&self, report: &Report) -> f64 {
        match self.mode {
            Mode::Stream => report.mib_per_sec,
            Mode::Pingpong | Mode::Connect => report.requests_per_sec,
        }
    }

    /// The `echokit bench` arguments of this row's load.
    pub(crate) fn load_args(&self) -> Vec<String> {
        let mut args = vec![
            "--connections".to_owned(),
            self.connections.to_string(),
            "--size".to_owned(),
            self.size.to_string(),
            "--mode".to_owned(),
            format!("{:?}", self.mode).to_lowercase(),
        ];
        if self.udp {
            args.push("--udp".to_owned());
        }
        // Closing with FINs, the load generator's ports pile up in
        // TIME_WAIT and its kernel's search for a free one bounds every
        // server alike.
        if self.mode == Mode::Connect {
            args.push("--reset".to_owned());
        }
        args
    }
}

/// The rows `--only` picks: exact names, or else every row starting so;
/// in the matrix's order whatever order they were asked in.
pub(crate) fn select(only: &[String]) -> Result<Vec<Row>, String> {
    if only.is_empty() {
        return Ok(ROWS.to_vec());
    }
    let mut picked: Vec<Row> = Vec::new();
    for wanted in only {
        let exact = ROWS.iter().filter(|row| row.name == wanted);
        let matches: Vec<Row> = match exact.clone().count() {
            0 => ROWS
                .iter()
                .filter(|row| row.name.starts_with(wanted.as_str()))
                .copied()
                .collect(),
            _ => exact.copied().collect(),
        };
        if matches.is_empty() {
            let names: Vec<_> = ROWS.iter().map(|row| row.name).collect();
            return Err(format!(
                "no row named {wanted:?}; the rows are {}",
                names.join(", ")
            ));
        }
        for row in matches {
            if !picked.iter().any(|picked| picked.name == row.name) {
                picked.push(row);
            }
        }
    }
    picked.sort_by_key(|row| ROWS.iter().position(|r| r.name == row.name));
    Ok(picked)
}
