"""Customers' heads on SQLite: what a Forget moves, so that no decision made on a history read
before it is logged after it.

A decision is made on a history read from the log and written afterwards; a Forget of its customer
that commits in between deletes the history, and the decision, resting on what was deleted (the
quiet period of a forgotten complaint, a contact cap of forgotten contacts), must not be logged after
it. PostgreSQL keeps every customer's head in a table (store/postgres/decisions.py), and a Forget
moves it (store/postgres/privacy.py). One process writes a SQLite store (its serving lock), and
only its Forgets delete customers: the heads are kept here, in memory, and only Forgets move them.

Every Forget gets the next generation when it is called. A read of histories gives every customer
the generation of the newest Forget committed (``visible``) as its head, taken before the read
begins: the read sees every Forget up to it. The log's writer, running a Forget's deletion, notes
its generation for the customer (``ran``); a write of decisions whose head is older than its
customer's noted generation was made on a history read before that Forget committed, and ran after
it: it is refused as StaleHistory, and its caller decides again on the history read afresh.

Nothing has to be checked while no Forget was called between a read and the write of its decisions:
such a write is queued before any later Forget (the writer takes writes in order) and can never be
refused (``may_refuse``). So an ordinary Decide pays for no second try.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from store.records import Head

NOTED = 4096
"""Customers whose latest Forget the writer keeps noted; a write of decisions read before the oldest
Forget it no longer notes is refused as stale (once: it is made again on a fresh read)."""


class Forgets:
    """The generations of a SQLite store's Forgets (see the module's docstring)."""

    def __init__(self) -> None:
        self._calling = threading.Lock()
        self._called = 0
        """The generation of the newest Forget called."""
        self.visible = 0
        """Every Forget of a generation up to this one has committed its deletion (or failed)."""
        self._ran: dict[str, int] = {}  # customer -> the generation of its latest Forget the writer ran (the writer's)
        self._newest_ran = 0
        self._forgotten_below = 0  # writes read before this generation are refused: its customer is no longer noted

    def call(self, submit: Callable[[int], Future[Any]]) -> Future[Any]:
        """``submit(generation)``: the Forget's deletion, submitted to the writer with its generation.
        Forgets are submitted in the order of their generations, and each one's generation is
        visible once its deletion has committed or failed."""
        with self._calling:
            self._called += 1
            generation = self._called
            deletion = submit(generation)
        deletion.add_done_callback(lambda _: self._committed(generation))
        return deletion

    def _committed(self, generation: int) -> None:
        with self._calling:
            self.visible = max(self.visible, generation)

    def ran(self, customer: str, generation: int) -> None:
        """The writer deletes the customer's history, in the transaction of the Forget of ``generation``."""
        self._ran.pop(customer, None)
        self._ran[customer] = generation
        self._newest_ran = max(self._newest_ran, generation)
        if len(self._ran) > NOTED:
            oldest = next(iter(self._ran))
            self._forgotten_below = max(self._forgotten_below, self._ran.pop(oldest))

    def may_refuse(self, heads: Mapping[str, Head]) -> bool:
        """Whether a write of decisions made on ``heads``, submitted already, may be refused as stale:
        only if a Forget was called after those heads were read (or was running when they were)."""
        called = self._called
        for head in heads.values():
            if head is not None and head < called:
                return True
        return False

    def refuses(self, heads: Mapping[str, Head]) -> bool:
        """In the writer: whether a write of decisions made on ``heads`` rests on a history that a
        Forget the writer ran since has deleted."""
        newest = self._newest_ran
        if not newest:
            return False
        below, ran = self._forgotten_below, self._ran
        for customer, head in heads.items():
            if head is not None and head < newest and (head < below or head < ran.get(customer, 0)):
                return True
        return False
