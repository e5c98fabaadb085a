"""Retries on sqlite's "database is locked", and nothing else; a migration another process
finishes while the stage looks is left alone."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from birnn import store


def flaky(failures: list[BaseException]):
    calls = []

    def fn() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return "done"

    return fn, calls


def test_locked_errors_are_retried_until_the_call_goes_through() -> None:
    locked = sqlite3.OperationalError("database is locked")
    wrapped = MlflowException("(sqlite3.OperationalError) database is locked")
    fn, calls = flaky([locked, wrapped])
    assert store.retrying(fn)() == "done"
    assert len(calls) == 3


def test_other_errors_are_not_retried() -> None:
    fn, calls = flaky([sqlite3.OperationalError("no such table: runs")])
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        store.retrying(fn)()
    assert len(calls) == 1


def test_retries_stop_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "LOCK_WAIT_S", 0.0)
    fn, calls = flaky([sqlite3.OperationalError("database is locked")] * 5)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        store.retrying(fn)()
    assert len(calls) == 1


def test_sqlite_path() -> None:
    assert str(store.sqlite_path("sqlite:////srv/p/mlflow.db")) == "/srv/p/mlflow.db"
    assert store.sqlite_path("sqlite:///:memory:") is None
    assert store.sqlite_path("http://127.0.0.1:5000") is None


def half_migrated(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE tags (k)")
        conn.execute("CREATE TABLE _alembic_tmp_tags (k)")


def test_a_migration_that_ends_between_the_two_looks_leaves_nothing_to_repair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seen in a full run under load: the temp table was there at the first look, and its
    # migrating process had dropped it and exited by the second (who holds the file), so the
    # stage "repaired" a store with nothing to mend and kept a needless backup.
    db = tmp_path / "mlflow.db"
    half_migrated(db)

    def ended_meanwhile(path: Path) -> list:
        with sqlite3.connect(path) as conn:
            conn.execute("DROP TABLE _alembic_tmp_tags")
        return []  # that process has exited: nobody holds the file

    monkeypatch.setattr(store, "holders", ended_meanwhile)
    assert store.leftovers_once_alone(db) == []


def test_repair_of_a_store_mended_meanwhile_only_opens_it(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    half_migrated(db)
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE _alembic_tmp_tags")
    opened = []
    store.repair(db, lambda: opened.append(db))
    assert opened == [db]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]  # no backup, no rename
