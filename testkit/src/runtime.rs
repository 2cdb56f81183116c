//! The WebAssembly runtimes echokit.wasm runs on, as data: each is a name,
//! a command template, and how its program is had. They come from
//! fixtures/runtimes.toml, plus `$ECHOKIT_RUNTIMES` (a file of the same
//! form) and `$ECHOKIT_RUNTIME` (`NAME=TEMPLATE`, one runtime on one line),
//! so a user adds a runtime without touching code.

use crate::paths;
use crate::payload::sha256_hex;
use crate::wasm;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

/// One runtime.
#[derive(Clone, Debug, Deserialize)]
pub struct Runtime {
    /// Its name in test names (`wasm_server@NAME`) and tables.
    pub name: String,
    /// What it is, for messages and tables.
    #[serde(default)]
    pub about: String,
    /// The runtime the builds' own tests and benches mean by "wasm": its
    /// name is left out of test names.
    #[serde(default)]
    pub default: bool,
    /// The command, one word per element; placeholders: `{wasmtime}`,
    /// `{echokit_host}`, `{root}` (the project), `{wasm}` (the component),
    /// `{wasm_js}` (the component transpiled by the pinned jco into an ES
    /// module); an element `{network}` stands for
    /// `network` when the network is granted, `{dirs}` for `dir` once per
    /// preopened directory (`{dir}` in it).
    pub command: Vec<String>,
    /// The arguments that grant the network.
    #[serde(default)]
    pub network: Vec<String>,
    /// The arguments that also grant host-name lookup
    /// (`wasi:sockets/ip-name-lookup`), added after `network` when asked.
    #[serde(default)]
    pub name_lookup: Vec<String>,
    /// The arguments that preopen one directory `{dir}` at its own path.
    #[serde(default)]
    pub dir: Vec<String>,
    /// How to install what it needs, for the message when it is missing.
    #[serde(default = "setup")]
    pub install: String,
    /// How many of its processes a test may start at once, when starting
    /// one costs much (unlimited when absent).
    #[serde(default)]
    pub processes_at_once: Option<usize>,
}

fn setup() -> String {
    "just setup".to_owned()
}

/// The runtimes file.
#[derive(Debug, Deserialize)]
struct Runtimes {
    runtime: Vec<Runtime>,
}

/// Every runtime: fixtures/runtimes.toml, then `$ECHOKIT_RUNTIMES`, then
/// `$ECHOKIT_RUNTIME`; the default one first.
pub fn all() -> Result<&'static [Arc<Runtime>], String> {
    static ALL: OnceLock<Result<Vec<Arc<Runtime>>, String>> = OnceLock::new();
    ALL.get_or_init(load).as_deref().map_err(Clone::clone)
}

/// The runtime named `name`.
pub fn named(name: &str) -> Result<Arc<Runtime>, String> {
    (all()?.iter())
        .find(|r| r.name == name)
        .cloned()
        .ok_or_else(|| format!("no runtime named {name:?}"))
}

/// The default runtime.
pub fn default() -> Result<Arc<Runtime>, String> {
    all()?
        .first()
        .cloned()
        .ok_or_else(|| "no runtime is declared".to_owned())
}

fn read(path: &Path) -> Result<Vec<Runtime>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let file: Runtimes =
        toml::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?;
    Ok(file.runtime)
}

fn load() -> Result<Vec<Arc<Runtime>>, String> {
    let mut runtimes = read(&paths::root().join("fixtures/runtimes.toml"))?;
    if let Some(extra) = std::env::var_os("ECHOKIT_RUNTIMES") {
        runtimes.extend(read(Path::new(&extra))?);
    }
    if let Ok(line) = std::env::var("ECHOKIT_RUNTIME") {
        runtimes.push(one_line(&line)?);
    }
    for (i, runtime) in runtimes.iter().enumerate() {
        let valid = !runtime.name.is_empty()
            && (runtime.name.chars()).all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid || runtimes[..i].iter().any(|r| r.name == runtime.name) {
            return Err(format!(
                "runtime name {:?} is empty, not [A-Za-z0-9_-], or taken",
                runtime.name
            ));
        }
        let names_the_component =
            |arg: &String| arg.contains("{wasm}") || arg.contains("{wasm_js}");
        if !runtime.command.iter().any(names_the_component) {
            return Err(format!(
                "runtime {}: its command names neither {{wasm}} nor {{wasm_js}}",
                runtime.name
            ));
        }
    }
    runtimes.sort_by_key(|r| !r.default);
    if runtimes.iter().filter(|r| r.default).count() != 1 {
        return Err("exactly one runtime must be the default".to_owned());
    }
    Ok(runtimes.into_iter().map(Arc::new).collect())
}

/// `NAME=TEMPLATE`: a wasmtime-like runtime (`-S inherit-network` grants
/// the network, `--dir D::D` a directory), its command the template's
/// words.
fn one_line(line: &str) -> Result<Runtime, String> {
    let (name, template) = line
        .split_once('=')
        .ok_or_else(|| format!("ECHOKIT_RUNTIME={line:?} is not NAME=TEMPLATE"))?;
    Ok(Runtime {
        name: name.trim().to_owned(),
        about: format!("from ECHOKIT_RUNTIME: {}", template.trim()),
        default: false,
        command: template.split_whitespace().map(str::to_owned).collect(),
        network: vec!["-S".into(), "inherit-network".into()],
        name_lookup: vec!["-S".into(), "allow-ip-name-lookup".into()],
        dir: vec!["--dir".into(), "{dir}::{dir}".into()],
        install: setup(),
        processes_at_once: None,
    })
}

