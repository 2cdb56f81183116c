//! Client failures: usage errors, refused connections, a component
//! without the network, and the component's declared world.

use super::*;
use crate::kit::std_client::IO_TIMEOUT;
use crate::kit::table::param;
use crate::kit::world;
use std::net::{TcpListener, TcpStream, UdpSocket};
use testkit::limits;

/// A loopback address nobody listens on (TCP) or receives on (UDP):
/// bound, then released.
fn closed_addr(udp: bool) -> Result<SocketAddr, String> {
    if udp {
        let socket = UdpSocket::bind("127.0.0.1:0").map_err(|err| format!("bind: {err}"))?;
        return socket.local_addr().map_err(|err| err.to_string());
    }
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|err| format!("bind: {err}"))?;
    listener.local_addr().map_err(|err| err.to_string())
}

/// 14, 15, udp_refused: `send` fails.
pub(super) fn send_fails(case: &Case) -> Result<(), String> {
    let payload: Arc<[u8]> = case.payload(0)?.bytes.into();
    let closed = closed_addr(case.scenario.udp)?;
    let expect = case.expect();
    match case.column()?.build() {
        None if case.scenario.udp => {
            let wanted = expect
                .std_error
                .as_deref()
                .ok_or("the std column needs `expect.std_error` (an io::ErrorKind) in the table")?;
            let err = std_client::udp_refused(closed)?;
            if format!("{:?}", err.kind()) == wanted {
                Ok(())
            } else {
                Err(format!(
                    "std UDP client: a datagram to {closed} met {:?} ({err}), expected {wanted}",
                    err.kind()
                ))
            }
        }
        None => {
            let wanted = expect
                .std_error
                .as_deref()
                .ok_or("the std column needs `expect.std_error` (an io::ErrorKind) in the table")?;
            match TcpStream::connect_timeout(&closed, IO_TIMEOUT) {
                Ok(_) => Err(format!("std client: connecting to {closed} succeeded")),
                Err(err) if format!("{:?}", err.kind()) == wanted => Ok(()),
                Err(err) => Err(format!(
                    "std client: connecting to {closed} failed with {:?} ({err}), expected {wanted}",
                    err.kind()
                )),
            }
        }
        Some(build) => {
            let dir = tempdir()?;
            let places = Places {
                closed: Some(closed),
                ..Places::default()
            };
            echokit_client(
                case,
                case.client_target(build),
                places,
                &payload,
                dir.path(),
                0,
                expect,
            )
            .map(|_| ())
        }
    }
}

/// 16: the wasm build without `-S inherit-network`.
pub(super) fn no_network(case: &Case) -> Result<(), String> {
    let on = case.server_on.as_deref().or(case.client_on.as_deref());
    let target = Target::on(Build::Wasm, on).without_network();
    let payload: Arc<[u8]> = case.payload(0)?.bytes.into();
    match (case.server, case.client) {
        (Some(Build::Wasm), None) => {
            let out = check::run(&target, &["serve".to_owned()], None, FAIL_FAST_TIMEOUT)?;
            check::check(case.expect(), &out, &payload, None)
        }
        (None, Some(Column::Wasm)) => {
            let args = substitute(&case.scenario.client_args, &Places::default())?;
            let stdin = case.scenario.client_stdin.map(|_| &payload[..]);
            let out = check::run(&target, &args, stdin, FAIL_FAST_TIMEOUT)?;
            check::check(case.expect(), &out, &payload, None)
        }
        _ => Err("no_network runs the wasm server or the wasm client".into()),
    }
}

/// 18: the component's imports are all in the WIT world.
pub(super) fn component_world(case: &Case) -> Result<(), String> {
    let s = &case.scenario;
    let wit_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(param!(s, wit_dir));
    let tools = testkit::wasm::wasm_tools()?;
    world::check_imports(
        &tools.wasm,
        &wit_dir,
        &param!(s, package),
        &param!(s, world),
    )
}

/// A check column: `echokit check --only CHECK` of the column's build
/// against the scenario's server must pass.
pub(super) fn check_column(case: &Case) -> Result<(), String> {
    let s = &case.scenario;
    let name = (s.check.as_deref()).ok_or("a check column needs `check` in the table")?;
    limits::ensure_open_files(4096)?;
    let mut server = case.start_server()?;
    let flag = if s.udp { "--udp-connect" } else { "--connect" };
    let addr = server.addr.to_string();
    let mut args: Vec<String> = ["check", flag, &addr, "--only", name, "--json"]
        .map(str::to_owned)
        .into();
    if let Some(secs) = case.deviation().and_then(|d| d.check_timeout_secs) {
        args.extend(["--timeout".to_owned(), secs.to_string()]);
    }
    let target = case.client_target(case.column()?.build().ok_or("no build")?);
    let out = check::run(&target, &args, None, check::PROCESS_TIMEOUT)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = (stdout.lines())
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["type"] == "scenario" && line["name"] == name);
    let fails = case.deviation().and_then(|d| d.check_fails.as_deref());
    let result = match (line, fails) {
        (Some(line), None) if line["result"] == "pass" && out.code == Some(0) => Ok(()),
        (Some(line), Some(fails))
            if line["result"] == "fail"
                && line["reason"].as_str().is_some_and(|r| r.contains(fails)) =>
        {
            Ok(())
        }
        (Some(line), fails) => Err(format!(
            "`{}`: {name} {} (exit {:?}): {}{}",
            out.what,
            line["result"],
            out.code,
            line["reason"],
            fails.map_or(String::new(), |f| format!(
                "; the declared deviation expects a failure whose reason contains {f:?}"
            ))
        )),
        (None, _) => Err(format!(
            "`{}` (exit {:?}) reported no {name} line; stdout: {stdout}; stderr: {}",
            out.what,
            out.code,
            String::from_utf8_lossy(&out.stderr)
        )),
    };
    with_server(&server, result)?;
    server.ensure_alive()
}
