"""`brein simulate` and `python -m bench.learning`: a simulated world against Brein — a real server
over gRPC, or Brein in-process (deterministic, for quick experiments and the family benchmark) —
next to the reference policies. ``InProcessDriver`` is the one place the simulation uses ``Brain``."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import tomllib
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import tomli_w

from bandit.catalog import Action, Catalog
from bandit.config import BreinConfig, parse_config
from bandit.errors import BreinError
from bandit.requests import DecisionRequest
from brain.core import Brain
from brain.worker import Worker
from policies.simulation.base import Arrival, Consent, Outcome
from policies.simulation.harness import RunResult
from reward.ingest import ActivationReport, OutcomeReport
from serving import converters
from serving.pb.brein.v1 import brein_pb2 as pb
from serving.pb.brein.v1 import brein_pb2_grpc as pb_grpc
from store import open_store

STATE = {True: pb.CONSENT_STATE_GRANTED, False: pb.CONSENT_STATE_DENIED}


def simulation_config(data: dict[str, Any], store: Path, *, interval: float) -> dict[str, Any]:
    """The config for a simulated run: its own store, free loopback ports, a quick joiner."""
    data = json.loads(json.dumps(data))
    data.setdefault("server", {}).update({"store": str(store), "address": "127.0.0.1:0", "metrics_address": "127.0.0.1:0"})
    data.setdefault("joiner", {})["interval_seconds"] = interval
    return data


class GrpcDriver:
    """Brein as a channel backend sees it: a `brein serve` process, called over gRPC."""

    name = "Brein (learned, over gRPC)"

    def __init__(self, config_data: dict[str, Any], workdir: Path, *, interval: float = 0.5) -> None:
        path = workdir / "simulate.toml"
        path.write_text(tomli_w.dumps(simulation_config(config_data, workdir / "brein.db", interval=interval)))
        self.catalog = Catalog(parse_config(tomllib.loads(path.read_text())))
        self.process = subprocess.Popen([sys.executable, "-m", "serving", "serve", "--config", str(path)],
                                        stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert self.process.stderr is not None
        self.log: list[str] = []
        for line in self.process.stderr:
            self.log.append(line)
            entry = json.loads(line)
            if str(entry.get("message", "")).startswith("serving on"):
                self.port = int(entry["port"])
                break
        else:
            raise RuntimeError("the Brein server did not start: " + "".join(self.log[-5:]))
        threading.Thread(target=self._drain, daemon=True).start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = pb_grpc.DecisionServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self._pending: list[grpc.Future] = []

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)

    def decide(self, arrival: Arrival, numeric: dict[str, float], categorical: dict[str, str], consent: Consent) -> tuple[str, Action]:
        response = self.stub.Decide(pb.DecideRequest(
            request_id=f"sim-{arrival.customer_id}-{arrival.event_time:.3f}", customer_id=arrival.customer_id, channel=arrival.touchpoint,
            event_time=converters.timestamp(arrival.event_time), context=pb.Context(numeric=numeric, categorical=categorical),
            consent=pb.Consent(personalisation=STATE[consent.personalisation], contact={c: STATE[ok] for c, ok in consent.contact.items()}),
        ))  # fmt: skip
        return response.decision_id, self.catalog.by_id[response.action.id]

    def activate(self, decision_id: str, at: float) -> None:
        self._pending.append(self.stub.Activate.future(pb.ActivateRequest(decision_id=decision_id, event_time=converters.timestamp(at))))
        self._settle()

    def report(self, outcome: Outcome) -> None:
        self._pending.append(self.stub.ReportOutcome.future(pb.ReportOutcomeRequest(
            outcome_id=outcome.outcome_id, customer_id=outcome.customer_id, type=outcome.type, value=outcome.value,
            event_time=converters.timestamp(outcome.event_time),
        )))  # fmt: skip
        self._settle()

    def _settle(self, keep: int = 64) -> None:
        while len(self._pending) > keep:
            self._pending.pop(0).result()

    def finish(self) -> None:
        self._settle(0)

    def close(self) -> None:
        self.channel.close()
        self.process.terminate()
        self.process.wait(timeout=60)


class InProcessDriver:
    """Brein's core without gRPC, joining and learning every ``learn_every`` decisions: deterministic.
    Outcomes and activations are committed before the next decision reads the history; decisions
    need no wait (the decider counts its in-flight decisions in the history)."""

    name = "Brein (learned, in-process)"

    def __init__(self, config: BreinConfig, workdir: Path, *, learn_every: int = 250) -> None:
        self.store = open_store(f"sqlite:///{workdir / 'brein.db'}")
        self.brain = Brain(config, self.store)
        self.worker = Worker(config, self.store)
        self.learn_every = learn_every
        self._decisions = 0
        self._writes: list[Future[Any]] = []

    def _flush(self) -> None:
        for future in self._writes:
            future.result()
        self._writes.clear()

    def decide(self, arrival: Arrival, numeric: dict[str, float], categorical: dict[str, str], consent: Consent) -> tuple[str, Action]:
        self._flush()
        pending = self.brain.decide(DecisionRequest(
            customer_id=arrival.customer_id, touchpoint=arrival.touchpoint, request_id=f"sim-{arrival.customer_id}-{arrival.event_time:.3f}",
            event_time=arrival.event_time, numeric=numeric, categorical=categorical,
            personalisation="granted" if consent.personalisation else "denied",
            contact_consent={c: "granted" if ok else "denied" for c, ok in consent.contact.items()},
        ))  # fmt: skip
        self._writes.append(pending.committed)
        self._decisions += 1
        if self._decisions % self.learn_every == 0:
            self._flush()
            self.worker.round()
            self.brain.follow()
        return pending.record.decision_id, self.brain.catalog.by_id[pending.record.action_id]

    def activate(self, decision_id: str, at: float) -> None:
        self._flush()  # the decision must be in the log before it can be activated
        self._writes.append(self.brain.activate(ActivationReport(decision_id, at)))

    def report(self, outcome: Outcome) -> None:
        report = OutcomeReport(outcome.outcome_id, outcome.customer_id, outcome.type, outcome.value, outcome.event_time)
        self._writes.append(self.brain.report_outcome(report)[1])

    def finish(self) -> None:
        self._flush()

    def close(self) -> None:
        self.store.close()


@contextmanager
def brein_driver(config_data: dict[str, Any], *, in_process: bool) -> Iterator[GrpcDriver | InProcessDriver]:
    with tempfile.TemporaryDirectory(prefix="brein-sim-") as tmp:
        driver: GrpcDriver | InProcessDriver = (
            InProcessDriver(parse_config(config_data), Path(tmp)) if in_process else GrpcDriver(config_data, Path(tmp))
        )
        try:
            yield driver
        finally:
            driver.close()


def plot_curves(results: list[RunResult], path: Path, title: str = "Brein learning in the simulated telecom world") -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BreinError("--plot needs matplotlib: pip install 'brein[plot]'") from None
    figure, axes = plt.subplots(figsize=(9, 5))
    for result in results:
        days, values = result.curve(7.0)
        axes.plot(days, values, marker="o" if result.name.startswith("Brein") else None, label=result.name)
    axes.axhline(0.0, color="grey", linewidth=0.8)
    axes.set_xlabel("simulated day")
    axes.set_ylabel("expected gain per decision over do-nothing (money, weekly mean)")
    axes.set_title(title)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
