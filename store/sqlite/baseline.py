"""`python store/sqlite/baseline.py DATABASE`: the yardstick of `python -m bench.join` on SQLite.

One query that sums, per decision, the outcomes of its customer in a 30-day window after it: the
least work any join of the log must do (no attribution modes, no exactly-once writes). It prints
the number of decisions it summed. A SQLite statement, so it lives with the SQLite backend; run as
a script, not a module of the package, so that it pays for sqlite3 alone, not for Brein's imports.
"""

from __future__ import annotations

import sqlite3
import sys
from contextlib import closing

WINDOW_SUM = (
    "SELECT d.decision_id, COALESCE(SUM(o.value), 0) FROM decisions d LEFT JOIN outcomes o "
    "ON o.customer_id = d.customer_id AND o.event_time > d.event_time AND o.event_time <= d.event_time + 2592000 "
    "GROUP BY d.decision_id"
)


def main() -> None:
    with closing(sqlite3.connect(sys.argv[1])) as conn:
        print(len(conn.execute(WINDOW_SUM).fetchall()))


if __name__ == "__main__":
    main()
