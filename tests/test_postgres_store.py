"""What only the PostgreSQL backend does: opening a database that holds no store, and the group
commit's one-round-trip path with its fallback (each write alone when the database refuses one)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from store import open_store
from store.errors import UnknownStore
from tests.conftest import postgres_store_url


@pytest.fixture
def empty_url(postgres_database: str) -> Iterator[str]:
    with postgres_store_url(postgres_database) as url:
        yield url


def _tables(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [name for (name,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]


def test_a_database_without_a_store_is_not_created_when_one_must_exist(empty_url: str) -> None:
    with pytest.raises(UnknownStore, match=r"no store in the PostgreSQL database '.*' \(schema 't_.*'\): give --store"):
        open_store(empty_url, create=False)
    assert _tables(empty_url) == []
    open_store(empty_url).close()  # created here, then it may be opened without creating
    store = open_store(empty_url, create=False)
    try:
        assert store.decisions.decision_count() == 0
    finally:
        store.close()
    assert "decisions" in _tables(empty_url)
