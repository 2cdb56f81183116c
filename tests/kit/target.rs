//! The `Target` adapters: how to run each build of echokit.
//!
//! - native: the binary cargo built for this test (`CARGO_BIN_EXE_echokit`);
//! - wasm: `wasmtime run -S inherit-network <echokit.wasm> ARGS...`.
//!
//! The wasm tools are resolved once per run (a `OnceLock`), see
//! [`wasm_tools`] and the documentation at the top of tests/conformance.rs.

use super::table::Build;
use crate::support;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

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

    /// The same as an assert_cmd command (with timeouts and stdin helpers).
    pub fn assert_command(&self) -> Result<assert_cmd::Command, String> {
        Ok(assert_cmd::Command::from_std(self.command()?))
    }
}

/// wasmtime and the component it runs.
#[derive(Debug)]
pub struct WasmTools {
    pub wasmtime: PathBuf,
    pub wasm: PathBuf,
}

/// Finds wasmtime and the wasm artifact, building the latter: once per run,
/// whichever test asks first; every wasm test fails with the same message
/// when this does.
pub fn wasm_tools() -> Result<&'static WasmTools, String> {
    static TOOLS: OnceLock<Result<WasmTools, String>> = OnceLock::new();
    TOOLS
        .get_or_init(find_wasm_tools)
        .as_ref()
        .map_err(Clone::clone)
}

fn find_wasm_tools() -> Result<WasmTools, String> {
    let wasmtime = find_wasmtime()?;
    let wasm = find_or_build_wasm()?;
    // Warm wasmtime's compilation cache before dozens of parallel processes.
    support::warm_wasm(&wasmtime, &wasm, "")?;
    Ok(WasmTools { wasmtime, wasm })
}

/// `$WASMTIME`, else `wasmtime` on `PATH`, else `~/.cargo/bin/wasmtime`.
fn find_wasmtime() -> Result<PathBuf, String> {
    support::find_wasmtime().map_err(|looked_at| {
        format!(
            "wasmtime not found (looked at {looked_at}): run `just setup` to install it, \
             or set WASMTIME=/path/to/wasmtime"
        )
    })
}

/// `$ECHOKIT_WASM` as is, else `cargo build --release --target
/// wasm32-wasip2` (a no-op when up to date) and the artifact it reports.
fn find_or_build_wasm() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("ECHOKIT_WASM") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "ECHOKIT_WASM={} is not a file: run `just build-wasm`, or unset \
                 ECHOKIT_WASM to let the kit build it",
                path.display()
            ))
        };
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let out = Command::new(&cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--bin",
            "echokit",
            "--message-format=json-render-diagnostics",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run {}: {err}", Path::new(&cargo).display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "`cargo build --release --target wasm32-wasip2` failed ({}); run `just setup` \
             (installs the wasm32-wasip2 target and wasmtime) and `just build-wasm`, or set \
             ECHOKIT_WASM to a built echokit.wasm:\n{}",
            out.status,
            tail.join("\n")
        ));
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" || msg["target"]["name"] != "echokit" {
            continue;
        }
        let wasm = msg["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(".wasm"));
        if let Some(wasm) = wasm {
            return Ok(PathBuf::from(wasm));
        }
    }
    Err(format!(
        "`cargo build --release --target wasm32-wasip2` reported no echokit .wasm artifact:\n{stderr}"
    ))
}
