//! `echokit check` against echo endpoints this project did not write
//! (socat, ncat, haproxy and socat as proxies in front of echokit,
//! xinetd's internal echo) and against servers broken on purpose
//! (tests/endpoints/broken.rs): every scenario's result on every endpoint
//! is held to what fixtures/endpoints.toml says was measured, each
//! difference from a pass with its cause.
//!
//! One named test per endpoint and scenario (`socat::half_close_tail`);
//! the endpoint is started on a free loopback port and checked once, by
//! whichever of its tests runs first. A third-party program that is not
//! installed makes its tests fail with the command that installs it
//! (`just setup`); nothing is skipped.

// Host-only: it starts processes. Built for WASI (as `cargo clippy
// --all-targets --target wasm32-wasip2` does) it is empty.
#![cfg_attr(target_os = "wasi", no_main)]
#![cfg(not(target_os = "wasi"))]

mod broken;
mod endpoint;
mod proxy;

use endpoint::{Endpoint, Expect, Results};
use libtest_mimic::{Arguments, Failed, Trial};
use serde::Deserialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

/// fixtures/endpoints.toml.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    endpoint: Vec<Endpoint>,
}

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/endpoints.toml");
    let mut trials = match load(&path) {
        Ok(table) => trials(table),
        Err(err) => vec![Trial::test("endpoints::table", move || Err(err.into()))],
    };
    trials.extend(proxy::trials());
    libtest_mimic::run(&args, trials).exit_code()
}

fn load(path: &std::path::Path) -> Result<Table, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let table: Table = toml::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?;
    for endpoint in &table.endpoint {
        endpoint
            .validate()
            .map_err(|err| format!("{}: endpoint `{}`: {err}", path.display(), endpoint.name))?;
    }
    Ok(table)
}

/// One trial per endpoint and scenario of the protocols it serves.
fn trials(table: Table) -> Vec<Trial> {
    let mut trials = Vec::new();
    for endpoint in table.endpoint {
        let endpoint = Arc::new(endpoint);
        let results: Arc<OnceLock<Result<Results, String>>> = Arc::default();
        for scenario in echokit::check::SCENARIOS {
            // The PROXY protocol scenarios are asked of endpoints that
            // expect a header; the others would only skip them.
            let proxied = endpoint.proxy_protocol.is_some();
            if !endpoint.serves(scenario.protocol) || (scenario.needs_proxy_protocol() && !proxied)
            {
                continue;
            }
            let (endpoint, results) = (Arc::clone(&endpoint), Arc::clone(&results));
            let name = format!("{}::{}", endpoint.name, scenario.name);
            trials.push(Trial::test(name, move || {
                let results = results.get_or_init(|| endpoint.check());
                let results = results.as_ref().map_err(|err| Failed::from(err.as_str()))?;
                judge(&endpoint, scenario.name, results).map_err(Failed::from)
            }));
        }
    }
    trials
}

/// Holds `scenario`'s result on `endpoint` to the table's expectation.
fn judge(endpoint: &Endpoint, scenario: &str, results: &Results) -> Result<(), String> {
    let Some(found) = results.get(scenario) else {
        return Err(format!("`echokit check` reported nothing for {scenario}"));
    };
    let reason = found.reason.as_deref().unwrap_or("");
    let (matches, expected) = match endpoint.expect.get(scenario) {
        None => (found.result == "pass", "a pass".to_owned()),
        Some(Expect::Word(_)) => (found.result == "skip", "a skip".to_owned()),
        Some(Expect::Fail {
            fail,
            cause,
            sometimes,
        }) => (
            (found.result == "fail" && reason.contains(fail.as_str()))
                || (*sometimes && found.result == "pass"),
            format!(
                "{}a failure whose reason contains {fail:?} (because {cause})",
                if *sometimes { "a pass or " } else { "" }
            ),
        ),
    };
    match matches {
        true => Ok(()),
        false => Err(format!(
            "{}: {scenario} came out {} ({reason:?}), but fixtures/endpoints.toml expects {expected}",
            endpoint.name, found.result
        )),
    }
}
