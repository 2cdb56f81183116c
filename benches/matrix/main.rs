//! The benchmark matrix: the reference tokio echo server
//! (`examples/tokio_echo.rs`), native echokit on each of its backends
//! (`native` is the default, io_uring where the kernel allows it;
//! `native@epoll`), and wasm echokit on every runtime of
//! fixtures/runtimes.toml (`wasm` on the wasmtime CLI, `wasm@host`,
//! `wasm@jco`, and any added through `ECHOKIT_RUNTIME`), each loaded by the
//! native `echokit bench --json` client over 127.0.0.1. Each measurement
//! also reads the server's CPU time from /proc.
//!
//! ```text
//! just build && just build-wasm && cargo build --release --example tokio_echo
//! cargo bench --bench matrix                          # the whole matrix
//! cargo bench --bench matrix -- --only stream         # rows named or starting so
//! cargo bench --bench matrix -- --servers native,wasm@host # a subset of servers
//! cargo bench --bench matrix -- --check               # targets on the last results
//! ```
//!
//! Every row is measured `--rounds` times (`ECHOKIT_BENCH_ROUNDS`, default
//! 3) for `--secs` seconds (`ECHOKIT_BENCH_SECS`, default 2). Each
//! measurement gets a freshly started server, warmed up for 0.3 s first;
//! within a round the servers take turns in an order rotated by the round
//! number. The medians over rounds are reported, with the spread.
//!
//! Progress goes to stderr; the markdown table to stdout and
//! `target/bench/latest.md`; every measurement (each the load client's
//! `bench::Report`) and the medians to `target/bench/latest.json`, which
//! `--check` reads back and tests against the targets.
//!
//! The runner never builds anything: it says which command builds what it
//! misses. Run without `--bench` (as `cargo test --benches` does), it only
//! checks that its tables are consistent.
//!
//! Modules: [`rows`] (the loads), [`servers`] (what runs them), [`run`]
//! (the measurements), [`results`] (what is kept), [`table`] (what is
//! printed), [`targets`] (what `--check` judges).

// Host-only: it starts processes and reads /proc. Built for WASI (as
// `cargo clippy --all-targets --target wasm32-wasip2` does) it is empty.
#![cfg_attr(target_os = "wasi", no_main)]
#![cfg(not(target_os = "wasi"))]

mod results;
mod rows;
mod run;
mod servers;
mod table;
mod targets;

fn main() -> std::process::ExitCode {
    host::main()
}

/// Options and the three things the runner does: measure, check, or
/// check its own tables.
mod host {
    use crate::results::{Machine, Results};
    use crate::servers::{Server, Tools};
    use crate::{rows, run, table, targets};
    use clap::Parser;
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::process::{Command, ExitCode};
    use std::thread;

