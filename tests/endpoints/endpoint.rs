//! One endpoint of the table: how it is started, and one `echokit check`
//! of it.

use crate::broken::{self, Broken};
use echokit::net::Protocol;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use testkit::{Build, ServerProcess, StderrTo, Target};

/// How long a started endpoint may take to answer.
const STARTUP: Duration = Duration::from_secs(10);

/// What a scenario must come out as (a pass when the table is silent).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Expect {
    /// A failure whose reason contains `fail`, for `cause`; with
    /// `sometimes`, a pass too (the endpoint's failure depends on timing).
    Fail {
        fail: String,
        cause: String,
        #[serde(default)]
        sometimes: bool,
    },
    /// `"skip"`: the scenario cannot be asked here.
    Word(Skip),
}

/// The word `skip`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Skip {
    Skip,
}

/// One entry of fixtures/endpoints.toml (its header documents the keys).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Endpoint {
    pub(crate) name: String,
    about: String,
    /// The Debian package of the program, for the remedy when it is missing.
    package: Option<String>,
    command: Option<Vec<String>>,
    /// A file written before the start, `{config}` in the command.
    config: Option<String>,
    broken: Option<Broken>,
    #[serde(default = "yes")]
    tcp: bool,
    #[serde(default)]
    udp: bool,
    /// `check --timeout`, in seconds.
    #[serde(default = "default_timeout")]
    timeout: f64,
    /// `check --proxy-protocol`: the endpoint expects a PROXY header.
    pub(crate) proxy_protocol: Option<String>,
    /// More arguments for the `{upstream}` echokit's `serve`.
    #[serde(default)]
    upstream_args: Vec<String>,
    #[serde(default)]
    pub(crate) expect: BTreeMap<String, Expect>,
}

fn yes() -> bool {
    true
}

fn default_timeout() -> f64 {
    5.0
}

/// A scenario's result in `check --json`.
#[derive(Debug, Deserialize)]
pub(crate) struct Found {
    pub(crate) result: String,
    pub(crate) reason: Option<String>,
}

/// Every scenario's result, by name.
pub(crate) type Results = HashMap<String, Found>;

impl Endpoint {
    /// Whether the table entry is whole and names only real scenarios.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.command.is_some() == self.broken.is_some() {
            return Err("needs a `command` or a `broken` server, not both".into());
        }
        if self.command.is_some() && self.package.is_none() {
            return Err("a command needs the `package` that installs it".into());
        }
        for name in self.expect.keys() {
            let Some(scenario) = echokit::check::scenario(name) else {
                return Err(format!(
                    "`expect` names {name:?}, which is no check scenario"
                ));
            };
            if !self.serves(scenario.protocol) {
                return Err(format!(
                    "`expect` names {name}, of a protocol not checked here"
                ));
            }
        }
        Ok(())
    }

    /// Whether the endpoint's `protocol` echo is checked.
    pub(crate) fn serves(&self, protocol: Protocol) -> bool {
        match protocol {
            Protocol::Tcp => self.tcp,
            Protocol::Udp => self.udp,
        }
    }

    /// Starts the endpoint, runs `echokit check --json` against it once,
    /// and stops it. One endpoint at a time: several third-party servers
    /// (socat forks a process per connection) under load at once change
    /// each other's timing, and so their results.
    pub(crate) fn check(&self) -> Result<Results, String> {
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _alone = testkit::lock(&ONE_AT_A_TIME);
        let dir = tempfile::tempdir().map_err(|err| format!("tempdir: {err}"))?;
        // Programs that drop root (xinetd, as nobody) write there too.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .map_err(|err| format!("chmod {}: {err}", dir.path().display()))?;
        let mut upstream = None;
        let mut process = None;
        let addr = match (self.broken, &self.command) {
            (Some(broken), _) => broken::start(broken),
            (None, Some(command)) => {
                let port = free_port()?;
                let needs_upstream = command
                    .iter()
                    .chain(&self.config)
                    .any(|s| s.contains("{upstream}"));
                let upstream_addr = match needs_upstream {
                    true => {
                        let server = start_upstream(&self.upstream_args)?;
                        let addr = server.addr;
                        upstream = Some(server);
                        Some(addr)
                    }
                    false => None,
                };
                let fill = |text: &str| {
                    text.replace("{port}", &port.to_string())
                        .replace("{dir}", &dir.path().display().to_string())
                        .replace("{config}", &dir.path().join("config").display().to_string())
                        .replace(
                            "{upstream}",
                            &upstream_addr.map(|a| a.to_string()).unwrap_or_default(),
                        )
                };
                if let Some(config) = &self.config {
                    let path = dir.path().join("config");
                    std::fs::write(&path, fill(config))
                        .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
                }
                let args: Vec<String> = command.iter().map(|arg| fill(arg)).collect();
                process = Some(Group::spawn(&args, self.package.as_deref(), dir.path())?);
                SocketAddr::from(([127, 0, 0, 1], port))
            }
            (None, None) => return Err("no command".into()),
        };
        let started = self.wait_ready(addr);
        let results = started.and_then(|()| self.run_check(addr));
        let stderr = process.map(Group::stop).unwrap_or_default();
        drop(upstream);
        results.map_err(|err| {
            format!(
                "{err}\n{} ({}) wrote on stderr: {stderr:?}",
                self.name, self.about
            )
        })
    }

    /// Waits until the endpoint answers: a TCP connection, or (UDP only)
    /// a datagram's echo.
    fn wait_ready(&self, addr: SocketAddr) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < STARTUP {
            let answered = match self.tcp {
                true => TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
                false => udp_answers(addr),
            };
            if answered {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "{} did not answer on {addr} within {STARTUP:?}",
            self.name
        ))
    }

    /// `echokit check --json` of the native build against `addr`.
    fn run_check(&self, addr: SocketAddr) -> Result<Results, String> {
        testkit::limits::ensure_open_files(4096)?;
        let mut cmd = Target::new(Build::Native).command()?;
        cmd.arg("check");
        let addr = addr.to_string();
        if self.tcp {
            cmd.args(["--connect", &addr]);
        }
        if self.udp {
            cmd.args(["--udp-connect", &addr]);
        }
        cmd.args(["--timeout", &self.timeout.to_string(), "--json"]);
        if let Some(version) = &self.proxy_protocol {
            cmd.args(["--proxy-protocol", version]);
        }
        let what = testkit::process::describe(&cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| format!("cannot start `{what}`: {err}"))?;
        let finished = testkit::process::finish_within(child, Duration::from_secs(300));
        let mut results = Results::new();
        for line in finished.stdout.lines() {
            let value: serde_json::Value = serde_json::from_str(line)
                .map_err(|err| format!("`{what}` printed {line:?}, not JSON: {err}"))?;
            if value["type"] == "scenario" {
                let name = value["name"].as_str().unwrap_or_default().to_owned();
                let found = serde_json::from_value(value).map_err(|err| err.to_string())?;
                results.insert(name, found);
            }
        }
        match finished.status.and_then(|s| s.code()) {
            Some(0 | 1) => Ok(results),
            other => Err(format!(
                "`{what}` exited {other:?}; stderr: {}",
                finished.stderr
            )),
        }
    }
}

