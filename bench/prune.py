"""How an audit prune runs beside a server: total time, and how long each batch holds the lock.

The audit log grows with every change (about 8,000 records a minute in a soak of a busy sync)
until ``scimd audit prune`` or a server's ``audit_retention_days`` removes old records. On SQLite
each batch holds the database's write lock while it runs, and every SCIM write waits for it:
the figure that matters is the longest batch, and the cost of a prune with nothing to remove
(the hourly case once the log is trimmed).

    python bench/prune.py --records 1000000 --old 200000 [--database-url URL]

Seeds ``--records`` audit records, the oldest ``--old`` of them two years old and the rest from
today (in time order, as a server writes them), then prunes everything older than a year
twice: the first removes the old records, the second finds nothing. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from scimd.store import audit
from scimd.store import engine as engine_mod
from scimd.store.migrate import ensure_current
from scimd.store.tables import audit as audit_table

SEED_BATCH = 20_000


def seed(engine: sa.Engine, records: int, old: int) -> None:
    now = datetime.now(UTC)
    long_ago = now - timedelta(days=730)
    row = audit.values(audit.CLI, "user.update", "User", None, {"operations": []})
    for start in range(0, records, SEED_BATCH):
        rows = []
        for i in range(start, min(records, start + SEED_BATCH)):
            at = (long_ago if i < old else now) + timedelta(milliseconds=i)
            rows.append({**row, "at": at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"})
        with engine.begin() as conn:
            conn.execute(audit_table.insert(), rows)


def timed_prune(engine: sa.Engine) -> dict[str, Any]:
    """Prune with every write transaction of it timed (the lock is held from BEGIN)."""
    held: list[float] = []
    original = engine_mod.write_transaction

    def measured(e: sa.Engine) -> Any:
        class Timed:
            def __enter__(self) -> sa.Connection:
                self.inner = original(e)
                self.started = time.perf_counter()
                return self.inner.__enter__()

            def __exit__(self, *exc: object) -> None:
                self.inner.__exit__(*exc)  # type: ignore[arg-type]
                held.append(time.perf_counter() - self.started)

        return Timed()

    audit.write_transaction = measured  # type: ignore[assignment]
    try:
        started = time.perf_counter()
        removed = audit.prune(engine, audit.cutoff(365), audit.CLI, record_empty=False)
        total = time.perf_counter() - started
    finally:
        audit.write_transaction = original
    return {
        "removed": removed,
        "seconds": round(total, 3),
        "batches": len(held),
        "longest_batch_ms": round(max(held) * 1000, 1) if held else 0.0,
        "records_per_second": round(removed / total) if removed and total else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--old", type=int, default=200_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scimd-prune-") as scratch:  # removed afterwards
        url = args.database_url or f"sqlite:///{scratch}/prune.db"
        engine = engine_mod.create_engine(url)
        ensure_current(engine)
        seed(engine, args.records, args.old)
        first = timed_prune(engine)
        again = timed_prune(engine)
        print(
            json.dumps(
                {
                    "database": engine.dialect.name,
                    "records": args.records,
                    "old": args.old,
                    "prune": first,
                    "nothing_to_remove": again,
                }
            )
        )
        engine.dispose()


if __name__ == "__main__":
    main()
