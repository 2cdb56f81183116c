//! How to run each build of echokit.
//!
//! - native: the binary cargo built for the running test ([`native_bin`]),
//!   on its default I/O backend or on one named (`native@epoll`);
//! - wasm: echokit.wasm on a runtime of fixtures/runtimes.toml ([`runtime`])
//!   (`wasm` on the default, `wasm@jco`), with the directories a command
//!   names preopened at the same path, so that file arguments read the same
//!   for both builds.
//!
//! [`native_bin`]: crate::paths::native_bin

use crate::paths::native_bin;
use crate::runtime;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A build of echokit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Build {
    /// The cargo-built binary.
    Native,
    /// `echokit.wasm` run by a WebAssembly runtime.
    Wasm,
}

impl Build {
    /// Both builds.
    pub const ALL: [Build; 2] = [Build::Native, Build::Wasm];

    /// `native` or `wasm`, as test names spell it.
    pub fn name(self) -> &'static str {
        match self {
            Build::Native => "native",
            Build::Wasm => "wasm",
        }
    }
}

impl fmt::Display for Build {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The native backend that is not the default where io_uring works.
pub const EPOLL: &str = "epoll";

/// How to start one build of echokit: the native binary on an I/O
/// backend, or the component on a runtime.
#[derive(Debug, Clone)]
pub struct Target {
    /// Which build.
    pub build: Build,
    /// Native: the `--io` backend it runs on (through `ECHOKIT_IO`), `None`
    /// for its default; wasm: the runtime, `None` for the default one.
    pub variant: Option<String>,
    /// For wasm: grant the network (the normal case).
    pub network: bool,
    /// For wasm: with the network, grant host-name lookup too (for
    /// addresses written as names).
    pub name_lookup: bool,
    /// For wasm: directories to preopen, each at its own host path, so
    /// that file arguments mean the same in both builds. (A WASI program
    /// reaches only the directories it is given.)
    pub dirs: Vec<PathBuf>,
}

impl Target {
    /// `build` on its default backend or runtime, with the network.
    pub fn new(build: Build) -> Self {
        Target {
            build,
            variant: None,
            network: true,
            name_lookup: false,
            dirs: Vec::new(),
        }
    }

    /// `build` on the backend or runtime `variant` names.
    pub fn on(build: Build, variant: Option<&str>) -> Self {
        Target {
            variant: variant.map(str::to_owned),
            ..Target::new(build)
        }
    }

    /// Every way to run echokit: native on its default backend and on
    /// epoll, the component on the default runtime and on every other.
    pub fn every() -> Result<Vec<Target>, String> {
        let mut every = vec![
            Target::new(Build::Native),
            Target::on(Build::Native, Some(EPOLL)),
        ];
        for runtime in runtime::all()? {
            let variant = (!runtime.default).then_some(runtime.name.as_str());
            every.push(Target::on(Build::Wasm, variant));
        }
        Ok(every)
    }

    /// Without WASI network permission (wasm only).
    pub fn without_network(self) -> Self {
        Target {
            network: false,
            ..self
        }
    }

    /// With host-name lookup granted as well as the network (wasm only).
    pub fn with_name_lookup(self) -> Self {
        Target {
            name_lookup: true,
            ..self
        }
    }

    /// Grants access to `dir` (a scratch directory holding the files the
    /// command names).
    pub fn with_dir(mut self, dir: &Path) -> Self {
        self.dirs.push(dir.to_path_buf());
        self
    }

    /// `native`, `native@epoll`, `wasm`, `wasm@jco`...
    pub fn label(&self) -> String {
        match &self.variant {
            None => self.build.name().to_owned(),
            Some(variant) => format!("{}@{variant}", self.build),
        }
    }

    /// A command running this build, echokit's arguments still to add;
    /// fails with the remedy when what it needs cannot be had.
    pub fn command(&self) -> Result<Command, String> {
        match self.build {
            Build::Native => {
                let mut cmd = Command::new(native_bin());
                if let Some(io) = &self.variant {
                    cmd.env("ECHOKIT_IO", io);
                }
                Ok(cmd)
            }
            Build::Wasm => {
                let runtime = match &self.variant {
                    Some(name) => runtime::named(name)?,
                    None => runtime::default()?,
                };
                runtime.command(self.network, self.name_lookup, &self.dirs)
            }
        }
    }

    /// Like [`Target::command`], for tests that cannot go on without it.
    pub fn must(&self) -> Command {
        self.command().unwrap_or_else(|err| panic!("{err}"))
    }
}

/// Starts the native `echokit serve --listen 127.0.0.1:0 ARGS`, its
/// stderr kept; panics with what went wrong when it does not listen.
pub fn native_server(args: &[&str]) -> crate::ServerProcess {
    let mut cmd = Target::new(Build::Native).must();
    cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(args);
    crate::ServerProcess::start(
        cmd,
        crate::StderrTo::Keep,
        std::time::Duration::from_secs(10),
    )
    .unwrap_or_else(|err| panic!("{err}"))
}
