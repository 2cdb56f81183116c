# echokit tasks. `just --list` shows them; `just setup test` is the whole
# suite from a fresh machine with only rustup.

wasmtime_version := "48.0.8"
cargo_fuzz_version := "0.13.2"
wasm := "target/wasm32-wasip2/release/echokit.wasm"

# List the recipes.
default:
    @just --list

# Debian packages of the third-party echo endpoints `echokit check` is tested
# against, and iproute2 for the network namespaces of tests/many_hosts.rs.
endpoint_packages := "socat ncat haproxy xinetd iproute2"

# Install what the builds and tests need (idempotent; fast when done).
setup:
    rustup target add wasm32-wasip2
    @if dpkg -s {{endpoint_packages}} >/dev/null 2>&1; then \
        echo "{{endpoint_packages}} already installed"; \
    else \
        echo "installing {{endpoint_packages}} (Debian packages)"; \
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {{endpoint_packages}}; \
    fi
    @if wasmtime --version 2>/dev/null | grep -qx "wasmtime {{wasmtime_version}}.*"; then \
        echo "wasmtime {{wasmtime_version}} already installed"; \
    else \
        echo "installing wasmtime-cli {{wasmtime_version}} (builds from source, about 7 minutes)"; \
        cargo install --locked wasmtime-cli@{{wasmtime_version}}; \
    fi
    @if cargo fuzz --version 2>/dev/null | grep -q "^cargo-fuzz {{cargo_fuzz_version}}"; then \
        echo "cargo-fuzz {{cargo_fuzz_version}} already installed"; \
    else \
        cargo install --locked cargo-fuzz@{{cargo_fuzz_version}}; \
    fi
    @if command -v node >/dev/null && command -v npm >/dev/null; then \
        echo "Node.js $(node --version) and npm $(npm --version) already installed"; \
    else \
        echo "installing Node.js and npm (Debian packages)"; \
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm; \
    fi
    @# jco, pinned by runtimes/jco/package-lock.json; the copy of the lock in
    @# node_modules says what is installed.
    @cd runtimes/jco && if cmp -s package-lock.json node_modules/.installed-lock.json; then \
        echo "jco (runtimes/jco/node_modules) already installed"; \
    else \
        npm ci --no-audit --no-fund && cp package-lock.json node_modules/.installed-lock.json; \
    fi

# Build the native binary (target/release/echokit).
build:
    cargo build --release

# Build the WebAssembly component (target/wasm32-wasip2/release/echokit.wasm).
build-wasm:
    cargo build --release --target wasm32-wasip2

# Regenerate the man pages (docs/man/) and shell completion scripts
# (docs/completions/) from the command line; `just test` fails while they
# are out of date.
man:
    ECHOKIT_DOCS=overwrite cargo test --test docs -- generated_man_pages_and_completions_are_current

# Run the native server: `just serve --listen 127.0.0.1:0 -v`.
serve *args: build
    ./target/release/echokit serve {{args}}

# Run the WebAssembly server under wasmtime with network access.
serve-wasm *args: build-wasm
    wasmtime run -S inherit-network {{wasm}} serve {{args}}

# Formatting, clippy and rustdoc (warnings are errors) for both targets.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy --all-targets --target wasm32-wasip2 -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p echokit --document-private-items
    RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p echokit --target wasm32-wasip2

# Lint, both builds, every test (unit, property, fault, conformance), 15 s of fuzzing.
test: lint build-wasm
    @# The tests build echokit-host when they first start it; built here, its
    @# minutes on a fresh machine are a step of their own, not one test's.
    cargo build --profile ci -p echokit-host
    cargo test --profile ci
    @# The native fault and load-generator tests again on epoll (io_uring is
    @# the default where the kernel allows it; ECHOKIT_IO reaches every
    @# echokit the tests start). The kit runs its own epoll pairings.
    ECHOKIT_IO=epoll cargo test --profile ci --test faults -- _native
    ECHOKIT_IO=epoll cargo test --profile ci --test load_generator -- every_tcp_mode udp_pingpong
    just test-wasm-unit
    just fuzz 15
    just fuzz 15 proxy

# The library's unit tests built for wasm32-wasip2, run by wasmtime: the
# backend contract on the wasi backend among them.
test-wasm-unit:
    CARGO_TARGET_WASM32_WASIP2_RUNNER="wasmtime run -S inherit-network" \
        cargo test --profile ci --target wasm32-wasip2 --lib

# Performance matrix, side by side: a tokio reference, native on io_uring
# and on epoll, wasm on every runtime (wasmtime CLI, echokit-host, jco, and
# any from ECHOKIT_RUNTIME); throughput, p50 and server CPU per request,
# medians of ECHOKIT_BENCH_ROUNDS=3 rounds of ECHOKIT_BENCH_SECS=2 s each.
bench: build build-wasm
    cargo build --release --example tokio_echo
    cargo build --release -p echokit-host
    cargo bench --bench matrix

# Fail when a ratio of the latest `just bench` run misses its target.
bench-check:
    cargo bench --bench matrix -- --check

# Micro-benchmarks of the engine on the in-memory network (criterion).
bench-engine:
    cargo bench --bench engine

# Startup time and RSS with 10,000 idle connections, for both builds.
footprint: build build-wasm
    cargo bench --bench footprint

# The most concurrent TCP connections one server process holds (the
# open-files limit's worth), idle and echoing 20,000 msg/s, for both builds;
# ECHOKIT_SCALE_SECS=30 s under load. Other targets by label:
# `just scale native@epoll wasm@jco`.
scale *targets: build build-wasm
    ECHOKIT_BIN=target/release/echokit cargo bench --profile ci --bench scale -- {{targets}}

# Native server on 1, 4 and 8 pinned cores vs tokio and epoll, io_uring levers (benches/cores.sh; 10+ cores).
cores: build
    cargo build --release --example tokio_echo --example std_pingpong
    benches/cores.sh target/bench

# Fails on a wrong byte or on RSS growth over 10% after warm-up.

# Each build under full load for ECHOKIT_SOAK_SECS (default 60) seconds.
soak: build build-wasm
    cargo bench --bench soak

# cargo-fuzz on the stable toolchain (let in with RUSTC_BOOTSTRAP). Keep any
# crash input in fuzz/regressions/, where `just test` replays it.

# Coverage-guided fuzzing for `secs` seconds of the engine (`target`
# engine) or the PROXY protocol parser (`target` proxy).
fuzz secs="60" target="engine":
    @cargo fuzz --version >/dev/null 2>&1 || (echo "cargo-fuzz is missing: run just setup" && exit 1)
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run {{target}} -- -max_total_time={{secs}}