/// A native echokit serving TCP and UDP on one port, for the proxies to
/// forward to, with `more` arguments; TCP alone when they ask for v1
/// PROXY headers, which have no UDP form (`serve` refuses the two).
pub(crate) fn start_upstream(more: &[String]) -> Result<ServerProcess, String> {
    let v1 = more
        .windows(2)
        .any(|pair| pair == ["--proxy-protocol", "v1"]);
    let mut cmd = Target::new(Build::Native).command()?;
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--tcp"]);
    if !v1 {
        cmd.arg("--udp");
    }
    cmd.args(["--max-connections", "20000"]);
    cmd.args(more);
    ServerProcess::start(cmd, StderrTo::Keep, STARTUP)
}

/// A loopback port free for both TCP and UDP, as far as can be told.
pub(crate) fn free_port() -> Result<u16, String> {
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0").map_err(|err| format!("bind: {err}"))?;
        let port = tcp.local_addr().map_err(|err| err.to_string())?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no loopback port free for both TCP and UDP".into())
}

/// Whether a datagram to `addr` comes back within 200 ms.
fn udp_answers(addr: SocketAddr) -> bool {
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let mut buf = [0; 16];
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .is_ok()
        && socket.send_to(b"ready?", addr).is_ok()
        && socket.recv_from(&mut buf).is_ok()
}

/// A third-party program in a process group of its own, so that the
/// children it forks go with it.
pub(crate) struct Group {
    child: Child,
    stderr: std::thread::JoinHandle<String>,
}

impl Group {
    pub(crate) fn spawn(
        args: &[String],
        package: Option<&str>,
        dir: &Path,
    ) -> Result<Group, String> {
        let program = &args[0];
        let remedy = || {
            format!(
                "{program} is not installed: run `just setup` (it installs the Debian package {})",
                package.unwrap_or(program)
            )
        };
        // Daemons such as haproxy and xinetd live in the sbin directories,
        // which a user's PATH may leave out.
        let path = std::env::var("PATH").unwrap_or_default() + ":/usr/sbin:/sbin";
        let mut child = Command::new(program)
            .env("PATH", path)
            .args(&args[1..])
            .current_dir(dir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::NotFound => remedy(),
                _ => format!("cannot start {}: {err}", args.join(" ")),
            })?;
        let pipe = child.stderr.take();
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
            }
            text
        });
        Ok(Group { child, stderr })
    }

    /// Kills the whole group and returns what it wrote on stderr.
    pub(crate) fn stop(mut self) -> String {
        // SAFETY: kill has no memory-safety preconditions; the group is our
        // child's own.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
        self.stderr.join().unwrap_or_default()
    }
}
