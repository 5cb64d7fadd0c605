"""The servers `python -m bench.decide` (and bench.threads, bench.replicas) time: Brein's and the
no-op one, built by `serving.server.create_server` with the servicer swapped. A change to how the
server builds its servicer once left the no-op server unable to start, which only a bench run showed."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import grpc
import pytest

from bench.decide import ServerProcess
from bench.workload import telecom_config
from serving.pb.brein.v1 import brein_pb2 as pb
from serving.pb.brein.v1 import brein_pb2_grpc as pb_grpc


@pytest.mark.parametrize("kind", ["noop", "decide"])
def test_each_bench_server_starts_and_answers_a_decide(tmp_path: Path, kind: str) -> None:
    store = tmp_path / "brein.db"
    server = ServerProcess(multiprocessing.get_context("spawn"), kind, telecom_config(store, None), store, None)
    try:
        with grpc.insecure_channel(server.address) as channel:
            answer = pb_grpc.DecisionServiceStub(channel).Decide(pb.DecideRequest(customer_id="c1", channel="app"), timeout=10)
        assert answer.action.id and answer.ranking
        assert server.cpu() > 0
    finally:
        server.stop()
