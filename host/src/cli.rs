//! The command line, a subset of `wasmtime run`'s.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::host::{NetworkPolicy, Preopen, RunOptions};

/// `-S` options understood, for help and error messages.
const WASI_KEYS: &str = "inherit-network[=y|n], tcp[=y|n], udp[=y|n], allow-ip-name-lookup[=y|n]";

/// `-C` options understood, for help and error messages.
const CODEGEN_KEYS: &str = "cache[=y|n]";

/// Runs WASI 0.2 command components with the network, the guest and its
/// sockets on one thread.
#[derive(Debug, Parser)]
#[command(name = "echokit-host", version)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Runs a WASI 0.2 command component (one exporting `wasi:cli/run`).
    #[command(override_usage = "echokit-host run [OPTIONS] <COMPONENT> [ARGS]...")]
    Run(RunArgs),
}

/// The arguments of `echokit-host run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// WASI option, or several separated by commas: inherit-network[=y|n]
    /// (let the guest use the host's network), tcp=y|n, udp=y|n (both on
    /// with inherit-network), allow-ip-name-lookup[=y|n] (off by default).
    #[arg(short = 'S', value_name = "KEY[=VAL]", value_parser = parse_wasi_options)]
    pub wasi: Vec<WasiOptions>,

    /// Code generation option: cache[=y|n] (the compilation cache, on by
    /// default).
    #[arg(short = 'C', value_name = "KEY[=VAL]", value_parser = parse_codegen_options)]
    pub codegen: Vec<CodegenOptions>,

    /// Grants the guest a host directory, read-write, as GUEST_DIR (default:
    /// the same path).
    #[arg(long = "dir", value_name = "HOST_DIR[::GUEST_DIR]", value_parser = parse_dir)]
    pub dirs: Vec<Preopen>,

    /// Passes an environment variable to the guest; without a value, the
    /// host's (if set). The guest sees no other variable.
    #[arg(long = "env", value_name = "NAME[=VAL]", value_parser = parse_env)]
    pub envs: Vec<EnvVar>,

    /// The component file, then the arguments passed to it; everything after
    /// COMPONENT goes to the guest.
    #[arg(value_name = "COMPONENT", trailing_var_arg = true, required = true)]
    pub component_and_args: Vec<OsString>,
}

impl RunArgs {
    /// Resolves the arguments into what the host runs; exits with a usage
    /// error if a guest argument is not UTF-8 (WASI arguments are strings).
    pub(crate) fn into_options(self) -> RunOptions {
        let mut network = NetworkSettings::default();
        for option in self.wasi.iter().flat_map(|list| &list.0) {
            network.apply(*option);
        }
        let mut cache = true;
        for option in self.codegen.iter().flat_map(|list| &list.0) {
            match *option {
                CodegenOption::Cache(enable) => cache = enable,
            }
        }
        let env = self
            .envs
            .into_iter()
            .filter_map(|var| match var.value {
                Some(value) => Some((var.name, value)),
                None => std::env::var(&var.name).ok().map(|value| (var.name, value)),
            })
            .collect();

        let mut rest = self.component_and_args.into_iter();
        let component = PathBuf::from(rest.next().expect("clap requires COMPONENT"));
        let mut args = vec![argv0(&component)];
        for arg in rest {
            match arg.into_string() {
                Ok(arg) => args.push(arg),
                Err(arg) => Cli::command()
                    .error(
                        ErrorKind::InvalidUtf8,
                        format!("guest argument {arg:?} is not valid UTF-8"),
                    )
                    .exit(),
            }
        }
        RunOptions {
            component,
            args,
            env,
            dirs: self.dirs,
            network: network.policy(),
            cache,
        }
    }
}

/// The guest's `argv[0]`: the component's file name, which does not leak
/// the host path (as `wasmtime run` does).
fn argv0(component: &Path) -> String {
    component
        .file_name()
        .unwrap_or(component.as_os_str())
        .to_string_lossy()
        .into_owned()
}

/// One `-S` option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WasiOption {
    /// `inherit-network`: any address of the host's network.
    InheritNetwork(bool),
    /// `tcp`: TCP sockets.
    Tcp(bool),
    /// `udp`: UDP sockets.
    Udp(bool),
    /// `allow-ip-name-lookup`: `wasi:sockets/ip-name-lookup`.
    AllowIpNameLookup(bool),
}

