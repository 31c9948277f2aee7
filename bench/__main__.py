"""``python -m bench [--quick] [--servers KIND ...] [--only NAME ...]``: run the benchmarks on
each server (pouchdb-server, a CouchDB 3 single node, a 3-node CouchDB cluster, each started
for the run and stopped by pid), print one table per server, write ``bench/results.json``."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from . import feed, isolation, lateness, memory, raw, scale, servers, startup, throughput
from .harness import Bench, Measurement

MEASUREMENTS = {
    "raw": raw.run,
    "burst": lateness.run_burst,
    "singles": lateness.run_singles,
    "drain": throughput.run,
    "feed": feed.run,
    "startup": startup.run,
    "memory": memory.run,
    "isolation": isolation.run,
    "scale": scale.run,
}
# What each server runs: the cluster gives throughput and burst lateness (the rows).
PLAN = {
    "pouchdb": list(MEASUREMENTS),
    "couchdb": list(MEASUREMENTS),
    "cluster": ["raw", "burst", "drain", "scale"],
}
RESULTS = Path(__file__).resolve().parent / "results.json"


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "system": platform.platform()}


def fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"


def table(measurements: list[Measurement]) -> str:
    rows = [("figure", "value", "unit", "goal", "")]
    for m in measurements:
        for f in m.figures:
            mark = "" if f.met is None else ("met" if f.met else "MISSED")
            rows.append((f.name, fmt(f.value), f.unit, f.goal, mark))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join([row[0].ljust(widths[0]), row[1].rjust(widths[1]),
                                row[2].ljust(widths[2]), row[3].ljust(widths[3]), row[4]])
                     .rstrip())
        if n == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def details(measurements: list[Measurement]) -> str:
    lines = []
    for m in measurements:
        for f in m.figures:
            if f.detail:
                lines.append(f"- {f.name.strip()}: {f.detail}")
        lines.extend(f"- {note}" for note in m.notes)
    return "\n".join(lines)


def run_server(kind: str, names: list[str], quick: bool) -> dict:
    """Start a server of ``kind``, run the measurements, stop it; what was measured."""
    measurements: list[Measurement] = []
    failures: list[str] = []
    started = time.monotonic()
    names = [n for n in PLAN[kind] if n in names]
    if "drain" in names and "raw" not in names:
        names.insert(0, "raw")  # the ratio needs the baseline of the same run
    with Bench(kind, quick=quick) as bench:
        label = bench.label
        print(f"\n{label} at {bench.url.split('@')[-1]}{' (--quick)' if quick else ''}",
              flush=True)
        for name in names:
            t0 = time.monotonic()
            print(f"  {name}...", end="", flush=True)
            try:
                m = MEASUREMENTS[name](bench)
            except Exception as exc:
                print(f" failed: {type(exc).__name__}: {exc}", flush=True)
                traceback.print_exc()
                failures.append(f"{kind} {name}: {type(exc).__name__}: {exc}")
                bench.kill_workers()
                continue
            m.seconds = time.monotonic() - t0
            measurements.append(m)
            print(f" {m.seconds:.0f}s", flush=True)
    return {"kind": kind, "server": label, "seconds": time.monotonic() - started,
            "measurements": measurements, "failures": failures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller, faster runs")
    parser.add_argument("--servers", nargs="+", choices=servers.KINDS, metavar="KIND",
                        help="the servers to run on (default: all of "
                             f"{', '.join(servers.KINDS)}; CouchDB ones only where "
                             "../shared/couchdb holds a release)")
    parser.add_argument("--only", nargs="+", choices=list(MEASUREMENTS), metavar="NAME",
                        help=f"run only these ({', '.join(MEASUREMENTS)})")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results file (JSON)")
    args = parser.parse_args(argv)

    def on_term(signum, frame):  # unwind, so the servers and workers are stopped by pid
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    kinds = args.servers or [k for k in servers.KINDS
                             if k == "pouchdb" or servers.couchdb_home() is not None]
    names = args.only or list(MEASUREMENTS)
    started = time.monotonic()
    runs = []
    for kind in kinds:
        try:
            runs.append(run_server(kind, list(names), args.quick))
        except Exception as exc:  # the server did not start: the others still run
            traceback.print_exc()
            runs.append({"kind": kind, "server": kind, "seconds": 0.0, "measurements": [],
                         "failures": [f"{kind}: {type(exc).__name__}: {exc}"]})
    total = time.monotonic() - started
    info = machine()
    print()
    print(f"machine: {info['nproc']} x {info['cpu']}, Python {info['python']}; "
          f"{total:.0f}s in all")
    for run in runs:
        print(f"\n== {run['server']} ({run['seconds']:.0f}s)")
        print(table(run["measurements"]))
        notes = details(run["measurements"])
        if notes:
            print(notes)
    failures = [f for run in runs for f in run["failures"]]
    command = "python -m bench" + (" --quick" if args.quick else "") + \
        (f" --servers {' '.join(args.servers)}" if args.servers else "") + \
        (f" --only {' '.join(args.only)}" if args.only else "")
    results = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": info,
        "seconds": round(total, 1),
        "servers": [{
            "kind": run["kind"], "server": run["server"], "seconds": round(run["seconds"], 1),
            "measurements": [{"name": m.name, "seconds": round(m.seconds, 1), "notes": m.notes,
                              "figures": [f.as_dict() for f in m.figures]}
                             for m in run["measurements"]],
            "failures": run["failures"],
        } for run in runs],
        "failures": failures,
    }
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {args.output}")
    if failures:
        print("failed: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
