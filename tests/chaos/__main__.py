"""``python -m tests.chaos`` (``make chaos``): chaos seeds on a 3-node CouchDB cluster for as
long as it is given, each checked; exits 1 when any seed found a violation.

    python -m tests.chaos [--seconds 600] [--window 30] [--out var/chaos]
    AFTER_CHAOS_SEED=1234 python -m tests.chaos      # replay seed 1234 (several: 1,2,3)

The cluster is started on free ports of 127.0.0.1 in a temporary folder and stopped by pid
at the end. Each seed's history, worker logs, tasks, run records and report stay in
``OUT/SEED/``.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.couchdb_cluster import Cluster, couchdb_home, free_port_range

from . import driver, scenarios

#: Seconds a seed takes beyond its window (the pool's start, the heal, the settling): a
#: new seed starts only when the time left holds that much.
OVERHEAD = 35.0


def seeds_of(text: str) -> list[int]:
    try:
        return [int(word) for word in text.replace(",", " ").split()]
    except ValueError:
        raise SystemExit(f"chaos: error: AFTER_CHAOS_SEED must be integers, not {text!r}") \
            from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0,
                        help="run seeds for this long (default 600)")
    parser.add_argument("--window", type=float, default=30.0,
                        help="seconds of tasks and faults per seed (default 30)")
    parser.add_argument("--scenario", choices=sorted(scenarios.SCENARIOS),
                        help="play this hand-made scenario once instead of seeds")
    parser.add_argument("--worker-args", default="",
                        help="more options for each worker process (e.g. '--visible 0')")
    parser.add_argument("--out", type=Path,
                        default=Path(os.environ.get("AFTER_HOME", "var")) / "chaos",
                        help="where each seed's history and report go")
    args = parser.parse_args(argv)
    fixed = seeds_of(os.environ["AFTER_CHAOS_SEED"]) if os.environ.get(
        "AFTER_CHAOS_SEED") else None
    extra = tuple(shlex.split(args.worker_args))
    began = time.monotonic()
    outcomes, broken = [], []
    with tempfile.TemporaryDirectory(prefix="after-chaos-") as tmp:
        cluster = Cluster(couchdb_home() / "couchdb.sh", Path(tmp) / "cluster",
                          free_port_range(2 * 3))
        cluster.start()
        try:
            pending = list(fixed or [])
            if args.scenario:
                outcomes.append(driver.play_plan(cluster, scenarios.SCENARIOS[args.scenario],
                                                 args.out, worker_args=extra))
            while not args.scenario:
                if fixed is not None:
                    if not pending:
                        break
                    seed = pending.pop(0)
                else:
                    left = args.seconds - (time.monotonic() - began)
                    if left < args.window + OVERHEAD and (outcomes or broken):
                        break
                    seed = random.SystemRandom().randrange(2**31)
                try:
                    outcomes.append(driver.play(cluster, seed, args.window, args.out,
                                                worker_args=extra))
                except Exception:  # the driver's own failure: said, and counted as failed
                    traceback.print_exc()
                    print(f"seed {seed}: the driver failed (not a verdict on the worker)")
                    broken.append(seed)
                print(flush=True)
        finally:
            cluster.stop()
    failed = [o.plan.seed for o in outcomes if not o.ok] + broken
    faults = sum(o.faults for o in outcomes)
    requests = sum(len(o.ops) for o in outcomes)
    runs = sum(o.report.runs for o in outcomes if o.report)
    played = len(outcomes) + len(broken)
    print(f"chaos: {played} seeds in {time.monotonic() - began:.0f} s, "
          f"{played - len(failed)} passed, {faults} faults and {requests} requests held, "
          f"{runs} runs checked" + (f"; FAILED: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