    /// The benchmark matrix (see the module documentation).
    #[derive(Debug, Parser)]
    #[command(name = "matrix")]
    struct Options {
        /// Passed by `cargo bench`; without it, only check the tables.
        #[arg(long, hide = true)]
        bench: bool,
        /// Test target/bench/latest.json against the targets; runs nothing.
        #[arg(long)]
        check: bool,
        /// Run only these rows (a prefix such as `stream` picks all that start so).
        #[arg(long, value_delimiter = ',', value_name = "ROW")]
        only: Vec<String>,
        /// Run only these servers (tokio, native, native@epoll, wasm,
        /// wasm@RUNTIME).
        #[arg(long, value_delimiter = ',', value_name = "SERVER")]
        servers: Vec<String>,
        /// Rounds per row.
        #[arg(long, env = "ECHOKIT_BENCH_ROUNDS", default_value_t = 3,
              value_parser = clap::value_parser!(u32).range(1..))]
        rounds: u32,
        /// Seconds per measurement.
        #[arg(long, env = "ECHOKIT_BENCH_SECS", default_value_t = 2.0)]
        secs: f64,
    }

    pub(crate) fn main() -> ExitCode {
        let options = Options::parse();
        let outcome = if options.check {
            check()
        } else if options.bench {
            bench(&options)
        } else {
            targets::self_test().map(|()| {
                eprintln!("matrix: rows and targets are consistent; run `cargo bench --bench matrix` to measure");
                true
            })
        };
        match outcome {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(message) => {
                eprintln!("matrix: {message}");
                ExitCode::from(2)
            }
        }
    }

    fn results_path() -> PathBuf {
        testkit::paths::target_dir().join("bench")
    }

    /// Runs the matrix and writes the results; whether every measurement
    /// succeeded.
    fn bench(options: &Options) -> Result<bool, String> {
        if !(options.secs > 0.0 && options.secs.is_finite()) {
            return Err(format!("--secs {} is not a positive number", options.secs));
        }
        let rows = rows::select(&options.only)?;
        let every = Server::all()?;
        if let Some(unknown) =
            (options.servers.iter()).find(|&name| !every.iter().any(|s| s.name == *name))
        {
            let names: Vec<&str> = every.iter().map(|s| s.name.as_str()).collect();
            return Err(format!(
                "no server named {unknown:?}; the servers are {}",
                names.join(", ")
            ));
        }
        let servers: Vec<Server> = (every.iter())
            .filter(|server| options.servers.is_empty() || options.servers.contains(&server.name))
            .cloned()
            .collect();
        let tools = Tools::locate();
        tools.require(&servers)?;
        let machine = machine(&tools);
        eprintln!("{}", machine.line());
        let rounds = options.rounds as usize;
        eprintln!(
            "matrix: {} rows x {} servers x {rounds} rounds, {} s each after a {} s warm-up",
            rows.len(),
            servers.len(),
            options.secs,
            run::WARMUP_SECS
        );
        let complete = rows.len() == rows::ROWS.len() && servers.len() == every.len();
        let results = run::matrix(
            &tools,
            &rows,
            &servers,
            rounds,
            options.secs,
            machine,
            complete,
        );
        let markdown = format!(
            "{}\n\n{}",
            results.machine.line(),
            table::table(&rows, &results)
        );
        let dir = results_path();
        fs::create_dir_all(&dir)
            .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
        let (json_path, md_path) = (dir.join("latest.json"), dir.join("latest.md"));
        let pretty = serde_json::to_string_pretty(&results).map_err(|err| err.to_string())?;
        write(&json_path, &(pretty + "\n"))?;
        write(&md_path, &(markdown.clone() + "\n"))?;
        println!("{markdown}");
        eprintln!(
            "matrix: wrote {} and {}",
            tools.show(&json_path),
            tools.show(&md_path)
        );
        if !complete {
            eprintln!(
                "matrix: partial run (--only/--servers): `--check` will report what is missing"
            );
        }
        let failures = results
            .runs
            .iter()
            .filter(|run| run.error.is_some())
            .count();
        if failures > 0 {
            eprintln!("matrix: {failures} measurement(s) failed; see the FAILED lines above");
        }
        Ok(failures == 0)
    }

    fn write(path: &Path, text: &str) -> Result<(), String> {
        fs::write(path, text).map_err(|err| format!("cannot write {}: {err}", path.display()))
    }

    /// Tests the last results against the targets; `Ok(true)` if all pass.
    fn check() -> Result<bool, String> {
        let path = results_path().join("latest.json");
        let text = fs::read_to_string(&path).map_err(|err| {
            format!(
                "no benchmark results to check at {} ({err}): run `just bench` (or `cargo bench --bench matrix`) first",
                path.display()
            )
        })?;
        let results: Results = serde_json::from_str(&text).map_err(|err| {
            format!(
                "{} is not a matrix result ({err}): run `just bench` again",
                path.display()
            )
        })?;
        println!("checking {} ({})", path.display(), results.machine.line());
        if !results.settings.complete {
            println!("note: these results come from a partial run (--only/--servers)");
        }
        Ok(targets::check(&results))
    }

    fn command_output(program: &Path, args: &[&str]) -> String {
        Command::new(program)
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned())
    }

    fn machine(tools: &Tools) -> Machine {
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let rustc = std::env::var_os("RUSTC")
            .map(PathBuf::from)
            .unwrap_or_else(|| "rustc".into());
        Machine {
            nproc: thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            date: command_output(Path::new("date"), &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
            rustc: command_output(&rustc, &["-V"]),
            wasmtime: command_output(&tools.wasmtime, &["--version"]),
        }
    }
}
