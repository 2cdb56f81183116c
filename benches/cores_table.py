"""The medians of a benches/cores.sh run, as a markdown table.

One row per cores (W) and load: each server's median figure over the
rounds with its spread (lowest / highest), the server's CPU per request
(per MiB on stream rows), and the default backend's ratios to tokio and
to epoll.

    python3 benches/cores_table.py target/bench/cores.jsonl
"""

import json
import statistics
import sys
from collections import defaultdict


def main(path):
    runs = defaultdict(list)
    for line in open(path):
        run = json.loads(line)
        runs[(run["w"], run["row"], run["server"])].append(run)
    keys = sorted({(w, row) for (w, row, _) in runs}, key=lambda k: (k[0], k[1]))
    print("| W | load | io_uring | epoll | tokio | uring / tokio | uring / epoll "
          "| CPU per unit: uring / epoll / tokio |")
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    for w, row in keys:
        stream = row.startswith("stream")
        figures, cpu = {}, {}
        servers = sorted({s for (w_, row_, s) in runs if (w_, row_) == (w, row)})
        if row.startswith("lever"):
            levers = [s for s in servers if s != "uring"]
            print_levers(w, row, runs, ["uring"] + levers)
            continue
        for server in ("uring", "epoll", "tokio"):
            measured = runs.get((w, row, server), [])
            values = [r["mib_per_sec"] if stream else r["req_per_sec"] for r in measured]
            costs = [r["cpu_per_unit_us"] for r in measured if r["cpu_per_unit_us"]]
            if any(r["errors"] for r in measured):
                values = []
            figures[server] = (statistics.median(values), min(values), max(values)) if values else None
            cpu[server] = statistics.median(costs) if costs else None

        def cell(server):
            figure = figures[server]
            if figure is None:
                return "failed"
            median, low, high = figure
            unit = "MiB/s" if stream else "req/s"
            return f"{median:,.0f} {unit} ({low / high:.2f})"

        def ratio(a, b):
            if figures[a] is None or figures[b] is None:
                return "-"
            return f"{figures[a][0] / figures[b][0]:.2f}"

        costs = " / ".join(f"{cpu[s]:.2f}" if cpu[s] else "-" for s in ("uring", "epoll", "tokio"))
        unit = "µs/MiB" if stream else "µs/req"
        print(f"| {w} | {row} | {cell('uring')} | {cell('epoll')} | {cell('tokio')} "
              f"| {ratio('uring', 'tokio')} | {ratio('uring', 'epoll')} | {costs} {unit} |")


def print_levers(w, row, runs, servers):
    """One line per lever: its median, spread, CPU and ratio to the default."""
    stream = "stream" in row
    figures = {}
    for server in servers:
        measured = runs[(w, row, server)]
        values = [r["mib_per_sec"] if stream else r["req_per_sec"] for r in measured]
        costs = [r["cpu_per_unit_us"] for r in measured if r["cpu_per_unit_us"]]
        figures[server] = (statistics.median(values), min(values) / max(values),
                           statistics.median(costs) if costs else 0)
    base = figures["uring"][0]
    for server in servers:
        median, spread, cost = figures[server]
        name = "default" if server == "uring" else server.removeprefix("uring-")
        print(f"| {w} | {row} {name} | {median:,.0f} ({spread:.2f}) | | | {median / base:.2f} × default "
              f"| | {cost:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1])
