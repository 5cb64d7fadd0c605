"""`python -m bench.join_writes`: the worker's write transactions on a SQLite log, built or copied."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.join_writes import main


def test_a_backlog_is_joined_and_each_write_transaction_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log.db"
    main(["--backlog", "1000", "--keep", str(log)])
    built = json.loads(capsys.readouterr().out)
    main(["--backlog", "1000", "--log", str(log)])  # the kept log, joined again on a fresh copy
    copied = json.loads(capsys.readouterr().out)
    for figures in (built, copied):
        assert figures["joined"] == 1000
        assert figures["transactions"] >= 1000 // 250 and figures["frames_total"] >= figures["transactions"]
        assert 0 < figures["cpu_ms_p50"] <= figures["held_ms_p50"] * 2
        assert 0 <= figures["system_share"] <= 1
    assert log.stat().st_size > 0
