#!/usr/bin/env bash
# How the native server scales over cores, side by side with the tokio
# reference: the server pinned to W cores (`taskset`, `--workers W`; tokio
# sizes its pool from the same affinity), the load on every other core.
# Each measurement is a fresh server, saturated by LOAD_PROCS `echokit
# bench --io epoll` processes (or, for the rows marked std, by
# examples/std_pingpong.rs, which shares no code with echokit); the
# server's CPU time comes from /proc.
#
#   just cores                 # builds, then runs this on this machine
#   benches/cores.sh OUT_DIR   # with the binaries already built
#
# Then the levers of the io_uring backend side by side at W = LEVER_W
# (its ECHOKIT_URING_* variables: buffer rings, splicing off, ring flags),
# and the load generator's CPU per request on io_uring and on epoll.
#
# Environment: CORES_W (default "1 4 8"), CORES_STD_W (the W of the std
# rows, "1 4 8"), CORES_SECS (3), CORES_ROUNDS (2), LEVER_W (4),
# CORES_LEVERS (uring and uring-NAME=VALUE for each ECHOKIT_URING_NAME
# lever), CORES_GENERATOR_ROUNDS (CORES_ROUNDS; 0 skips), ECHOKIT (target/release/echokit), TOKIO_ECHO,
# STD_PINGPONG. Writes every measurement as a JSON line to
# OUT_DIR/cores.jsonl (the generator's to OUT_DIR/generator.jsonl) and
# prints the medians (benches/cores_table.py) at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/bench}
mkdir -p "$out"
results="$out/cores.jsonl"
: >"$results"
: >"$out/generator.jsonl"
echokit=${ECHOKIT:-target/release/echokit}
tokio=${TOKIO_ECHO:-target/release/examples/tokio_echo}
std_pingpong=${STD_PINGPONG:-target/release/examples/std_pingpong}
secs=${CORES_SECS:-3}
rounds=${CORES_ROUNDS:-2}
cores=$(nproc)
for binary in "$echokit" "$tokio" "$std_pingpong"; do
    [ -x "$binary" ] || {
        echo "cores.sh: $binary is missing: run cargo build --release --example tokio_echo --example std_pingpong (and just build)" >&2
        exit 2
    }
done
echo "machine: $cores cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" | tee "$out/cores-machine.txt"
"$echokit" serve --io uring --listen 127.0.0.1:0 >/dev/null 2>"$out/uring-check.txt" &
check=$!
sleep 0.5
if kill "$check" 2>/dev/null; then
    wait "$check" || true
else
    echo "io_uring unavailable: $(cat "$out/uring-check.txt")" | tee -a "$out/cores-machine.txt"
fi

port=31000
# measure W SERVER ROW GENERATOR CONNECTIONS SIZE MODE ROUND
measure() {
    local w=$1 server=$2 row=$3 generator=$4 connections=$5 size=$6 mode=$7 round=$8
    port=$((port + 1))
    local server_cpus="0-$((w - 1))" load_cpus="$w-$((cores - 1))"
    case $server in
    uring-*)
        # A lever of the io_uring backend: its environment variable.
        local lever=${server#uring-}
        env "ECHOKIT_URING_${lever%%=*}=${lever#*=}" taskset -c "$server_cpus" "$echokit" serve \
            --io uring --workers "$w" --listen "127.0.0.1:$port" --max-connections 20000 -q \
            >/dev/null &;;
    uring | epoll) taskset -c "$server_cpus" "$echokit" serve --io "$server" --workers "$w" \
        --listen "127.0.0.1:$port" --max-connections 20000 -q >/dev/null &;;
    tokio) taskset -c "$server_cpus" "$tokio" --listen "127.0.0.1:$port" >/dev/null &;;
    esac
    local pid=$!
    sleep 0.4
    local procs=$(( (cores - w) < connections ? (cores - w) : connections ))
    [ "$generator" = std ] && procs=1
    local outputs=() loads=()
    for ((i = 0; i < procs; i++)); do
        # The connections spread evenly, the first ones taking the rest.
        local share=$((connections / procs + (i < connections % procs ? 1 : 0)))
        local file
        file=$(mktemp)
        outputs+=("$file")
        if [ "$generator" = std ]; then
            taskset -c "$load_cpus" "$std_pingpong" --connect "127.0.0.1:$port" \
                --connections "$share" --size "$size" --secs "$secs" >"$file" &
        else
            taskset -c "$load_cpus" "$echokit" bench --io epoll --connect "127.0.0.1:$port" \
                --connections "$share" --size "$size" --mode "$mode" --warmup 0.3 \
                --duration "$secs" --json >"$file" &
        fi
        loads+=($!)
    done
    # Both generators warm up for 0.3 s before they measure.
    sleep 0.3
    local before after
    before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    wait "${loads[@]}" || true
    after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    python3 - "$w" "$server" "$row" "$generator" "$round" "$before" "$after" "$secs" "${outputs[@]}" >>"$results" <<'PY'
