"""`python store/postgres/baseline.py URL`: the yardstick of `python -m bench.join --store-url` on
PostgreSQL, as store/sqlite/baseline.py is on SQLite.

One query that sums, per decision, the outcomes of its customer in a 30-day window after it: the
least work any join of the log must do (no attribution modes, no exactly-once writes). It prints
the number of decisions it summed (read through a server-side cursor). Run as a script, so that
it pays for psycopg alone, not for Brein's imports.
"""

from __future__ import annotations

import sys

import psycopg

WINDOW_SUM = (
    "SELECT d.decision_id, COALESCE(SUM(o.value), 0) FROM decisions d LEFT JOIN outcomes o "
    "ON o.customer_id = d.customer_id AND o.event_time > d.event_time AND o.event_time <= d.event_time + 2592000 "
    "GROUP BY d.decision_id"
)


def main() -> None:
    with psycopg.connect(sys.argv[1]) as conn, conn.cursor(name="window_sum") as cursor:
        cursor.itersize = 20_000
        cursor.execute(WINDOW_SUM)
        print(sum(1 for _ in cursor))


if __name__ == "__main__":
    main()
