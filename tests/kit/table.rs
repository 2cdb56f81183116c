//! The schema of `fixtures/scenarios.toml` (documented at the top of that
//! file). Unknown keys are errors, so a typo cannot silently drop a check.

use serde::Deserialize;
use std::fmt;
use std::path::Path;
pub(crate) use testkit::Build;

/// The whole table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Table {
    pub scenario: Vec<Scenario>,
}

/// A client column: an echokit build's `send`, the kit's std client, or
/// an echokit build's `check` (the library's scenario of the same
/// question, for scenarios that name one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Column {
    Native,
    Wasm,
    Std,
    NativeCheck,
    WasmCheck,
}

impl Column {
    /// The check columns, which every scenario naming a `check` gets.
    pub(crate) const CHECKS: [Column; 2] = [Column::NativeCheck, Column::WasmCheck];

    /// The echokit build behind this column, `None` for the std client.
    pub(crate) fn build(self) -> Option<Build> {
        match self {
            Column::Native | Column::NativeCheck => Some(Build::Native),
            Column::Wasm | Column::WasmCheck => Some(Build::Wasm),
            Column::Std => None,
        }
    }

    /// Whether this column runs `echokit check`.
    pub(crate) fn is_check(self) -> bool {
        Column::CHECKS.contains(&self)
    }
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Column::Native => "native",
            Column::Wasm => "wasm",
            Column::Std => "std",
            Column::NativeCheck => "native_check",
            Column::WasmCheck => "wasm_check",
        })
    }
}

/// Which driver runs a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    Echo,
    ManySmall,
    Concurrent,
    SlowReader,
    Reset,
    IdleTimeout,
    MaxConnections,
    Restart,
    ServeFails,
    SendFails,
    NoNetwork,
    ComponentWorld,
    ThousandClients,
    UdpBurst,
    UdpTwoClients,
    TcpAndUdp,
}

/// One entry of the table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Scenario {
    pub name: String,
    pub about: String,
    pub kind: Kind,
    /// Whether a TCP connection or listener is involved (usage errors,
    /// permission checks and the component check have none); the wasm
    /// coverage rule counts these.
    #[serde(default = "yes")]
    pub tcp: bool,
    /// Whether the scenario speaks UDP: the std column then uses its UDP
    /// client, and `{closed}` is a UDP port. Counted by the coverage rule
    /// like `tcp`.
    #[serde(default)]
    pub udp: bool,
    pub servers: Vec<Build>,
    pub clients: Vec<Column>,
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub listening_prefix: Option<String>,
    #[serde(default)]
    pub server_args: Vec<String>,
    #[serde(default)]
    pub payload: Option<Payload>,
    #[serde(default)]
    pub client_args: Vec<String>,
    /// `tcp_and_udp`: the arguments of the echokit UDP client that runs
    /// alongside the TCP one (`client_args`).
    #[serde(default)]
    pub udp_client_args: Vec<String>,
    /// What the echokit client reads on stdin: "payload", or nothing.
    #[serde(default)]
    pub client_stdin: Option<Stdin>,
    #[serde(default)]
    pub expect: Expect,
    #[serde(default)]
    pub exclusive: bool,
    #[serde(default)]
    pub params: Params,
    /// The `echokit check` scenario that asks the same question: every
    /// server then also gets the check columns.
    #[serde(default)]
    pub check: Option<String>,
    #[serde(default, rename = "deviation")]
    pub deviations: Vec<Deviation>,
}

fn yes() -> bool {
    true
}

fn default_listen() -> String {
    "127.0.0.1:0".to_owned()
}

/// What to feed a client's standard input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Stdin {
    Payload,
}

/// Where a payload comes from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Payload {
    /// A file under `fixtures/`.
    pub file: Option<String>,
    /// Or a generator run at test time.
    pub generate: Option<Generator>,
    pub bytes: Option<usize>,
    pub count: Option<usize>,
    pub seed: Option<u64>,
    /// Pins the bytes (lowercase hex).
    pub sha256: Option<String>,
}

/// Deterministic payload generators (tests/kit/payload.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Generator {
    Random,
    Messages,
}

/// Expected outcome of one echokit invocation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Expect {
    pub exit: Option<i32>,
    #[serde(default)]
    pub exit_any_of: Vec<i32>,
    #[serde(default)]
    pub exit_nonzero: bool,
    pub stdout: Option<OutputCheck>,
    pub stderr: Option<OutputCheck>,
    /// The file named by `{output}`.
    pub output: Option<OutputCheck>,
    /// `io::ErrorKind` (Debug spelling) the std column must meet.
    pub std_error: Option<String>,
}

