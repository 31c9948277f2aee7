"""The same burst on APScheduler 3, for comparison: ``python -m bench.apsched TOTAL DELAY``
(a process of its own, like ``after start``) starts a BackgroundScheduler with a sqlite job
store (SQLAlchemy) and a pool of 10 threads, adds TOTAL no-op jobs with a ``date`` trigger
DELAY seconds ahead, waits for them to run, and prints one JSON object: the lateness of each
run in milliseconds (its start minus the date) and the seconds from process start to ready.

APScheduler 3 is a bench-only dependency (``pip install -e '.[bench]'``, done by ``make
bench``)."""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta

STARTED: dict[int, float] = {}
DONE = threading.Event()
TOTAL = [0]


def record(number: int) -> None:
    """The job: note when it started (a no-op otherwise)."""
    STARTED[number] = time.time()
    if len(STARTED) >= TOTAL[0]:
        DONE.set()


def main(argv: list[str]) -> int:
    spawned = time.time()
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    # The job store names the job ``bench.apsched:record``: that module, not ``__main__``.
    from bench import apsched as jobs

    total, delay = int(argv[0]), float(argv[1])
    jobs.TOTAL[0] = total
    with tempfile.TemporaryDirectory(prefix="after-bench-aps-") as tmp:
        scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{tmp}/jobs.sqlite")},
            executors={"default": ThreadPoolExecutor(10)},
            job_defaults={"misfire_grace_time": None, "coalesce": False},
            timezone="UTC",
        )
        scheduler.start()
        ready = time.time() - spawned
        due = datetime.now(UTC) + timedelta(seconds=delay)
        for number in range(total):
            scheduler.add_job("bench.apsched:record", "date", run_date=due, args=[number],
                              id=f"b{number:05d}")
        added = (datetime.now(UTC) - due).total_seconds() + delay
        finished = jobs.DONE.wait(60 + delay)
        scheduler.shutdown(wait=True)
    due_s = due.timestamp()
    print(json.dumps({"lateness_ms": [(t - due_s) * 1000 for t in jobs.STARTED.values()],
                      "ready_s": ready, "adding_s": added, "complete": finished}))
    return 0 if finished else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
