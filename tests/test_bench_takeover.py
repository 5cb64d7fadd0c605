"""`python -m bench.takeover`: a small log, joined once, then a joiner in each of two new processes."""

from __future__ import annotations

import json

import pytest

from bench.takeover import main


@pytest.mark.parametrize("on_postgres", [False, True], ids=["sqlite", "postgres"])
def test_new_processes_join_the_backlog_left_and_are_timed(
    on_postgres: bool, postgres_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["--decisions", "20000", "--json", *(["--store-url", postgres_database] if on_postgres else [])])
    figures = json.loads(capsys.readouterr().out)
    assert figures["decisions"] == 20000 and 0 < figures["queued"] < 20000  # the last 31 days wait
    assert len(figures["processes"]) == 2
    first = figures["processes"][0]
    assert first["first_joined"] > 0 and first["first_provisional"] > 0  # an hour of event time closes some
    assert all(p["first_run_s"] > 0 and p["later_runs_s"] > 0 for p in figures["processes"])