impl Expect {
    /// Whether `code` is an accepted exit status.
    pub(crate) fn accepts_exit(&self, code: Option<i32>) -> bool {
        let Some(code) = code else { return false };
        if self.exit_nonzero && code != 0 {
            return true;
        }
        self.exit == Some(code) || self.exit_any_of.contains(&code)
    }

    /// The accepted exit statuses, for messages.
    pub(crate) fn describe_exit(&self) -> String {
        let mut parts = Vec::new();
        if let Some(code) = self.exit {
            parts.push(code.to_string());
        }
        parts.extend(self.exit_any_of.iter().map(|c| c.to_string()));
        if self.exit_nonzero {
            parts.push("any non-zero".to_owned());
        }
        parts.join(" or ")
    }
}

/// Predicates on one output (see tests/kit/check.rs).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutputCheck {
    #[serde(default)]
    pub is_empty: bool,
    #[serde(default)]
    pub equals_payload: bool,
    #[serde(default)]
    pub digest_of_payload: bool,
    #[serde(default)]
    pub contains: Vec<String>,
    #[serde(default)]
    pub contains_any: Vec<String>,
}

/// Numbers a driver needs; each driver says which it requires.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Params {
    pub connections: Option<usize>,
    pub threads: Option<usize>,
    pub slow_bytes: Option<usize>,
    pub slow_recv_buffer: Option<usize>,
    pub stall_ms: Option<u64>,
    pub settle_ms: Option<u64>,
    pub latency_bound_ms: Option<u64>,
    pub resets: Option<usize>,
    pub reset_bytes: Option<usize>,
    pub reset_after_echo_bytes: Option<usize>,
    pub idle_min_ms: Option<u64>,
    pub idle_max_ms: Option<u64>,
    pub active_interval_ms: Option<u64>,
    pub active_ms: Option<u64>,
    pub held_connections: Option<usize>,
    pub refuse_within_ms: Option<u64>,
    pub refused_expect: Option<Expect>,
    pub wit_dir: Option<String>,
    pub world: Option<String>,
    pub package: Option<String>,
    /// UDP: bytes per datagram of the std client, and `{datagram_size}` in
    /// `client_args` (default 1024, as `send --udp`).
    pub datagram_size: Option<usize>,
    /// udp_burst: datagrams the std client keeps in flight at most.
    pub window: Option<usize>,
}

/// Reads a required parameter: `param!(scenario, stall_ms)`.
macro_rules! param {
    ($scenario:expr, $field:ident) => {
        $scenario.params.$field.clone().ok_or_else(|| {
            format!(
                "fixtures/scenarios.toml: scenario `{}` needs params.{}",
                $scenario.name,
                stringify!($field)
            )
        })?
    };
}
pub(crate) use param;

/// A declared difference between builds, with its reason.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Deviation {
    /// Client columns it applies to (empty: any).
    #[serde(default)]
    pub clients: Vec<Column>,
    /// Runtimes (or native backends) it applies to, on either side of the
    /// pairing (empty: any, the default ones included).
    #[serde(default)]
    pub runtimes: Vec<String>,
    /// Server builds it applies to (empty: any).
    #[serde(default)]
    pub servers: Vec<Build>,
    pub reason: String,
    /// Send the payload as one stream instead of many writes.
    #[serde(default)]
    pub send_as_one_stream: bool,
    /// Replaces the scenario's `expect`.
    pub expect: Option<Expect>,
    /// For the check columns: the check fails, with a reason containing
    /// this.
    pub check_fails: Option<String>,
    /// For the check columns: `--timeout` for the scenario, in seconds
    /// (below the kit's 45 s per process), where the runtime is slow but
    /// right.
    pub check_timeout_secs: Option<u32>,
    /// The pairing runs alone, as exclusive scenarios do: it is slow
    /// enough that the suite's other tests would push it past its time.
    #[serde(default)]
    pub exclusive: bool,
}

impl Deviation {
    /// Whether this deviation covers the pairing.
    pub(crate) fn applies(&self, server: Option<Build>, client: Option<Column>) -> bool {
        let server_ok =
            self.servers.is_empty() || server.is_some_and(|s| self.servers.contains(&s));
        let client_ok =
            self.clients.is_empty() || client.is_some_and(|c| self.clients.contains(&c));
        server_ok && client_ok
    }
}

