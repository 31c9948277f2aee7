"""An asyncio flavour of the client, for applications that run an event loop::

    from after.aio import AsyncClient

    async with AsyncClient("http://127.0.0.1:5984", "tasks") as client:
        task_id = await client.schedule("hello", "Ada", worker="billing", at="+15m")
        done = await client.wait(task_id, timeout=60)

Thin on purpose: each call is the :class:`~after.client.Client`'s, run in a thread
(``asyncio.to_thread``), so the rules, the checks and the error types are the same, and
there is no second implementation to keep equal (no async twin of every call). Only the
calls an application makes from a loop are here: reading (``get``, ``tasks``, ``runs``),
scheduling (``schedule``, ``schedule_many``, ``run_now``, ``cancel``) and waiting.
``wait`` is the one that is not a thread's call: a thread blocked for minutes would hold
one of the loop's default executor's few threads and could not be cancelled. It follows
the task's ``_changes`` on the follower's thread, wakes the loop at each change, and reads
the task again in a thread; cancelling it (``asyncio.wait_for``, a task's ``cancel()``)
stops the follower.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from after.client import Client, _Watch, reached, still
from after.rules import task as rules

__all__ = ["AsyncClient"]


class AsyncClient:
    """``AsyncClient(url, db, **options)`` takes :class:`~after.client.Client`'s arguments,
    or wraps an existing ``client=``."""

    def __init__(self, *args: Any, client: Client | None = None, **options: Any):
        self.client = client or Client(*args, **options)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)

    # -- reading ------------------------------------------------------------------------------

    async def get(self, id: str) -> dict:
        return await asyncio.to_thread(self.client.get, id)

    async def tasks(self, **filters: Any) -> list[dict]:
        return await asyncio.to_thread(lambda: self.client.tasks(**filters))

    async def runs(self, id: str, limit: int = 20) -> list[dict]:
        return await asyncio.to_thread(self.client.runs, id, limit)

    # -- scheduling ---------------------------------------------------------------------------

    async def schedule(self, job: str, *args: Any, **options: Any) -> str:
        return await asyncio.to_thread(lambda: self.client.schedule(job, *args, **options))

    async def schedule_many(self, tasks: list[dict]) -> list[str]:
        return await asyncio.to_thread(self.client.schedule_many, list(tasks))

    async def run_now(self, id: str) -> dict:
        return await asyncio.to_thread(self.client.run_now, id)

    async def cancel(self, id: str) -> dict:
        return await asyncio.to_thread(self.client.cancel, id)

    # -- waiting ------------------------------------------------------------------------------

    async def wait(self, id: str, timeout: float | None = None, *, run: bool = False) -> dict:
        """:meth:`Client.wait` without a thread held for the wait: see the module's
        docstring."""
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        first = await self.get(id)
        before = rules.info(first).get("last_run") if run else None
        watch = await asyncio.to_thread(
            _Watch, self.client.store, id, lambda: loop.call_soon_threadsafe(changed.set))
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            await asyncio.to_thread(watch.follower.start)
            doc = await self.get(id)
            while True:
                if reached(doc, before, run):
                    return doc
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise still(doc, timeout)
                try:
                    await asyncio.wait_for(changed.wait(), 1.0 if left is None
                                           else min(left, 1.0))
                except TimeoutError:
                    pass  # read again anyway: the feed's safety net
                changed.clear()
                doc = await self.get(id)
        finally:
            await asyncio.to_thread(watch.follower.stop, 1.0)
