"""Scale (issue 21): bursts known ahead, short notice, drains and liveness, as a user meets them.

Lateness is the job's own clock minus the task's ``date``: every task runs the ``record`` job
of ``jobs/``, which appends one line (task, occurrence, process, the job's own ``at``) to a
file per run; the figures come from that file, never from what the worker wrote about
itself. Every worker is a fresh ``after start`` process with the default settings. After
each run the workers' logs are read for warnings (hand-backs, restarts, timeouts): the issue
wants none of them while no process is frozen or killed.

``python -m bench.scale --servers couchdb --sizes 3000 --processes 3`` runs one figure;
``python -m bench --only scale`` runs the issue's set.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from after.rules.dates import format_date, parse_date

from . import validation
from .harness import (
    Bench,
    Measurement,
    bulk_insert,
    cpu_seconds,
    in_seconds,
    percentile,
    rss_mb,
    wait_until,
)

AHEAD = 60.0  # a burst known ahead: posted this long before its instant
SHORT = 5.0  # short notice
PLOTS = Path(__file__).resolve().parent / "plots"
WARNINGS = {
    "handed back": re.compile(r"handed back"),
    "lost answer": re.compile(r"lost answer|no run behind it"),
    "timeouts": re.compile(r"ReadTimeout|WriteTimeout|ConnectTimeout|PoolTimeout|timed out"),
    "lapses": re.compile(r"lease may have lapsed"),
    "errors": re.compile(r" ERROR "),
}


def record_doc(docid: str, worker: str, when, path: Path, seconds: float = 0.0) -> dict:
    """A task of the ``stamp`` job (jobs/stamp.py): it appends when it began, and takes
    ``seconds``."""
    job = {"name": "stamp", "arguments": [str(path), seconds] if seconds else [str(path)]}
    return {"_id": docid, "worker": worker, "date": format_date(when), "job": job,
            "status": "waiting"}


def read_records(path: Path) -> list[dict]:
    """The stamps: ``{"id", "at" (epoch seconds, the job's own clock), "pid"}`` each."""
    try:
        text = path.read_text()
    except OSError:
        return []
    out = []
    for line in text[:text.rfind("\n") + 1].splitlines():  # whole lines only
        docid, at, pid = line.rsplit(" ", 2)
        out.append({"id": docid, "at": float(at), "pid": int(pid)})
    return out


def log_counts(workers) -> dict[str, int]:
    """What the workers' logs say that a healthy run should not: counts by kind, and the
    commonest warning lines (task ids and numbers taken out)."""
    counts, lines = Counter(), Counter()
    for worker in workers:
        text = worker.log()
        for name, pattern in WARNINGS.items():
            counts[name] += len(pattern.findall(text))
        counts["warnings"] += text.count(" WARNING ")
        for line in text.splitlines():
            if " WARNING " in line or " ERROR " in line:
                shape = re.sub(r"\d+(\.\d+)?", "N", line.split(": ", 1)[-1])
                lines[re.sub(r"task \S+", "task T", shape)[:160]] += 1
    return {**counts, "said": dict(lines.most_common(5))}


class Hog:
    """A CPU hog busy on one core for as long as it runs (a process of its own)."""

    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                        stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


class Peak:
    """Samples the peak RSS of the workers every 50 ms: the highest of any (``peak``) and
    each worker's own (``each``, in the workers' order)."""

    def __init__(self, workers):
        self.workers, self.peak, self._stop = workers, 0.0, threading.Event()
        self.each = [0.0] * len(workers)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for k, worker in enumerate(self.workers):
                try:
                    self.each[k] = max(self.each[k], rss_mb(worker.pid))
                    self.peak = max(self.peak, self.each[k])
                except (OSError, RuntimeError):
                    pass
            self._stop.wait(0.05)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def wait_records(path: Path, total: int, timeout: float, workers) -> list[dict]:
    def enough():
        for worker in workers:
            if worker.process.poll() is not None:
                raise RuntimeError(f"a worker exited: {worker.log()[-2000:]}")
        records = read_records(path)
        return records if len({r["id"] for r in records}) >= total else None
    return wait_until(enough, timeout, f"{total} jobs run", interval=0.1)


def burst(bench: Bench, total: int, processes: int = 3, ahead: float = AHEAD,
          hog: bool = False, seconds: float = 0.0, options: tuple[str, ...] = ()) -> dict:
    """``total`` tasks due at one instant, posted ``ahead`` seconds before it, into
    ``processes`` workers already started (on a cluster, one per node)."""
    store = bench.database("scale")
    path = bench.tmp / f"records-{store.db}.jsonl"
    name = "scale"
    hogger = Hog() if hog else None
    try:
        workers = [bench.worker(store, name, *options, node=k) for k in range(processes)]
        for worker in workers:
            worker.wait_ready(120)
        peak = Peak(workers)
        due = in_seconds(ahead)
        posted = time.monotonic()
        bulk_insert(store, [record_doc(f"b{i:06d}", name, due, path, seconds)
                            for i in range(total)])
        post_s = time.monotonic() - posted
        records = wait_records(path, total, ahead + 120 + total / 50, workers)
        time.sleep(0.5)
        records = read_records(path)
        rss = peak.stop()
        cpu = [round(cpu_seconds(w.pid), 2) for w in workers]
        at = parse_date(format_date(due)).timestamp()
        late = [(r["at"] - at) * 1000 for r in records]
        runs = Counter(r["id"] for r in records)
        per_process = Counter(r["pid"] for r in records)
        return {
            "total": total, "processes": processes, "ahead": ahead, "hog": hog,
            "post_s": post_s, "p50": percentile(late, 50), "p99": percentile(late, 99),
            "min": min(late), "max": max(late), "twice": sum(1 for n in runs.values() if n > 1),
            "never": total - len(runs), "peak_rss": rss,
            "peak_rss_each": [round(x, 1) for x in peak.each],
            "per_process": sorted(per_process.values()), "logs": log_counts(workers),
            "worker_cpu_s": cpu, "late": late,
        }
    finally:
        if hogger is not None:
            hogger.stop()
        bench.kill_workers()
        bench.drop(store)
        path.unlink(missing_ok=True)


def drain(bench: Bench, total: int, processes: int) -> dict:
    """``total`` tasks due now, posted before ``processes`` workers start: tasks/s from
    their spawn to the last job run."""
    store = bench.database(f"drain{processes}")
    path = bench.tmp / f"records-{store.db}.jsonl"
    name = "drain"
    try:
        bulk_insert(store, [record_doc(f"t{i:06d}", name, in_seconds(-1), path)
                            for i in range(total)])
        started = time.monotonic()
        workers = [bench.worker(store, name, node=k) for k in range(processes)]
        wait_records(path, total, 120 + total / 10, workers)
        elapsed = time.monotonic() - started
        records = read_records(path)
        runs = Counter(r["id"] for r in records)
        return {"total": total, "processes": processes, "elapsed": elapsed,
                "rate": total / elapsed, "twice": sum(1 for n in runs.values() if n > 1),
                "logs": log_counts(workers)}
    finally:
        bench.kill_workers()
        bench.drop(store)
        path.unlink(missing_ok=True)


def liveness(bench: Bench, total: int = 20, seconds: float = 0.2) -> dict:
    """``--pool 1``: ``total`` tasks of ``seconds`` each due at once; when the last ends."""
    store = bench.database("live")
    path = bench.tmp / f"records-{store.db}.jsonl"
    try:
        worker = bench.worker(store, "live", "--pool", "1")
        worker.wait_ready(120)
        due = in_seconds(2.0)
        bulk_insert(store, [record_doc(f"l{i:03d}", "live", due, path, seconds)
                            for i in range(total)])
        records = wait_records(path, total, 120, [worker])
        at = parse_date(format_date(due)).timestamp()
        last = max(r["at"] for r in records) + seconds - at
        return {"total": total, "last_done_s": last, "logs": log_counts([worker])}
    finally:
        bench.kill_workers()
        bench.drop(store)
        path.unlink(missing_ok=True)


def plot(bursts: list[dict], path: Path, title: str) -> Path:
    """The lateness of each burst as a distribution (the job's own clock minus the date):
    the share of tasks begun by each lateness, one line a burst."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for result in bursts:
        late = sorted(result["late"])
        share = [(i + 1) / len(late) for i in range(len(late))]
        label = (f"{result['total']:,} due at once, {result['processes']} process"
                 f"{'es' if result['processes'] > 1 else ''}, posted {result['ahead']:g} s "
                 f"ahead{', CPU hog' if result['hog'] else ''}")
        ax.plot(late, share, label=label)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("lateness, ms (the job's own clock minus the task's date)")
    ax.set_ylabel("share of the tasks begun")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def validated_rate(bench: Bench) -> float:
    """The validated write rate of this run: ``_bulk_docs`` of task documents into a set-up
    tasks database (its ``validate_doc_update`` runs), 500 at a time; median of 3."""
    return validation.rate(bench, "after")


# The goals (issue 21), by server: p99 of a burst known ahead, in ms.
BURST_GOALS = {"couchdb": {3000: 100, 10_000: 500, 50_000: 3000},
               "pouchdb": {3000: 200, 10_000: 1000, 50_000: 6000},
               "cluster": {10_000: 1000}}
SHORT_GOAL, LIVENESS_GOAL, RSS_GOAL = 100, 5.0, 150


def _healthy(logs: dict) -> int:
    return sum(logs.get(k, 0) for k in ("handed back", "lost answer", "timeouts", "lapses"))


def run(bench: Bench) -> Measurement:
    """``python -m bench --only scale``: the figures of issue 21 on this server."""
    m = Measurement("scale")
    sizes = sorted(BURST_GOALS[bench.kind])
    if bench.quick:
        sizes = sizes[:1]
    unhealthy = 0
    bursts = []
    for size in sizes:
        # posted ahead by more than this machine takes to post them (about 700 task
        # documents a second into a validated database while 3 workers follow its feed):
        # a task written after its date would count its posting as lateness
        result = burst(bench, size, 3, max(AHEAD, size / 250))
        bursts.append(result)
        goal = BURST_GOALS[bench.kind][size]
        unhealthy += _healthy(result["logs"])
        m.add(f"{size:,} due at one instant, posted {result['ahead']:g} s ahead, 3 processes: "
              "p99", result["p99"], "ms", goal=f"<= {goal:,}", met=result["p99"] <= goal
              and not result["twice"] and not result["never"],
              detail=f"posted in {result['post_s']:.1f} s; "
                     f"p50 {result['p50']:.0f} ms, max {result['max']:.0f} ms; run twice "
                     f"{result['twice']}, never {result['never']}; per process "
                     f"{result['per_process']}; peak RSS {result['peak_rss']:.0f} MB; "
                     f"warnings {result['logs']['warnings']}")
        m.add(f"  peak worker RSS ({size:,})", result["peak_rss"], "MB",
              goal=f"<= {RSS_GOAL}", met=result["peak_rss"] <= RSS_GOAL)
    if bench.kind != "cluster":
        for hog in (False, True):
            result = burst(bench, 500, 1, SHORT, hog=hog)
            bursts.append(result)
            unhealthy += _healthy(result["logs"])
            m.add(f"500 posted {SHORT:g} s ahead, 1 process{', a CPU hog beside' if hog else ''}"
                  ": p99", result["p99"], "ms", goal=f"<= {50 if not hog else SHORT_GOAL}",
                  met=result["p99"] <= (50 if not hog else SHORT_GOAL) and not result["twice"],
                  detail=f"p50 {result['p50']:.0f} ms, max {result['max']:.0f} ms")
    rate = validated_rate(bench)
    m.add("validated _bulk_docs write rate (task documents, set-up db)", rate, "docs/s")
    rates = {}
    for processes in (1, 3):
        result = drain(bench, 2000, processes)
        unhealthy += _healthy(result["logs"])
        rates[processes] = result["rate"]
        m.add(f"drain 2,000 due, {processes} process{'es' if processes > 1 else ''}",
              result["rate"], "tasks/s", detail=f"run twice {result['twice']}")
    ratio = rates[1] / rate
    m.add("  1 process / validated write rate", ratio, "x", goal=">= 0.5", met=ratio >= 0.5)
    m.add("  3 processes / 1 process", rates[3] / rates[1], "x", goal=">= 1",
          met=rates[3] >= rates[1])
    result = liveness(bench)
    unhealthy += _healthy(result["logs"])
    m.add("--pool 1, 20 tasks of 0.2 s due at once: last done after their date",
          result["last_done_s"], "s", goal=f"<= {LIVENESS_GOAL:g}",
          met=result["last_done_s"] <= LIVENESS_GOAL)
    m.add("hand-backs, lost-answer restarts, timeouts, lapses in the workers' logs",
          unhealthy, "", goal="0", met=unhealthy == 0)
    try:
        path = plot(bursts, PLOTS / f"scale-{bench.kind}.png", f"after on {bench.label}")
        m.notes.append(f"lateness plotted in {path.relative_to(PLOTS.parent.parent)}")
    except ImportError:
        m.notes.append("no plot: matplotlib is not installed (pip install -e '.[bench]')")
    return m


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale")
    parser.add_argument("--servers", nargs="+", default=["couchdb"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[3000])
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--ahead", type=float, default=AHEAD)
    parser.add_argument("--hog", action="store_true")
    parser.add_argument("--drain", nargs="*", type=int, help="processes for drains")
    parser.add_argument("--drain-size", type=int, default=2000,
                        help="tasks due before the drain's start (default 2,000)")
    parser.add_argument("--liveness", action="store_true")
    parser.add_argument("--no-burst", action="store_true")
    parser.add_argument("--plot", type=Path, help="plot the bursts' lateness into this PNG")
    args = parser.parse_args(argv)
    for kind in args.servers:
        with Bench(kind) as bench:
            print(f"== {bench.label}", flush=True)
            bursts = []
            if not args.no_burst:
                for size in args.sizes:
                    result = burst(bench, size, args.processes, args.ahead, args.hog)
                    bursts.append(result)
                    print(json.dumps({k: v for k, v in result.items() if k != "late"}),
                          flush=True)
            if args.plot and bursts:
                path = args.plot.with_name(f"{args.plot.stem}-{kind}{args.plot.suffix}")
                print(f"plotted: {plot(bursts, path, f'after on {bench.label}')}")
            if args.drain:  # the unit of a drain's goal, measured in the same run
                print(json.dumps({"validated_write_rate": validated_rate(bench)}), flush=True)
            for processes in args.drain or []:
                print(json.dumps(drain(bench, args.drain_size, processes)), flush=True)
            if args.liveness:
                print(json.dumps(liveness(bench)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