/// The options of one `-S` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WasiOptions(pub Vec<WasiOption>);

/// One `-C` option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CodegenOption {
    /// `cache`: the compilation cache.
    Cache(bool),
}

/// The options of one `-C` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CodegenOptions(pub Vec<CodegenOption>);

/// One `--env` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EnvVar {
    /// The variable's name.
    pub name: String,
    /// Its value, or `None` to pass the host's.
    pub value: Option<String>,
}

/// The network switches given so far; later options override earlier ones.
#[derive(Debug, Default)]
struct NetworkSettings {
    /// `inherit-network`.
    inherit: bool,
    /// `tcp`, if given.
    tcp: Option<bool>,
    /// `udp`, if given.
    udp: Option<bool>,
    /// `allow-ip-name-lookup`, if given.
    ip_name_lookup: Option<bool>,
}

impl NetworkSettings {
    /// Records one `-S` option.
    fn apply(&mut self, option: WasiOption) {
        match option {
            WasiOption::InheritNetwork(on) => self.inherit = on,
            WasiOption::Tcp(on) => self.tcp = Some(on),
            WasiOption::Udp(on) => self.udp = Some(on),
            WasiOption::AllowIpNameLookup(on) => self.ip_name_lookup = Some(on),
        }
    }

    /// What wasmtime would grant: inheriting the network turns TCP and UDP
    /// on unless `tcp=n` / `udp=n` say otherwise.
    fn policy(&self) -> NetworkPolicy {
        NetworkPolicy {
            inherit: self.inherit,
            tcp: self.tcp.unwrap_or(self.inherit),
            udp: self.udp.unwrap_or(self.inherit),
            ip_name_lookup: self.ip_name_lookup.unwrap_or(false),
        }
    }
}

/// Parses `KEY[=VAL][,KEY[=VAL]]...` into keys and boolean values.
fn parse_switches(list: &str) -> Result<Vec<(&str, bool)>, String> {
    list.split(',')
        .map(|item| {
            let (key, value) = match item.split_once('=') {
                Some((key, value)) => (key, parse_bool(value).map_err(|e| format!("{key}: {e}"))?),
                None => (item, true),
            };
            Ok((key.trim(), value))
        })
        .collect()
}

/// Parses a boolean option value the way wasmtime does.
fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "y" | "yes" | "true" => Ok(true),
        "n" | "no" | "false" => Ok(false),
        _ => Err(format!("expected y or n, got `{value}`")),
    }
}

/// Parses one `-S` argument.
fn parse_wasi_options(list: &str) -> Result<WasiOptions, String> {
    parse_switches(list)?
        .into_iter()
        .map(|(key, on)| match key {
            "inherit-network" => Ok(WasiOption::InheritNetwork(on)),
            "tcp" => Ok(WasiOption::Tcp(on)),
            "udp" => Ok(WasiOption::Udp(on)),
            "allow-ip-name-lookup" => Ok(WasiOption::AllowIpNameLookup(on)),
            _ => Err(format!(
                "unsupported WASI option `{key}`; supported: {WASI_KEYS}"
            )),
        })
        .collect::<Result<_, _>>()
        .map(WasiOptions)
}

/// Parses one `-C` argument.
fn parse_codegen_options(list: &str) -> Result<CodegenOptions, String> {
    parse_switches(list)?
        .into_iter()
        .map(|(key, on)| match key {
            "cache" => Ok(CodegenOption::Cache(on)),
            _ => Err(format!(
                "unsupported codegen option `{key}`; supported: {CODEGEN_KEYS}"
            )),
        })
        .collect::<Result<_, _>>()
        .map(CodegenOptions)
}

/// Parses `HOST_DIR[::GUEST_DIR]`.
fn parse_dir(spec: &str) -> Result<Preopen, String> {
    let (host, guest) = spec.split_once("::").unwrap_or((spec, spec));
    if host.is_empty() || guest.is_empty() {
        return Err("expected HOST_DIR or HOST_DIR::GUEST_DIR".into());
    }
    Ok(Preopen {
        host: PathBuf::from(host),
        guest: guest.to_owned(),
    })
}

