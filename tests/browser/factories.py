"""Documents as the worker writes them: tasks, heartbeats and run records, for the tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from after.rules.dates import format_date


def now() -> datetime:
    return datetime.now(UTC)


def task_doc(docid: str, *, status: str = "waiting", worker: str = "billing",
             job: str = "hello", due: timedelta = timedelta(minutes=10), **fields) -> dict:
    date = format_date(now() + due)
    doc = {"_id": docid, "worker": worker, "date": date,
           "job": {"name": job, "arguments": []}, "status": status}
    if status in ("scheduled", "running"):
        doc["after"] = {"owner": f"{worker}@test-host:4242:abc", "due": date, "attempt": 1,
                        "runs": 0}
    doc.update(fields)
    return doc


def worker_doc(name: str = "billing", host: str = "test-host", pid: int = 4242, *,
               expires_in: float = 30, held: int = 2, running: int = 1) -> dict:
    seen = now()
    return {
        "_id": f"{name}@{host}:{pid}:abc", "type": "worker", "name": name, "host": host,
        "pid": pid, "started": format_date(seen - timedelta(minutes=5)),
        "last_seen": format_date(seen),
        "expires": format_date(seen + timedelta(seconds=expires_in)),
        "held": held, "running": running,
        "counts": {"runs": 7, "done": 6, "failed": 1, "missed": 0, "claimed": 8},
        "stopping": False,
    }


def run_doc(task: str, number: int, *, outcome: str = "done", late_ms: int = 120,
            ago: timedelta = timedelta(minutes=5), error: str | None = None) -> dict:
    scheduled = now() - ago
    started = scheduled + timedelta(milliseconds=late_ms)
    doc = {
        "_id": f"{task}#{number:08d}#abcdef", "type": "run", "task": task, "number": number,
        "attempt": 1, "worker": "billing", "process": "billing@test-host:4242:abc",
        "host": "test-host", "pid": 4242, "job": "hello", "scheduled": format_date(scheduled),
        "started": format_date(started),
        "ended": format_date(started + timedelta(milliseconds=850)), "duration_ms": 850,
        "outcome": outcome,
    }
    if error:
        doc["error"] = {"message": error}
    else:
        doc["result"] = None
    return doc
