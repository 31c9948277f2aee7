"""Count the hops from the feed to a job: the calls into ``after``'s functions, and the
modules they are in, from the moment a changed task reaches the worker (the feed's callback)
to the first line of its job (the store's own functions left out), on one worker turned by
hand (tests/unit/test_loop.py's Loop: an in-memory store, jobs run inline).

    python scripts/hops.py
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from after.couch.memstore import MemStore  # noqa: E402
from after.rules.dates import utcnow  # noqa: E402
from tests.unit.test_loop import Loop  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        loop = Loop(MemStore("tasks"), Path(tmp), utcnow().replace(microsecond=0))
        loop.step()
        calls: list[str] = []
        begun = []

        def profile(frame, event, arg):
            if event != "call" or begun:
                return
            module = frame.f_globals.get("__name__", "")
            name = f"{module}.{frame.f_code.co_name}"
            if frame.f_code.co_filename.endswith("/jobs/record.py") \
                    and frame.f_code.co_name == "record":  # the job itself
                begun.append(True)
            elif name == "after.worker.loop._on_change" or calls:
                if module.startswith("after.") and module != "after.couch.memstore":
                    calls.append(name)

        loop.put("t", loop.now)  # due now: the feed brings it, the loop holds it and runs it
        loop.beat()  # (the heartbeat and the registry's read are not on the task's path)
        sys.setprofile(profile)
        try:
            loop.settle()
        finally:
            sys.setprofile(None)
        if not begun:
            print("the job did not run", file=sys.stderr)
            return 1
        modules = Counter(call.rsplit(".", 1)[0] for call in calls)
        loop_entries = sum(1 for call in calls if call.startswith("after.worker.loop."))
        print(f"{len(calls)} calls into after's functions from the feed to the job "
              f"({len(set(calls))} distinct functions), in {len(modules)} modules; "
              f"{loop_entries} of them into after.worker.loop (every turn's own included)")
        for module, count in modules.most_common():
            print(f"  {count:4d}  {module}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