/// Parses `NAME[=VAL]`.
fn parse_env(spec: &str) -> Result<EnvVar, String> {
    let (name, value) = match spec.split_once('=') {
        Some((name, value)) => (name, Some(value.to_owned())),
        None => (spec, None),
    };
    if name.is_empty() {
        return Err("expected NAME or NAME=VALUE".into());
    }
    Ok(EnvVar {
        name: name.to_owned(),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a full command line.
    fn parse(args: &[&str]) -> Result<RunOptions, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("echokit-host").chain(args.iter().copied()))?;
        let Command::Run(run) = cli.command;
        Ok(run.into_options())
    }

    #[test]
    fn network_is_off_by_default() {
        let options = parse(&["run", "x.wasm"]).unwrap();
        assert_eq!(options.network, NetworkPolicy::default());
        assert!(options.cache);
    }

    #[test]
    fn inherit_network_enables_tcp_and_udp() {
        let options = parse(&["run", "-S", "inherit-network", "x.wasm"]).unwrap();
        let expected = NetworkPolicy {
            inherit: true,
            tcp: true,
            udp: true,
            ip_name_lookup: false,
        };
        assert_eq!(options.network, expected);
    }

    #[test]
    fn protocols_can_be_turned_off_in_any_order() {
        let options = parse(&["run", "-S", "udp=n", "-Sinherit-network,tcp=y", "x.wasm"]).unwrap();
        assert!(options.network.inherit && options.network.tcp && !options.network.udp);
        let options = parse(&["run", "-S", "inherit-network", "-S", "tcp=no", "x.wasm"]).unwrap();
        assert!(!options.network.tcp && options.network.udp);
    }

    #[test]
    fn name_lookup_needs_its_own_option() {
        let options = parse(&["run", "-S", "allow-ip-name-lookup", "x.wasm"]).unwrap();
        assert!(options.network.ip_name_lookup && !options.network.inherit);
        let options = parse(&["run", "-S", "allow-ip-name-lookup=n", "x.wasm"]).unwrap();
        assert!(!options.network.ip_name_lookup);
    }

    #[test]
    fn unknown_wasi_option_is_a_usage_error_naming_the_supported_ones() {
        let error = parse(&["run", "-S", "http", "x.wasm"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ValueValidation);
        let message = error.to_string();
        assert!(message.contains("`http`"), "{message}");
        assert!(message.contains("inherit-network"), "{message}");
        assert!(parse(&["run", "-S", "tcp=maybe", "x.wasm"]).is_err());
    }

    #[test]
    fn cache_can_be_turned_off() {
        assert!(!parse(&["run", "-C", "cache=n", "x.wasm"]).unwrap().cache);
        assert!(
            parse(&["run", "-C", "cache=n,cache", "x.wasm"])
                .unwrap()
                .cache
        );
        assert!(parse(&["run", "-C", "parallel", "x.wasm"]).is_err());
    }

    #[test]
    fn dirs_map_host_to_guest() {
        let options = parse(&["run", "--dir", "/tmp/a::/data", "--dir", "b", "x.wasm"]).unwrap();
        assert_eq!(options.dirs[0].host, PathBuf::from("/tmp/a"));
        assert_eq!(options.dirs[0].guest, "/data");
        assert_eq!(options.dirs[1].host, PathBuf::from("b"));
        assert_eq!(options.dirs[1].guest, "b");
        assert!(parse(&["run", "--dir", "::x", "x.wasm"]).is_err());
    }

    #[test]
    fn env_passes_values_or_the_hosts() {
        let options = parse(&[
            "run",
            "--env",
            "A=1=2",
            "--env",
            "PATH",
            "--env",
            "ECHOKIT_HOST_SURELY_UNSET",
            "x.wasm",
        ])
        .unwrap();
        assert_eq!(options.env[0], ("A".to_owned(), "1=2".to_owned()));
        assert_eq!(options.env[1].0, "PATH");
        assert_eq!(options.env.len(), 2);
    }

    #[test]
    fn everything_after_the_component_goes_to_the_guest() {
        let options = parse(&[
            "run",
            "-S",
            "inherit-network",
            "dir/echo.wasm",
            "serve",
            "-v",
            "--listen",
            "127.0.0.1:0",
            "-S",
            "--help",
        ])
        .unwrap();
        assert_eq!(options.component, PathBuf::from("dir/echo.wasm"));
        assert_eq!(
            options.args,
            [
                "echo.wasm",
                "serve",
                "-v",
                "--listen",
                "127.0.0.1:0",
                "-S",
                "--help"
            ]
        );
    }

    #[test]
    fn component_is_required() {
        let error = parse(&["run", "-S", "inherit-network"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
