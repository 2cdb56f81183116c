//! How to run each build of echokit.
//!
//! - native: the binary cargo built for the running test ([`native_bin`]);
//! - wasm: `wasmtime run -S inherit-network <echokit.wasm> ARGS...`, with
//!   the directories a command names preopened at the same path, so that
//!   file arguments read the same for both builds.
//!
//! [`native_bin`]: crate::paths::native_bin

use crate::paths::native_bin;
use crate::wasm::wasm_tools;
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

/// How to start one build of echokit.
#[derive(Debug, Clone)]
pub struct Target {
    /// Which build.
    pub build: Build,
    /// For wasm: pass `-S inherit-network` (the normal case).
    pub network: bool,
    /// For wasm: directories to preopen, each at its own host path. (A
    /// WASI program reaches only the directories it is given.)
    pub dirs: Vec<PathBuf>,
}

impl Target {
    /// `build`, with the network.
    pub fn new(build: Build) -> Self {
        Target {
            build,
            network: true,
            dirs: Vec::new(),
        }
    }

    /// Without WASI network permission (wasm only).
    pub fn without_network(build: Build) -> Self {
        Target {
            network: false,
            ..Target::new(build)
        }
    }

    /// Grants access to `dir` (a scratch directory holding the files the
    /// command names).
    pub fn with_dir(mut self, dir: &Path) -> Self {
        self.dirs.push(dir.to_path_buf());
        self
    }

    /// A command running this build, echokit's arguments still to add;
    /// fails with the remedy when the wasm tools cannot be had.
    pub fn command(&self) -> Result<Command, String> {
        match self.build {
            Build::Native => Ok(Command::new(native_bin())),
            Build::Wasm => {
                let tools = wasm_tools()?;
                let mut cmd = Command::new(&tools.wasmtime);
                cmd.arg("run");
                if self.network {
                    cmd.args(["-S", "inherit-network"]);
                }
                for dir in &self.dirs {
                    let mut map = dir.clone().into_os_string();
                    map.push("::");
                    map.push(dir);
                    cmd.arg("--dir").arg(map);
                }
                cmd.arg(&tools.wasm);
                Ok(cmd)
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
