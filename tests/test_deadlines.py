"""Awaiting results done on other threads (serving/deadlines.py): one wake-up of the loop for all
those done before it runs again."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from serving.deadlines import finished


def test_results_done_together_wake_the_loop_once_and_errors_reach_the_caller() -> None:
    go = threading.Event()

    def work(i: int) -> int:
        go.wait(10)
        if i == 3:
            raise ValueError("expected a failure, got one")
        return i * i

    async def main() -> tuple[list[Any], int]:
        loop = asyncio.get_running_loop()
        wakes = [0]
        plain = loop.call_soon_threadsafe

        def counted(*args: Any, **kwargs: Any) -> Any:
            wakes[0] += 1
            return plain(*args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign, assignment]
        with ThreadPoolExecutor(5) as pool:
            futures = [pool.submit(work, i) for i in range(5)]
            waiting = [asyncio.ensure_future(finished(f)) for f in futures]
            await asyncio.sleep(0)  # every waiter has registered
            go.set()
            while not all(f.done() for f in futures):
                time.sleep(0.01)  # the loop is busy: all five finish before it runs again
            results = await asyncio.gather(*waiting, return_exceptions=True)
        return results, wakes[0]

    results, wakes = asyncio.run(main())
    assert results[:3] == [0, 1, 4] and results[4] == 16
    with pytest.raises(ValueError, match="expected a failure"):
        raise results[3]
    assert wakes == 1