impl Runtime {
    /// A command running `wasm` (echokit's arguments still to add), with
    /// the network when `network` (and name lookup too when
    /// `name_lookup`), and `dirs` preopened.
    pub fn command(
        &self,
        network: bool,
        name_lookup: bool,
        dirs: &[PathBuf],
    ) -> Result<Command, String> {
        let mut words: Vec<String> = Vec::new();
        for word in &self.command {
            match word.as_str() {
                "{network}" if network => {
                    words.extend(self.network.iter().cloned());
                    if name_lookup {
                        words.extend(self.name_lookup.iter().cloned());
                    }
                }
                "{network}" => {}
                "{dirs}" => {
                    for dir in dirs {
                        let dir = dir.display().to_string();
                        words.extend(self.dir.iter().map(|w| w.replace("{dir}", &dir)));
                    }
                }
                _ => words.push(self.fill(word)?),
            }
        }
        let (program, args) = words.split_first().ok_or("an empty command")?;
        let mut cmd = Command::new(program);
        cmd.args(args);
        Ok(cmd)
    }

    /// `word` with its placeholders' values, each had (found, built or
    /// transpiled) only when named.
    fn fill(&self, word: &str) -> Result<String, String> {
        let mut word = word.to_owned();
        let remedy =
            |err: String| format!("runtime {}: {err} (install: `{}`)", self.name, self.install);
        if word.contains("{wasmtime}") {
            let wasmtime = wasm::wasm_tools()
                .map_err(remedy)?
                .wasmtime
                .display()
                .to_string();
            word = word.replace("{wasmtime}", &wasmtime);
        }
        if word.contains("{echokit_host}") {
            let host = echokit_host().map_err(remedy)?.display().to_string();
            word = word.replace("{echokit_host}", &host);
        }
        if word.contains("{root}") {
            word = word.replace("{root}", &paths::root().display().to_string());
        }
        if word.contains("{wasm}") {
            let wasm = wasm::component().map_err(remedy)?;
            word = word.replace("{wasm}", &wasm.display().to_string());
        }
        if word.contains("{wasm_js}") {
            let module = jco_module().map_err(remedy)?;
            word = word.replace("{wasm_js}", &module.display().to_string());
        }
        Ok(word)
    }
}

/// The `echokit-host` of the running test's profile, built by cargo (a
/// no-op when up to date).
fn echokit_host() -> Result<PathBuf, String> {
    static HOST: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    HOST.get_or_init(|| {
        let profile = paths::profile();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(&cargo)
            .current_dir(paths::root())
            .args(["build", "--profile", &profile, "-p", "echokit-host"])
            .stdin(Stdio::null())
            .output()
            .map_err(|err| format!("cannot run cargo: {err}"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
            return Err(format!(
                "`cargo build --profile {profile} -p echokit-host` failed:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        Ok(paths::target_dir().join(&profile).join("echokit-host"))
    })
    .clone()
}

/// The component transpiled by the pinned jco into an ES module, once per
/// component: under runtimes/jco/transpiled/SHA256/, where Node.js finds
/// preview2-shim in runtimes/jco/node_modules.
fn jco_module() -> Result<PathBuf, String> {
    static MODULE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    MODULE.get_or_init(transpile).clone()
}

fn transpile() -> Result<PathBuf, String> {
    let dir = paths::root().join("runtimes/jco");
    let jco = dir.join("node_modules/.bin/jco");
    if !jco.is_file() {
        return Err(format!(
            "{} is missing: run `just setup` (it runs `npm ci` in runtimes/jco; Node.js and npm \
             come from the distribution)",
            jco.display()
        ));
    }
    let wasm = wasm::component()?;
    let bytes =
        std::fs::read(&wasm).map_err(|err| format!("cannot read {}: {err}", wasm.display()))?;
    let out = dir.join("transpiled").join(&sha256_hex(&bytes)[..16]);
    let module = out.join("echokit.js");
    if module.is_file() {
        return Ok(module);
    }
    // Another process may transpile the same component: each writes its
    // own directory, then renames it into place.
    let staging = dir
        .join("transpiled")
        .join(format!(".{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let run = Command::new(&jco)
        .arg("transpile")
        .arg(&wasm)
        .arg("-o")
        .arg(&staging)
        .args(["--name", "echokit", "-q"])
        .stdin(Stdio::null())
        .output()
        .map_err(|err| {
            format!(
                "cannot run {} (is Node.js installed?): {err}",
                jco.display()
            )
        })?;
    if !run.status.success() {
        return Err(format!(
            "`jco transpile {}` failed: {}",
            wasm.display(),
            String::from_utf8_lossy(&run.stderr)
        ));
    }
    // The generated module is an ES module whatever package.json is near.
    std::fs::write(staging.join("package.json"), "{\"type\":\"module\"}\n")
        .map_err(|err| format!("cannot write into {}: {err}", staging.display()))?;
    match std::fs::rename(&staging, &out) {
        Ok(()) => {}
        Err(_) if module.is_file() => {
            let _ = std::fs::remove_dir_all(&staging);
        }
        Err(err) => {
            return Err(format!(
                "cannot move {} into place: {err}",
                staging.display()
            ))
        }
    }
    Ok(module)
}
