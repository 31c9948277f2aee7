"""``python -m bench [--quick] [--only NAME ...]``: run the benchmarks, print the table, write
``bench/results.json``."""

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

from . import feed, lateness, raw, startup, throughput
from .harness import Bench, Measurement

MEASUREMENTS = {
    "raw": raw.run,
    "throughput": throughput.run,
    "lateness": lateness.run,
    "feed": feed.run,
    "startup": startup.run,
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


def server_version(bench: Bench) -> str:
    try:
        info = bench.store.info()
        return f"pouchdb-server {info.get('version', '?')} (in memory)"
    except Exception:
        return "pouchdb-server (in memory)"


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller, faster runs")
    parser.add_argument("--only", nargs="+", choices=list(MEASUREMENTS), metavar="NAME",
                        help=f"run only these ({', '.join(MEASUREMENTS)})")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results file (JSON)")
    args = parser.parse_args(argv)

    def on_term(signum, frame):  # unwind, so the server and workers are stopped by pid
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    names = args.only or list(MEASUREMENTS)
    measurements: list[Measurement] = []
    failures: list[str] = []
    started = time.monotonic()
    with Bench(quick=args.quick) as bench:
        version = server_version(bench)
        print(f"after benchmarks against {version} at {bench.url}"
              f"{' (--quick)' if args.quick else ''}", flush=True)
        if "throughput" in names and "raw" not in names:
            names.insert(0, "raw")  # the ratio needs the baseline of the same run
        for name in names:
            t0 = time.monotonic()
            print(f"  {name}...", end="", flush=True)
            try:
                m = MEASUREMENTS[name](bench)
            except Exception as exc:
                print(f" failed: {type(exc).__name__}: {exc}", flush=True)
                traceback.print_exc()
                failures.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            m.seconds = time.monotonic() - t0
            measurements.append(m)
            print(f" {m.seconds:.0f}s", flush=True)
    total = time.monotonic() - started
    info = machine()
    print()
    print(f"machine: {info['nproc']} x {info['cpu']}, Python {info['python']}; {version}; "
          f"{total:.0f}s in all")
    print(table(measurements))
    print()
    print(details(measurements))
    results = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench" + (" --quick" if args.quick else ""),
        "machine": info,
        "server": version,
        "seconds": round(total, 1),
        "measurements": [{"name": m.name, "seconds": round(m.seconds, 1), "notes": m.notes,
                          "figures": [f.as_dict() for f in m.figures]} for m in measurements],
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
