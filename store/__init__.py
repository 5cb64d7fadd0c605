"""Brein's store: the ports (store.ports), the plain records they take and give (store.records),
the errors they raise (store.errors), and ``open_store(url)`` for a backend. Imports nothing of
Brein's: it is the ground floor the rest stands on."""

from store.opening import open_store
from store.ports import Store

__all__ = ["Store", "open_store"]
