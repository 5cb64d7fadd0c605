"""Supervised background threads (store/threads.py): a loop that raises is logged, reported and run
again until it returns; a listener that fails itself does not stop it."""

from __future__ import annotations

import logging

import pytest

from store.threads import Supervised


def test_a_failing_loop_is_reported_logged_and_run_again_until_it_returns(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []
    heard: list[tuple[str, str]] = []

    def loop() -> None:
        runs.append(len(runs))
        if len(runs) <= 2:
            raise OSError(f"disk full, run {len(runs)}")

    def failed(thread: str, error: BaseException) -> None:
        heard.append((thread, str(error)))
        raise RuntimeError("the listener fails too")

    with caplog.at_level(logging.ERROR, logger="brein.threads"):
        supervised = Supervised("brein-test-loop", loop, on_failure=failed)
        supervised.start()
        supervised.join(timeout=10)
    assert runs == [0, 1, 2]  # returned on the third run: the thread ends
    assert heard == [("brein-test-loop", "disk full, run 1"), ("brein-test-loop", "disk full, run 2")]
    failures = [r for r in caplog.records if getattr(r, "background_thread", None) == "brein-test-loop" and r.exc_info]
    assert [str(r.exc_info[1]) for r in failures if r.exc_info] == ["disk full, run 1", "disk full, run 2"]
