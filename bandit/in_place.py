"""Batches in which every item succeeds or fails on its own: each layer that decides a batch (the gRPC
servicer, the server's Brain, the Decider) first prepares each item, a step at which one item can be
refused, then hands the prepared ones on together. The caller gets one result per item, in order:
the item's outcome, or the error that refused it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

Item = TypeVar("Item")
Prepared = TypeVar("Prepared")
Outcome = TypeVar("Outcome")


def errors_in_place(
    items: Sequence[Item],
    prepare: Callable[[Item], Prepared],
    run: Callable[[list[Prepared]], Sequence[Outcome | Exception]],
    refused: type[Exception] | tuple[type[Exception], ...] = Exception,
) -> list[Outcome | Exception]:
    """``run`` over the items that ``prepare`` accepts, in one call; an item that ``prepare`` refuses
    (raises ``refused``) keeps its error in its place. ``run`` returns one result per prepared item."""
    prepared: list[Prepared | Exception] = []
    for item in items:
        try:
            prepared.append(prepare(item))
        except refused as error:
            prepared.append(error)
    results = iter(run([p for p in prepared if not isinstance(p, Exception)]))
    return [p if isinstance(p, Exception) else next(results) for p in prepared]
