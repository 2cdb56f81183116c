//! The WebAssembly side of the programs under test: the `echokit.wasm`
//! component (built here when missing) and the wasmtime that runs it.

use crate::paths::target_dir;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// `$ECHOKIT_WASM` if set, else target/wasm32-wasip2/release/echokit.wasm
/// (`just build-wasm`); it may not exist.
pub fn wasm_artifact() -> PathBuf {
    match std::env::var_os("ECHOKIT_WASM") {
        Some(path) => PathBuf::from(path),
        None => target_dir().join("wasm32-wasip2/release/echokit.wasm"),
    }
}

/// Where to look for wasmtime, in order: `$WASMTIME` alone if set, else
/// `wasmtime` in each `PATH` directory, then `~/.cargo/bin/wasmtime`.
pub fn wasmtime_candidates() -> Vec<PathBuf> {
    if let Some(path) = std::env::var_os("WASMTIME") {
        return vec![PathBuf::from(path)];
    }
    let mut found: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("wasmtime"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        found.push(Path::new(&home).join(".cargo/bin/wasmtime"));
    }
    found
}

/// The first of [`wasmtime_candidates`] that runs `--version`; else the
/// candidates, listed for a message.
pub fn find_wasmtime() -> Result<PathBuf, String> {
    let candidates = wasmtime_candidates();
    candidates
        .iter()
        .find(|path| {
            Command::new(path)
                .arg("--version")
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|out| out.status.success())
        })
        .cloned()
        .ok_or_else(|| {
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
}

/// Runs `wasmtime run WASM --version` once, so that wasmtime compiles the
/// component into its cache here rather than in the processes a test
/// times; `remedy` ends the message when the component fails.
pub fn warm_wasm(wasmtime: &Path, wasm: &Path, remedy: &str) -> Result<(), String> {
    let out = Command::new(wasmtime)
        .arg("run")
        .arg(wasm)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run {}: {err}", wasmtime.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`{} run {} --version` failed ({}): {}{remedy}",
            wasmtime.display(),
            wasm.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// wasmtime and the component it runs.
#[derive(Debug)]
pub struct WasmTools {
    /// The wasmtime executable.
    pub wasmtime: PathBuf,
    /// echokit.wasm.
    pub wasm: PathBuf,
}

/// Finds wasmtime and the wasm artifact, building the latter: once per test
/// binary, whichever test asks first; every wasm test fails with the same
/// message when this does (the tests never skip).
pub fn wasm_tools() -> Result<&'static WasmTools, String> {
    static TOOLS: OnceLock<Result<WasmTools, String>> = OnceLock::new();
    TOOLS
        .get_or_init(find_wasm_tools)
        .as_ref()
        .map_err(Clone::clone)
}

/// `echokit.wasm`, found or built once per test binary (see
/// [`wasm_tools`]).
pub fn component() -> Result<PathBuf, String> {
    static WASM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    WASM.get_or_init(find_or_build_wasm).clone()
}

fn find_wasm_tools() -> Result<WasmTools, String> {
    let wasmtime = wasmtime_or_remedy()?;
    let wasm = component()?;
    // Warm wasmtime's compilation cache before dozens of parallel processes.
    warm_wasm(&wasmtime, &wasm, "")?;
    Ok(WasmTools { wasmtime, wasm })
}

/// `$WASMTIME`, else `wasmtime` on `PATH`, else `~/.cargo/bin/wasmtime`.
fn wasmtime_or_remedy() -> Result<PathBuf, String> {
    find_wasmtime().map_err(|looked_at| {
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
        .current_dir(crate::paths::root())
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
