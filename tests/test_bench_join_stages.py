"""`python -m bench.join_stages`: a small log built once, joined on a copy, stage by stage."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from psycopg import sql

from bench.join_stages import main
from tests.conftest import POSTGRES_URL


def test_a_log_is_built_once_and_joined_on_a_copy(postgres_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    log = f"brein_test_log_{uuid.uuid4().hex[:12]}"
    try:
        main(["--server", POSTGRES_URL, "--build", "300,90", log])
        first = json.loads(capsys.readouterr().out)
        main(["--server", POSTGRES_URL, log])  # the log is kept: joined again, on a fresh copy
        second = json.loads(capsys.readouterr().out)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(log)))
    assert first["joined"] + first["unactivated"] == 300
    assert first["digest"] == second["digest"] is not None  # the same log, the same output
    assert {"closing", "closed_count", "write_examples", "writes"} <= set(first["seconds_in"])
    assert first["peak_rss_mib"] > 0 and first["database_cpu_s"] >= 0
