//! The servers under test: which programs, where they are, and how each is
//! started for a row.

use crate::rows::Row;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};
use testkit::{paths, wasm, ServerProcess, StderrTo};

/// How long a server may take to print its listening line (wasmtime
/// compiles the component first when its cache is cold).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A server under test.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// The reference tokio echo server (examples/tokio_echo.rs).
    Tokio,
    /// Native echokit.
    Native,
    /// echokit.wasm under wasmtime.
    Wasm,
}

/// Every server, in the order of round 0 and of the table's columns.
pub(crate) const KINDS: [Kind; 3] = [Kind::Tokio, Kind::Native, Kind::Wasm];

impl Kind {
    /// The name tables and results use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Tokio => "tokio",
            Kind::Native => "native",
            Kind::Wasm => "wasm",
        }
    }

    /// Whether this server can serve `row` (tokio echoes TCP only).
    pub(crate) fn serves(self, row: &Row) -> bool {
        !(row.udp && self == Kind::Tokio)
    }
}

/// Where the programs under test are.
pub(crate) struct Tools {
    root: PathBuf,
    /// Native echokit: a server, and the load client of every row.
    pub(crate) echokit: PathBuf,
    tokio_echo: PathBuf,
    wasm: PathBuf,
    /// The wasmtime that runs the wasm server.
    pub(crate) wasmtime: PathBuf,
}

impl Tools {
    /// Finds the programs; [`Tools::require`] says which are missing.
    pub(crate) fn locate() -> Tools {
        let target = paths::target_dir();
        Tools {
            echokit: paths::native_bin(),
            tokio_echo: target.join("release").join("examples").join("tokio_echo"),
            wasm: wasm::wasm_artifact(),
            wasmtime: wasm::find_wasmtime().unwrap_or_else(|_| PathBuf::from("wasmtime")),
            root: paths::root(),
        }
    }

    /// Fails, naming the build command, unless everything `kinds` needs is
    /// there; warns about builds older than the sources.
    pub(crate) fn require(&self, kinds: &[Kind]) -> Result<(), String> {
        // (program, what it is, the command that builds it, its sources)
        let mut needed = vec![(
            &self.echokit,
            "native echokit (also the load client)",
            "just build",
            Some("src"),
        )];
        if kinds.contains(&Kind::Tokio) {
            needed.push((
                &self.tokio_echo,
                "the tokio reference server",
                "cargo build --release --example tokio_echo",
                Some("examples/tokio_echo.rs"),
            ));
        }
        if kinds.contains(&Kind::Wasm) {
            needed.push((
                &self.wasm,
                "the wasm echokit component",
                "just build-wasm",
                Some("src"),
            ));
            needed.push((&self.wasmtime, "wasmtime", "just setup", None));
        }
        let missing: Vec<String> = needed
            .iter()
            .filter(|(path, ..)| !path.is_file())
            .map(|(path, what, build, _)| {
                format!("  {} ({what}) is missing: run `{build}`", self.show(path))
            })
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "cannot run the matrix; it builds nothing itself:\n{}",
                missing.join("\n")
            ));
        }
        for (path, _, build, sources) in &needed {
            let Some(sources) = sources else { continue };
            let edited = newest_mtime(&self.root.join(sources));
            let built = fs::metadata(path).and_then(|meta| meta.modified()).ok();
            if let (Some(edited), Some(built)) = (edited, built) {
                if built < edited {
                    eprintln!(
                        "matrix: warning: {} is older than {sources}: run `{build}` to measure the current code",
                        self.show(path)
                    );
                }
            }
        }
        Ok(())
    }

    /// `path` relative to the project, for messages.
    pub(crate) fn show<'a>(&self, path: &'a Path) -> std::borrow::Cow<'a, str> {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .to_string_lossy()
    }

    /// The command that starts `kind` for `row` on a free loopback port.
    pub(crate) fn server_command(&self, kind: Kind, row: &Row) -> Command {
        let listen: &[&str] = match row.udp {
            true => &["--listen", "127.0.0.1:0", "--udp"],
            false => &["--listen", "127.0.0.1:0"],
        };
        let mut command = match kind {
            Kind::Tokio => Command::new(&self.tokio_echo),
            Kind::Native => {
                let mut command = Command::new(&self.echokit);
                command.arg("serve");
                command
            }
            Kind::Wasm => {
                let mut command = Command::new(&self.wasmtime);
                command
                    .args(["run", "-S", "inherit-network"])
                    .arg(&self.wasm)
                    .arg("serve");
                command
            }
        };
        command.args(listen);
        command
    }

    /// How `command` reads, paths relative to the project.
    pub(crate) fn describe(&self, command: &Command) -> String {
        std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|part| self.show(Path::new(part)).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Starts `kind` on a free port and waits for its listening line; its
    /// stderr goes on ours, tagged, and is kept for the results.
    pub(crate) fn start(&self, kind: Kind, row: &Row) -> Result<ServerProcess, String> {
        let stderr_to = StderrTo::EchoAndKeep(format!("    [{} server] ", kind.name()));
        ServerProcess::start(self.server_command(kind, row), stderr_to, STARTUP_TIMEOUT)
    }
}

/// The last modification of `path` or, for a directory, of anything in it.
fn newest_mtime(path: &Path) -> Option<SystemTime> {
    if !path.is_dir() {
        return fs::metadata(path).and_then(|meta| meta.modified()).ok();
    }
    let mut newest = None;
    for entry in fs::read_dir(path).ok()?.flatten() {
        newest = newest.max(newest_mtime(&entry.path()));
    }
    newest
}
