"""How much a ``validate_doc_update`` costs a server's writes, whatever it checks.

``python -m bench.validation couchdb`` (or ``pouchdb``): ``_bulk_docs`` of 5,000 task-shaped
documents, 500 at a time, into a database with no design document, with an empty
``validate_doc_update``, and with ``_design/after``'s; the median of 3 each, in docs/s.
"""

from __future__ import annotations

import sys

from .harness import Bench
from .raw import write_rate

EMPTY = "function (newDoc, oldDoc, userCtx) {}"


def rate(bench: Bench, validation: str | None) -> float:
    rates = []
    for _ in range(3):
        if validation == "after":
            db = bench.database("vdu")
        else:
            db = bench.database("vdu", setup=False)
            if validation:
                db.put({"_id": "_design/probe", "validate_doc_update": validation})
        try:
            write_rate(db, 500, 500, "warm")
            rates.append(write_rate(db, 5000, 500))
        finally:
            bench.drop(db)
    return sorted(rates)[1]


def main(kind: str) -> dict[str, float]:
    with Bench(kind) as bench:
        return {"none": rate(bench, None), "empty": rate(bench, EMPTY),
                "after": rate(bench, "after")}


if __name__ == "__main__":
    figures = main(sys.argv[1] if len(sys.argv) > 1 else "couchdb")
    print(", ".join(f"{label}: {value:,.0f} docs/s" for label, value in figures.items()))
