//! The scenario drivers: one function per `kind` of the table, grouped by
//! what they exercise; this module holds what they share.

mod client;
mod server;
mod stream;
mod udp;

use super::check::{self, Outcome};
use super::payload::{self, Loaded};
use super::std_client;
use super::table::{Build, Column, Deviation, Expect, Kind, Scenario, Stdin};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use testkit::{lock, ServerProcess, StderrTo, Target};

/// How long a server may take to print its `listening on` line.
const STARTUP: Duration = Duration::from_secs(60);

/// Shorter limit for commands expected to fail at once: one that wrongly
/// starts serving is killed after this.
const FAIL_FAST_TIMEOUT: Duration = Duration::from_secs(20);

/// One scenario in one pairing.
pub(crate) struct Case {
    pub scenario: Arc<Scenario>,
    pub server: Option<Build>,
    pub client: Option<Column>,
    /// The server's backend or runtime, `None` for its default.
    pub server_on: Option<String>,
    /// The echokit client's backend or runtime, `None` for its default.
    pub client_on: Option<String>,
    pub fixtures: PathBuf,
}

impl Case {
    /// The declared deviation covering this pairing, if any.
    /// One that names a runtime of the pairing comes first.
    pub(crate) fn deviation(&self) -> Option<&Deviation> {
        let on = [&self.server_on, &self.client_on];
        let covers = |d: &&Deviation| {
            let named = on
                .iter()
                .any(|r| r.as_ref().is_some_and(|r| d.runtimes.contains(r)));
            d.applies(self.server, self.client) && named
        };
        let deviations = &self.scenario.deviations;
        (deviations.iter().find(covers)).or_else(|| {
            (deviations.iter())
                .find(|d| d.runtimes.is_empty() && d.applies(self.server, self.client))
        })
    }

    /// The server's target: its build, on the pairing's backend or runtime.
    fn server_target(&self) -> Result<Target, String> {
        Ok(Target::on(self.server_build()?, self.server_on.as_deref()))
    }

    /// An echokit client of `build`, on the pairing's backend or runtime.
    fn client_target(&self, build: Build) -> Target {
        Target::on(build, self.client_on.as_deref())
    }

    /// The expected outcome, after any deviation.
    fn expect(&self) -> &Expect {
        self.deviation()
            .and_then(|d| d.expect.as_ref())
            .unwrap_or(&self.scenario.expect)
    }

    fn payload(&self, seed_offset: u64) -> Result<Loaded, String> {
        let spec = self
            .scenario
            .payload
            .as_ref()
            .ok_or_else(|| format!("scenario `{}` needs a payload", self.scenario.name))?;
        payload::load(spec, &self.fixtures, seed_offset)
    }

    fn server_build(&self) -> Result<Build, String> {
        self.server
            .ok_or_else(|| "this scenario needs a server build".to_owned())
    }

    fn column(&self) -> Result<Column, String> {
        self.client
            .ok_or_else(|| "this scenario needs a client column".to_owned())
    }

    fn start_server(&self) -> Result<ServerProcess, String> {
        let s = &self.scenario;
        let server = start_server(&self.server_target()?, &s.listen, &s.server_args)?;
        if let Some(prefix) = &s.listening_prefix {
            if !server.line.starts_with(prefix.as_str()) {
                return Err(format!(
                    "the server printed {:?}, expected it to start with {prefix:?}",
                    server.line
                ));
            }
        }
        Ok(server)
    }
}

/// Runs one case; a failure says what the scenario shows and which
/// declared deviation applied.
pub(crate) fn run(case: &Case) -> Result<(), String> {
    run_kind(case).map_err(|err| {
        let mut msg = format!(
            "scenario `{}`: {}\n",
            case.scenario.name, case.scenario.about
        );
        if let Some(d) = case.deviation() {
            msg.push_str(&format!("declared deviation: {}\n", d.reason));
        }
        msg + &err
    })
}

fn run_kind(case: &Case) -> Result<(), String> {
    if case.client.is_some_and(Column::is_check) {
        return client::check_column(case);
    }
    match case.scenario.kind {
        Kind::Echo => stream::echo(case),
        Kind::ManySmall => stream::many_small(case),
        Kind::Concurrent => stream::concurrent(case),
        Kind::SlowReader => stream::slow_reader(case),
        Kind::Reset => stream::reset(case),
        Kind::IdleTimeout => server::idle_timeout(case),
        Kind::MaxConnections => server::max_connections(case),
        Kind::Restart => server::restart(case),
        Kind::ServeFails => server::serve_fails(case),
        Kind::SendFails => client::send_fails(case),
        Kind::NoNetwork => client::no_network(case),
        Kind::ComponentWorld => client::component_world(case),
        Kind::ThousandClients => stream::thousand_clients(case),
        Kind::UdpBurst => udp::udp_burst(case),
        Kind::UdpTwoClients => udp::udp_two_clients(case),
        Kind::TcpAndUdp => udp::tcp_and_udp(case),
    }
}

