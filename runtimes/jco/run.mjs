// Runs a WASI 0.2 command component that `jco transpile` turned into an ES
// module, on preview2-shim, with the permissions of `wasmtime run`: no
// network unless `-S inherit-network`, no name lookup unless
// `-S allow-ip-name-lookup`, no directory unless `--dir`, no environment
// variable unless `--env` (jco run itself grants all of them).
//
//   node run.mjs [-S inherit-network] [-S allow-ip-name-lookup]
//                [--dir HOST[::GUEST]]... [--env NAME[=VALUE]]...
//                COMPONENT.js [ARGS...]
//
// Exit status: the guest's own (wasi:cli/exit), else 0 when wasi:cli/run
// returned ok and 1 when it returned err or trapped, as `jco run`.

import process from "node:process";
import { basename } from "node:path";
import { pathToFileURL } from "node:url";
import {
  _setArgs,
  _setEnv,
  _setTerminalStderr,
  _setTerminalStdin,
  _setTerminalStdout,
} from "@bytecodealliance/preview2-shim/cli";
import { _setPreopens } from "@bytecodealliance/preview2-shim/filesystem";
import { _denyDnsLookup, _denyTcp, _denyUdp } from "@bytecodealliance/preview2-shim/sockets";

const usage = "usage: node run.mjs [-S inherit-network] [-S allow-ip-name-lookup] " +
  "[--dir HOST[::GUEST]]... [--env NAME[=VALUE]]... COMPONENT.js [ARGS...]";

const args = process.argv.slice(2);
const granted = new Set();
const preopens = {};
const env = {};
while (args.length > 0 && args[0].startsWith("-")) {
  const [flag, value] = [args.shift(), args.shift()];
  if (value === undefined) {
    console.error(`run.mjs: ${flag} needs a value\n${usage}`);
    process.exit(2);
  }
  if (flag === "-S" && ["inherit-network", "allow-ip-name-lookup"].includes(value)) {
    granted.add(value);
  } else if (flag === "--dir") {
    const [host, guest] = value.split("::");
    preopens[guest ?? host] = host;
  } else if (flag === "--env") {
    const [name, ...rest] = value.split("=");
    env[name] = rest.length > 0 ? rest.join("=") : (process.env[name] ?? "");
  } else {
    console.error(`run.mjs: unsupported option ${flag} ${value}\n${usage}`);
    process.exit(2);
  }
}
const component = args.shift();
if (component === undefined) {
  console.error(usage);
  process.exit(2);
}

if (!granted.has("inherit-network")) {
  _denyTcp();
  _denyUdp();
}
if (!granted.has("allow-ip-name-lookup")) {
  _denyDnsLookup();
}
_setPreopens(preopens);
_setEnv(env);
_setArgs([basename(component, ".js"), ...args]);
// A pipe is no terminal (preview2-shim otherwise always reports one).
if (!process.stdin.isTTY) _setTerminalStdin(undefined);
if (!process.stdout.isTTY) _setTerminalStdout(undefined);
if (!process.stderr.isTTY) _setTerminalStderr(undefined);

const module = await import(pathToFileURL(component).href);
if (!module.run?.run) {
  console.error(`run.mjs: ${component} exports no wasi:cli/run`);
  process.exit(1);
}
try {
  await module.run.run();
  // Let stdout drain, as jco run does.
  await new Promise((resolve) => setTimeout(resolve));
  process.exit(0);
} catch (err) {
  // wasi:cli/run returned err (a ComponentError with its payload): the
  // guest has said why. Anything else is a trap or a host failure.
  if (!(err && "payload" in err)) {
    console.error(`run.mjs: ${component}: ${err?.message ?? err}`);
  }
  process.exit(1);
}
