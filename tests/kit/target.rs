//! The `Target` adapters: how to run each build of echokit.
//!
//! - native: the binary cargo built for this test (`CARGO_BIN_EXE_echokit`);
//! - wasm: `wasmtime run -S inherit-network <echokit.wasm> ARGS...`.
//!
//! The wasm tools are resolved once per run, see `support::wasm_tools` and
//! the documentation at the top of tests/conformance.rs.

use super::table::Build;
use crate::support;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How to start one build of echokit.
#[derive(Debug, Clone)]
pub struct Target {
    pub build: Build,
    /// For wasm: pass `-S inherit-network` (the normal case).
    pub network: bool,
    /// For wasm: directories to preopen, each at its own host path, so that
    /// file arguments mean the same in both builds. (A WASI program reaches
    /// only the directories it is given: `--dir PATH::PATH`.)
    pub dirs: Vec<PathBuf>,
}

impl Target {
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

    /// A command running this build, arguments still to add.
    pub fn command(&self) -> Result<Command, String> {
        match self.build {
            Build::Native => Ok(Command::new(support::native_bin())),
            Build::Wasm => {
                let tools = support::wasm_tools()?;
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

    /// The same as an assert_cmd command (with timeouts and stdin helpers).
    pub fn assert_command(&self) -> Result<assert_cmd::Command, String> {
        Ok(assert_cmd::Command::from_std(self.command()?))
    }
}
