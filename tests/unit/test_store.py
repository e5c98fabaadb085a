"""Retries on sqlite's "database is locked", and nothing else."""

from __future__ import annotations

import sqlite3

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
