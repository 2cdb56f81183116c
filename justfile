# echokit tasks. `just --list` shows them; `just setup test` is the whole
# suite from a fresh machine with only rustup.

wasmtime_version := "48.0.8"
wasm := "target/wasm32-wasip2/release/echokit.wasm"

# List the recipes.
default:
    @just --list

# Install what the builds and tests need (idempotent; fast when done).
setup:
    rustup target add wasm32-wasip2
    @if wasmtime --version 2>/dev/null | grep -q "^wasmtime {{wasmtime_version}} "; then \
        echo "wasmtime {{wasmtime_version}} already installed"; \
    else \
        echo "installing wasmtime-cli {{wasmtime_version}} (builds from source, about 7 minutes)"; \
        cargo install --locked wasmtime-cli@{{wasmtime_version}}; \
    fi

# Build the native binary (target/release/echokit).
build:
    cargo build --release

# Build the WebAssembly component ({{wasm}}).
build-wasm:
    cargo build --release --target wasm32-wasip2

# Run the native server: `just serve --listen 127.0.0.1:0 -v`.
serve *args: build
    ./target/release/echokit serve {{args}}

# Run the WebAssembly server under wasmtime with network access.
serve-wasm *args: build-wasm
    wasmtime run -S inherit-network {{wasm}} serve {{args}}

# Formatting and clippy (warnings are errors) for both targets.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    cargo clippy --all-targets --target wasm32-wasip2 -- -D warnings

# The whole suite: lint, both builds, unit tests and the cross-target kit.
test: lint build build-wasm
    cargo test --release
