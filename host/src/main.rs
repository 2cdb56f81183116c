//! # echokit-host
//!
//! A small, generic host for WASI 0.2 command components (components that
//! export `wasi:cli/run`), built on the `wasmtime` and `wasmtime-wasi` crates.
//! Its command line is a subset of `wasmtime run`:
//!
//! ```text
//! echokit-host run [-S inherit-network] [-S tcp=y|n] [-S udp=y|n]
//!                  [-S allow-ip-name-lookup[=y|n]] [-C cache=y|n]
//!                  [--dir HOST_DIR[::GUEST_DIR]]... [--env NAME[=VAL]]...
//!                  COMPONENT [ARGS]...
//! ```
//!
//! ## Why not `wasmtime run`
//!
//! The wasmtime CLI runs the guest on the main thread while the reactor of a
//! multi-thread tokio runtime (the thread that owns epoll) lives on a worker
//! thread, so every socket event the guest waits for crosses threads: the
//! worker sees it and hands it to the main thread. For a network server that
//! is a large part of the cost of a small request. echokit-host runs the
//! guest inside `block_on` of a tokio *current-thread* runtime: the guest,
//! its host calls and the reactor share one thread, and a guest that waits
//! on a socket parks that thread in epoll itself. Measured on a 2-core
//! machine with the echokit echo server: TCP pingpong at 0.73-0.96x native
//! instead of 0.54-0.81x under `wasmtime run` (UDP 0.55x instead of 0.4x),
//! with about half the server CPU per request; bulk streaming is the same.
//!
//! Blocking filesystem calls also run on that thread (wasmtime-wasi's
//! `allow_blocking_current_thread`) instead of tokio's blocking pool; only
//! stdin is read on a helper thread, as wasmtime-wasi always does.
//!
//! ## Capabilities
//!
//! As with `wasmtime run`, the guest gets nothing unless asked for: the
//! network only with `-S inherit-network` (then TCP and UDP, unless
//! `-S tcp=n` / `-S udp=n`; name lookup only with `-S allow-ip-name-lookup`),
//! directories only with `--dir` (read-write), environment variables only
//! with `--env` (`--env NAME` passes the host's value). stdin, stdout and
//! stderr are inherited; the guest's `argv[0]` is the component's file name.
//!
//! ## Exit status
//!
//! | status | when |
//! | --- | --- |
//! | 0 | `wasi:cli/run` returned `ok` |
//! | 1 | `wasi:cli/run` returned `err`; or the component could not be read, compiled or instantiated, or a host error ended it |
//! | N | the guest called `wasi:cli/exit` (`exit(err)` is 1, `exit-with-code(N)` is N) |
//! | 2 | usage error |
//! | 134 | the guest trapped (128 + SIGABRT, as `wasmtime run` on Unix) |
//!
//! Every failure of the host itself is one line on stderr:
//! `echokit-host: COMPONENT: MESSAGE`.
//!
//! ## Compilation cache
//!
//! Compiling a multi-megabyte component takes about a second, so compiled
//! code is cached under `$XDG_CACHE_HOME/echokit-host/` (or
//! `~/.cache/echokit-host/`), keyed by a hash of the component and of the
//! engine's configuration; see [`cache`]. `-C cache=n` turns it off.

mod cache;
mod cli;
mod host;

use std::io::Write;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let code = match cli.command {
        cli::Command::Run(args) => {
            let options = args.into_options();
            match host::run(&options) {
                Ok(code) => code,
                Err(failure) => {
                    eprintln!(
                        "echokit-host: {}: {}",
                        options.component.display(),
                        failure.message()
                    );
                    failure.exit_code()
                }
            }
        }
    };
    // `process::exit` runs no destructors: flush what the guest wrote.
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code);
}
