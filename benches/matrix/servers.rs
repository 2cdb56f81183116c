//! The servers under test: which programs, where they are, and how each is
//! started for a row.

use crate::rows::Row;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};
use testkit::{paths, wasm, Build, ServerProcess, StderrTo, Target};

/// How long a server may take to print its listening line (wasmtime
/// compiles the component first when its cache is cold).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How a server under test is started.
#[derive(Clone, Debug)]
enum How {
    /// The reference tokio echo server (examples/tokio_echo.rs).
    Tokio,
    /// echokit: native on a backend, or the component on a runtime of
    /// fixtures/runtimes.toml (or one added through `ECHOKIT_RUNTIME`).
    Echokit(Target),
}

/// A server under test: a column of the matrix.
#[derive(Clone, Debug)]
pub(crate) struct Server {
    /// Its name in tables, results, targets and `--servers`: `tokio`,
    /// `native`, `native@epoll`, `wasm` (the default runtime) or
    /// `wasm@RUNTIME`.
    pub(crate) name: String,
    how: How,
}

/// The reference server: the native build's targets are ratios to it.
pub(crate) const TOKIO: &str = "tokio";
/// Native echokit as users get it (`--io auto`: io_uring where it can).
pub(crate) const NATIVE: &str = "native";

impl Server {
    /// Every server: tokio, then every way to run echokit
    /// ([`Target::every`]); the order of round 0 and of the columns.
    pub(crate) fn all() -> Result<Vec<Server>, String> {
        let tokio = Server {
            name: TOKIO.to_owned(),
            how: How::Tokio,
        };
        let echokit = Target::every()?.into_iter().map(|target| Server {
            name: target.label(),
            how: How::Echokit(target),
        });
        Ok(std::iter::once(tokio).chain(echokit).collect())
    }

    /// Whether this server can serve `row` (tokio echoes TCP only).
    pub(crate) fn serves(&self, row: &Row) -> bool {
        !(row.udp && matches!(self.how, How::Tokio))
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

    /// Fails, naming the build command, unless everything `servers` need
    /// is there; warns about builds older than the sources.
    pub(crate) fn require(&self, servers: &[Server]) -> Result<(), String> {
        // (program, what it is, the command that builds it, its sources)
        let mut needed = vec![(
            &self.echokit,
            "native echokit (also the load client)",
            "just build",
            Some("src"),
        )];
        if servers.iter().any(|s| matches!(s.how, How::Tokio)) {
            needed.push((
                &self.tokio_echo,
                "the tokio reference server",
                "cargo build --release --example tokio_echo",
                Some("examples/tokio_echo.rs"),
            ));
        }
        let wasm = |s: &Server| matches!(&s.how, How::Echokit(t) if t.build == Build::Wasm);
        if servers.iter().any(wasm) {
            needed.push((
                &self.wasm,
                "the wasm echokit component",
                "just build-wasm",
                Some("src"),
            ));
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

    /// The command that starts `server` for `row` on a free loopback port.
    pub(crate) fn server_command(&self, server: &Server, row: &Row) -> Result<Command, String> {
        let listen: &[&str] = match row.udp {
            true => &["--listen", "127.0.0.1:0", "--udp"],
            false => &["--listen", "127.0.0.1:0"],
        };
        let mut command = match &server.how {
            How::Tokio => Command::new(&self.tokio_echo),
            How::Echokit(target) => {
                let mut command = target.command()?;
                command.arg("serve");
                command
            }
        };
        command.args(listen);
        Ok(command)
    }

    /// How `command` reads, paths relative to the project.
    pub(crate) fn describe(&self, command: &Command) -> String {
        std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|part| self.show(Path::new(part)).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Starts `server` on a free port and waits for its listening line;
    /// its stderr goes on ours, tagged, and is kept for the results.
    pub(crate) fn start(&self, server: &Server, row: &Row) -> Result<ServerProcess, String> {
        let stderr_to = StderrTo::EchoAndKeep(format!("    [{} server] ", server.name));
        ServerProcess::start(
            self.server_command(server, row)?,
            stderr_to,
            STARTUP_TIMEOUT,
        )
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