/// Reads and checks the table.
pub(crate) fn load(path: &Path) -> Result<Table, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let table: Table = toml::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?;
    let mut names = std::collections::HashSet::new();
    for s in &table.scenario {
        if !names.insert(s.name.as_str()) {
            return Err(format!(
                "{}: scenario `{}` appears twice",
                path.display(),
                s.name
            ));
        }
        validate(s).map_err(|err| format!("{}: scenario `{}`: {err}", path.display(), s.name))?;
    }
    Ok(table)
}

fn validate(s: &Scenario) -> Result<(), String> {
    if let Some(p) = &s.payload {
        match (&p.file, p.generate) {
            (Some(_), None) => {}
            (None, Some(Generator::Random)) if p.bytes.is_some() && p.seed.is_some() => {}
            (None, Some(Generator::Messages)) if p.count.is_some() && p.seed.is_some() => {}
            _ => {
                return Err(
                    "payload needs `file`, or `generate = \"random\"` with bytes and seed, \
                     or `generate = \"messages\"` with count and seed"
                        .into(),
                )
            }
        }
    }
    let pairs = matches!(
        s.kind,
        Kind::Echo
            | Kind::ManySmall
            | Kind::Concurrent
            | Kind::SlowReader
            | Kind::Reset
            | Kind::IdleTimeout
            | Kind::MaxConnections
            | Kind::Restart
            | Kind::ThousandClients
            | Kind::UdpBurst
            | Kind::UdpTwoClients
            | Kind::TcpAndUdp
    );
    if pairs && (s.servers.is_empty() || s.clients.is_empty()) {
        return Err("a pairing scenario needs servers and clients".into());
    }
    match s.kind {
        Kind::ServeFails if !s.clients.is_empty() => {
            return Err("serve_fails takes no clients".into())
        }
        Kind::SendFails if !s.servers.is_empty() => {
            return Err("send_fails takes no servers".into())
        }
        Kind::NoNetwork
            if s.servers.iter().any(|b| *b != Build::Wasm)
                || s.clients.iter().any(|c| *c != Column::Wasm) =>
        {
            return Err("no_network concerns the wasm build only".into())
        }
        Kind::ThousandClients if s.clients != [Column::Std] => {
            return Err("thousand_clients is driven by the std column".into())
        }
        Kind::UdpBurst | Kind::UdpTwoClients if !s.udp || s.tcp => {
            return Err("a UDP-only kind needs `udp = true` and `tcp = false`".into())
        }
        Kind::TcpAndUdp if !(s.udp && s.tcp) => {
            return Err("tcp_and_udp needs `udp = true` and `tcp = true`".into())
        }
        Kind::TcpAndUdp if s.udp_client_args.is_empty() => {
            return Err("tcp_and_udp needs `udp_client_args` for its UDP client".into())
        }
        // Both clients start together only if both wait for their input.
        Kind::UdpTwoClients | Kind::TcpAndUdp if s.client_stdin != Some(Stdin::Payload) => {
            return Err(
                "this kind starts its echokit clients together by closing their stdin at \
                 once: it needs `client_stdin = \"payload\"` and `--input -`"
                    .into(),
            )
        }
        _ => {}
    }
    if s.udp && s.tcp && s.kind != Kind::TcpAndUdp {
        return Err("only tcp_and_udp speaks both TCP and UDP: set `tcp = false`".into());
    }
    if !s.udp_client_args.is_empty() && s.kind != Kind::TcpAndUdp {
        return Err("only tcp_and_udp takes `udp_client_args`".into());
    }
    for d in &s.deviations {
        if d.reason.trim().is_empty() {
            return Err("a deviation needs a reason".into());
        }
    }
    if let Some(name) = &s.check {
        let Some(check) = echokit::check::scenario(name) else {
            return Err(format!(
                "`check = {name:?}` names no scenario of echokit check"
            ));
        };
        if (check.protocol == echokit::net::Protocol::Udp) != s.udp || s.servers.is_empty() {
            return Err(format!(
                "`check = {name:?}` asks about {} echo, on the scenario's servers",
                check.protocol.name()
            ));
        }
    }
    if s.clients.iter().any(|c| c.is_check()) {
        return Err("the check columns come from `check = NAME`, not from `clients`".into());
    }
    Ok(())
}
