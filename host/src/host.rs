//! Loads a command component and runs it on a current-thread tokio runtime.

use std::fmt;
use std::path::{Path, PathBuf};

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, OptLevel, Store, Trap, WasmBacktrace};
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::cache::CompileCache;

/// Exit status for a run that failed outside the guest's control.
pub(crate) const EXIT_FAILURE: i32 = 1;

/// Exit status for a guest trap: 128 + SIGABRT, as `wasmtime run` on Unix.
pub(crate) const EXIT_TRAP: i32 = 134;

/// What to run and what the guest may use.
#[derive(Debug)]
pub(crate) struct RunOptions {
    /// The component file.
    pub component: PathBuf,
    /// The guest's arguments, `argv[0]` included.
    pub args: Vec<String>,
    /// The guest's environment, and nothing else.
    pub env: Vec<(String, String)>,
    /// Host directories granted to the guest.
    pub dirs: Vec<Preopen>,
    /// The guest's network.
    pub network: NetworkPolicy,
    /// Whether to use the compilation cache.
    pub cache: bool,
}

/// A host directory granted to the guest, read-write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Preopen {
    /// The directory on the host.
    pub host: PathBuf,
    /// Its name in the guest.
    pub guest: String,
}

/// The guest's network permissions; the default grants nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct NetworkPolicy {
    /// Whether the guest may use any address of the host's network.
    pub inherit: bool,
    /// Whether TCP sockets are allowed.
    pub tcp: bool,
    /// Whether UDP sockets are allowed.
    pub udp: bool,
    /// Whether `wasi:sockets/ip-name-lookup` is allowed.
    pub ip_name_lookup: bool,
}

/// Why a run did not end with a status of the guest's choosing.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The host could not set up or finish the run (exit status 1).
    Host(String),
    /// The guest trapped (exit status 134).
    Trap(String),
}

impl Failure {
    /// The one-line message to print after `echokit-host: COMPONENT: `.
    pub(crate) fn message(&self) -> &str {
        match self {
            Failure::Host(message) | Failure::Trap(message) => message,
        }
    }

    /// The process exit status for this failure.
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            Failure::Host(_) => EXIT_FAILURE,
            Failure::Trap(_) => EXIT_TRAP,
        }
    }

    /// A host failure: `what`, then the error's causes, on one line.
    fn host(what: impl fmt::Display, error: &wasmtime::Error) -> Self {
        Failure::Host(format!("{what}: {}", one_line(error)))
    }
}

/// The store's data: the WASI context and the guest's resources.
struct Host {
    /// WASI state: arguments, environment, preopens, network policy.
    ctx: WasiCtx,
    /// Handles to host resources owned by the guest.
    table: ResourceTable,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// Runs the component to completion and returns the process exit status
/// it chose.
pub(crate) fn run(options: &RunOptions) -> Result<i32, Failure> {
    let ctx = wasi_ctx(options)?;
    let engine = engine().map_err(|e| Failure::host("cannot configure wasmtime", &e))?;
    let component = load(&engine, &options.component, options.cache)?;

    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| Failure::host("cannot link WASI", &e))?;
    let mut store = Store::new(
        &engine,
        Host {
            ctx,
            table: ResourceTable::new(),
        },
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Host(format!("cannot start the tokio runtime: {e}")))?;
    runtime.block_on(async {
        let command = match Command::instantiate_async(&mut store, &component, &linker).await {
            Ok(command) => command,
            Err(e) => return guest_error("cannot instantiate", e),
        };
        match command.wasi_cli_run().call_run(&mut store).await {
            Ok(Ok(())) => Ok(0),
            Ok(Err(())) => Ok(EXIT_FAILURE),
            Err(e) => guest_error("wasi:cli/run failed", e),
        }
    })
}

/// The engine: wasmtime's defaults, which are what `wasmtime run` uses
/// (Cranelift at `speed`, on-demand instance allocation, parallel
/// compilation), spelled out where it matters.
///
/// Async support needs no switch in wasmtime 48 (`Config::async_support`
/// is deprecated and does nothing). The pooling allocator is left off: it
/// speeds up creating many instances, and a command creates one.
pub(crate) fn engine() -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.cranelift_opt_level(OptLevel::Speed);
    config.parallel_compilation(true);
    Engine::new(&config)
}

/// Builds the guest's WASI context from the options.
fn wasi_ctx(options: &RunOptions) -> Result<WasiCtx, Failure> {
    let mut builder = WasiCtxBuilder::new();
    builder
        .inherit_stdio()
        // Before the preopens, which capture it: run blocking filesystem
        // calls here rather than on tokio's blocking pool, keeping the guest
        // on its thread (the guest waits for them either way).
        .allow_blocking_current_thread(true)
        .args(&options.args)
        .envs(&options.env);
    for dir in &options.dirs {
        builder
            .preopened_dir(&dir.host, &dir.guest, FsPerms::ReadWrite)
            .map_err(|e| {
                Failure::host(
                    format_args!("cannot open directory {}", dir.host.display()),
                    &e,
                )
            })?;
    }
    let network = options.network;
    if network.inherit {
        builder.inherit_network();
    }
    builder
        .allow_tcp(network.tcp)
        .allow_udp(network.udp)
        .allow_ip_name_lookup(network.ip_name_lookup);
    Ok(builder.build())
}

/// Reads and compiles the component, through the cache when enabled and
/// available.
fn load(engine: &Engine, path: &Path, use_cache: bool) -> Result<Component, Failure> {
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::Host(format!("cannot read the component: {e}")))?;
    let cache = use_cache.then(CompileCache::from_env).flatten();
    let compiled = match &cache {
        Some(cache) => cache.load_or_compile(engine, &bytes),
        None => Component::new(engine, &bytes),
    };
    compiled.map_err(|e| Failure::host("cannot compile the component", &e))
}

/// Turns an error out of the guest's execution into an exit status: the
/// guest's own for `wasi:cli/exit`, else a failure.
fn guest_error(what: &str, error: wasmtime::Error) -> Result<i32, Failure> {
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return Ok(exit.0);
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        let place = error
            .downcast_ref::<WasmBacktrace>()
            .and_then(|trace| trace.frames().iter().find_map(|frame| frame.func_name()))
            .map(|name| format!(" (in {:#})", rustc_demangle::demangle(name)))
            .unwrap_or_default();
        return Err(Failure::Trap(format!("{trap}{place}")));
    }
    Err(Failure::host(what, &error))
}

/// An error and its causes on one line, `a: b: c`, without backtraces.
fn one_line(error: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        // Keep the first line: wasm backtraces and similar details follow it.
        let first = text.lines().next().unwrap_or_default().trim();
        let first = first.strip_suffix(':').unwrap_or(first);
        if !first.is_empty() && !parts.iter().any(|part| part.contains(first)) {
            parts.push(first.to_owned());
        }
    }
    parts.join(": ")
}