/// Runs `serve --listen LISTEN EXTRA...` of `target` and waits for its
/// `listening on` line.
fn start_server(target: &Target, listen: &str, extra: &[String]) -> Result<ServerProcess, String> {
    let mut cmd = target.command()?;
    cmd.args(["serve", "--listen", listen]).args(extra);
    ServerProcess::start(cmd, StderrTo::Keep, STARTUP)
}

/// Adds the server's command and stderr to a failure.
fn with_server<T>(server: &ServerProcess, result: Result<T, String>) -> Result<T, String> {
    result.map_err(|err| format!("{err}\n{}", server.describe()))
}

/// Values for the `{...}` placeholders of `client_args`.
#[derive(Default)]
struct Places {
    server: Option<SocketAddr>,
    payload: Option<PathBuf>,
    output: Option<PathBuf>,
    closed: Option<SocketAddr>,
    datagram_size: Option<usize>,
}

fn substitute(args: &[String], places: &Places) -> Result<Vec<String>, String> {
    args.iter()
        .map(|arg| {
            let mut arg = arg.clone();
            let values = [
                ("{server}", places.server.map(|a| a.to_string())),
                (
                    "{payload}",
                    places.payload.as_ref().map(|p| p.display().to_string()),
                ),
                (
                    "{output}",
                    places.output.as_ref().map(|p| p.display().to_string()),
                ),
                ("{closed}", places.closed.map(|a| a.to_string())),
                (
                    "{datagram_size}",
                    places.datagram_size.map(|n| n.to_string()),
                ),
            ];
            for (key, value) in values {
                if arg.contains(key) {
                    let value =
                        value.ok_or_else(|| format!("no value for {key} in this scenario"))?;
                    arg = arg.replace(key, &value);
                }
            }
            Ok(arg)
        })
        .collect()
}

/// Runs an echokit client build as the table says: writes the payload to
/// `dir`, substitutes the placeholders, checks the outcome.
fn echokit_client(
    case: &Case,
    target: Target,
    places: Places,
    payload: &Arc<[u8]>,
    dir: &Path,
    index: usize,
    expect: &Expect,
) -> Result<Outcome, String> {
    let payload_path = dir.join(format!("payload-{index}.bin"));
    std::fs::write(&payload_path, &payload[..])
        .map_err(|err| format!("cannot write {}: {err}", payload_path.display()))?;
    let output_path = dir.join(format!("output-{index}.bin"));
    let places = Places {
        payload: Some(payload_path),
        output: Some(output_path.clone()),
        datagram_size: case.scenario.params.datagram_size,
        ..places
    };
    let args = substitute(&case.scenario.client_args, &places)?;
    let stdin = case
        .scenario
        .client_stdin
        .map(|Stdin::Payload| &payload[..]);
    let out = check::run(&target.with_dir(dir), &args, stdin, check::PROCESS_TIMEOUT)?;
    let uses_output = case
        .scenario
        .client_args
        .iter()
        .any(|a| a.contains("{output}"));
    check::check(
        expect,
        &out,
        payload,
        uses_output.then_some(output_path.as_path()),
    )?;
    Ok(out)
}

/// Bytes per datagram of the std UDP client: `params.datagram_size`, else
/// 1024 as `echokit send --udp`.
fn datagram_size(case: &Case) -> usize {
    case.scenario
        .params
        .datagram_size
        .unwrap_or(DEFAULT_DATAGRAM_SIZE)
}

const DEFAULT_DATAGRAM_SIZE: usize = 1024;

/// One echo by the case's client column against `addr`; returns how long
/// the client took.
fn column_echo(
    case: &Case,
    addr: SocketAddr,
    payload: &Arc<[u8]>,
    dir: &Path,
    index: usize,
) -> Result<Duration, String> {
    match case.column()?.build() {
        None => {
            let start = Instant::now();
            let echo = if case.scenario.udp {
                std_client::udp_echo(addr, payload, datagram_size(case))?
            } else {
                std_client::echo(addr, payload)?
            };
            let elapsed = start.elapsed();
            check::verify_echo(payload, &echo)?;
            Ok(elapsed)
        }
        Some(build) => {
            let places = Places {
                server: Some(addr),
                ..Places::default()
            };
            let out = echokit_client(
                case,
                case.client_target(build),
                places,
                payload,
                dir,
                index,
                case.expect(),
            )?;
            Ok(out.elapsed)
        }
    }
}

fn tempdir() -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix("echokit-conformance-")
        .tempdir()
        .map_err(|err| format!("cannot create a temporary directory: {err}"))
}

/// Holds threads until opened; `open(false)` sends them home.
#[derive(Default)]
struct Gate {
    state: Mutex<Option<bool>>,
    opened: Condvar,
}

impl Gate {
    fn open(&self, go: bool) {
        *lock(&self.state) = Some(go);
        self.opened.notify_all();
    }

    /// Waits for the gate; whether to go on.
    fn pass(&self) -> bool {
        let mut state = lock(&self.state);
        loop {
            if let Some(go) = *state {
                return go;
            }
            state = self.opened.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}
