"""Registration: a retried registration never creates a second version."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import sqlalchemy.exc
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from mlflow.tracking import MlflowClient

from birnn import registry


def test_a_lock_after_the_version_exists_does_not_register_it_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mlflow.register_model writes the version, then reads it back: "database is locked" on
    # that read (another writer holds the sqlite store) made the retry create a second version.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        locked = {"left": 1}
        real = SqlAlchemyStore._await_model_version_creation

        def busy(self, mv, await_creation_for):  # the store's read, lost to a writer once
            if locked["left"]:
                locked["left"] -= 1
                raise sqlalchemy.exc.OperationalError("SELECT", {}, "database is locked")
            return real(self, mv, await_creation_for)

        monkeypatch.setattr(SqlAlchemyStore, "_await_model_version_creation", busy)
        client = MlflowClient(uri)
        version = registry.register(
            client, "digits", (tmp_path / "model").as_uri(), {"test_accuracy": 0.9}, {}
        )
        assert locked["left"] == 0  # the lock did hit
        assert [str(v.version) for v in client.search_model_versions("name = 'digits'")] == ["1"]
        assert version.tags["test_accuracy"] == "0.900000"
    finally:
        mlflow.set_tracking_uri(None)