import json, sys
w, server, row, generator, round_, before, after, secs = sys.argv[1:9]
reqs = mib = errors = 0.0
for path in sys.argv[9:]:
    text = open(path).read().strip()
    if not text:
        errors += 1
        continue
    report = json.loads(text.splitlines()[-1])
    reqs += report.get("requests_per_sec", 0)
    mib += report.get("mib_per_sec", 0)
    errors += report.get("errors", 0)
cpu = (float(after) - float(before)) / 100
work = reqs * float(secs) if reqs else mib * float(secs)
print(json.dumps({"w": int(w), "server": server, "row": row, "generator": generator,
                  "round": int(round_), "req_per_sec": reqs, "mib_per_sec": mib,
                  "server_cpu_s": cpu, "cpu_per_unit_us": cpu / work * 1e6 if work else None,
                  "errors": errors}))
PY
    rm -f "${outputs[@]}"
    tail -n 1 "$results"
}

for w in ${CORES_W:-1 4 8}; do
    for round in $(seq "$rounds"); do
        # Servers rotate by round, so that none always runs first.
        servers=(uring epoll tokio)
        [ $((round % 2)) = 0 ] && servers=(tokio uring epoll)
        for server in "${servers[@]}"; do
            measure "$w" "$server" "pingpong-$((50 * w))x512" bench $((50 * w)) 512 pingpong "$round"
            measure "$w" "$server" "pingpong-$((100 * w))x128" bench $((100 * w)) 128 pingpong "$round"
            measure "$w" "$server" "stream-$((8 * w))x65536" bench $((8 * w)) 65536 stream "$round"
            case " ${CORES_STD_W:-1 4 8} " in
            *" $w "*) measure "$w" "$server" "std-pingpong-$((50 * w))x512" std $((50 * w)) 512 \
                pingpong "$round" ;;
            esac
        done
    done
done
# The levers of the io_uring backend, side by side at W = LEVER_W (4).
w=${LEVER_W:-4}
read -r -a levers <<<"${CORES_LEVERS:-uring uring-BUFFERS=1024x16384 uring-BUFFERS=256x16384 \
uring-BUFFERS=64x65536 uring-BUNDLES=off uring-SPLICE=off uring-SETUP=cooperative}"
for round in $(seq "$rounds"); do
    for server in "${levers[@]}"; do
        measure "$w" "$server" "lever-pingpong-$((50 * w))x512" bench $((50 * w)) 512 pingpong "$round"
        measure "$w" "$server" "lever-stream-$((8 * w))x65536" bench $((8 * w)) 65536 stream "$round"
    done
done

# The load generator's own CPU per request on each backend, one process
# on the last core against an epoll server on W = LEVER_W.
for round in $(seq "${CORES_GENERATOR_ROUNDS:-$rounds}"); do
    for io in uring epoll; do
        port=$((port + 1))
        taskset -c "0-$((w - 1))" "$echokit" serve --io epoll --workers "$w" \
            --listen "127.0.0.1:$port" -q >/dev/null &
        pid=$!
        sleep 0.4
        taskset -c "$((cores - 1))" "$echokit" bench --io "$io" --connect "127.0.0.1:$port" --connections 50 \
            --size 512 --warmup 0.3 --duration "$secs" --json |
            python3 -c "import json, sys; r = json.load(sys.stdin); print(json.dumps({'generator': '$io',
                'round': $round, 'req_per_sec': r['requests_per_sec'],
                'cpu_per_req_us': r['cpu_ns'] / r['requests'] / 1e3, 'errors': r['errors']}))" |
            tee -a "$out/generator.jsonl"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    done
done
python3 benches/cores_table.py "$results" | tee "$out/cores.md"
