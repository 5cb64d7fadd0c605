"""Ctrl-C (SIGINT) as real processes get it: once VW's driver had learned in a process, the process
ignored it for good (vowpal-wabbit-next's driver took the C-level handler); during a run it cut VW's
learning short and the truncated model was registered as a whole one (bandit/vw_driver.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

from bandit.config import load_config
from bandit.vw_driver import DRIVER_MODULE
from brain.champion import bootstrap_champion
from policies.registry import Registry
from reward.joiner import Joiner
from store import open_store
from tests.conftest import EXAMPLE, example_data
from tests.test_joiner import _populate
from tests.test_worker import WorkerProcess, until

LEARN_THEN_WAIT = """
import sys, time
from bandit.learner import train, vw_arguments
from bandit.config import load_config
from bandit.learner import LabelledExample
from bandit.catalog import Catalog
config = load_config(sys.argv[1])
actions = Catalog(config).actions[:3]
model, learned = train(vw_arguments(config.learner), None, [LabelledExample("shared |u a:1", actions, 0, 0.5, -1.0)] * 50)
print(learned, flush=True)
time.sleep(600)
"""


def as_at_a_terminal() -> None:
    """In the child, before Python starts: SIGINT's default action, as a shell's foreground command has it.
    A suite started in the background by a non-interactive shell ignores SIGINT, its children inherit
    that, and Python installs no KeyboardInterrupt handler for a signal ignored at its start."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def driver_started_by(pid: int) -> bool:
    """A `python -m bandit.vw_driver` process is a child of ``pid``."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # the process ended while it was read
        if parent == pid and DRIVER_MODULE.encode() in command:
            return True
    return False


def test_a_process_that_learned_still_stops_on_ctrl_c() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", LEARN_THEN_WAIT, str(EXAMPLE)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=as_at_a_terminal,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "50\n"
        process.send_signal(signal.SIGINT)
        # Far above an exit's time on a loaded machine (0.7 s alone), far below the sleep it interrupts.
        _, errors = process.communicate(timeout=60)
        assert process.returncode == -signal.SIGINT and errors.rstrip().endswith("KeyboardInterrupt"), errors
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def joined_store(tmp_path: Path) -> str:
    """A SQLite store with a champion and a few thousand joined examples."""
    url = str(tmp_path / "brein.db")
    _populate(url, customers=3_000)
    store = open_store(url)
    try:
        config = load_config(EXAMPLE)
        assert Joiner(config, store.joins).run().joined > 4_000
        bootstrap_champion(config, Registry(store.registry))
    finally:
        store.close()
    return url


def test_brein_worker_stops_on_ctrl_c_after_a_round_it_learned_in(tmp_path: Path, joined_store: str) -> None:
    data = example_data()
    data["server"]["store"] = joined_store
    data["joiner"] = {**data["joiner"], "interval_seconds": 0.2}
    config_file = tmp_path / "brein.toml"
    config_file.write_text(tomli_w.dumps(data))
    worker = WorkerProcess(config_file)
    try:
        until(lambda: worker.said("learned "), 60, "the worker learns a round")
        worker.process.send_signal(signal.SIGINT)
        assert worker.process.wait(timeout=10) == 0, worker.log
    finally:
        worker.stop()


SLOW_VW_ARGS = "--cb_explore_adf --cover 64 --bootstrap 30 -q uo -q uc --interactions uoc --quiet"
"""Several seconds of VW's driver on the joined store: long enough to interrupt it half-way."""


def test_ctrl_c_while_policy_train_learns_ends_it_and_registers_nothing(tmp_path: Path, joined_store: str) -> None:
    """It was swallowed: VW stopped learning early and the truncated model was registered, exit 0."""
    command = [sys.executable, "-m", "serving", "policy", "train", "--config", str(EXAMPLE), "--store", joined_store,
               "--id", "cut-short", "--until", "2026-07-15", "--no-evaluate", "--vw-args", SLOW_VW_ARGS]  # fmt: skip
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=as_at_a_terminal)  # fmt: skip
    try:
        # VW learns in a driver process the command starts when it has read and written its examples:
        # a fixed wait was too short for a loaded machine's imports, or long enough to learn it all.
        until(lambda: driver_started_by(process.pid), 120, "policy train starts VW's driver")
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 1 and "Aborted!" in output and "Traceback" not in output, output
    finally:
        process.kill()
        process.wait()
    store = open_store(joined_store)
    try:
        assert not Registry(store.registry).has("cut-short")
    finally:
        store.close()
