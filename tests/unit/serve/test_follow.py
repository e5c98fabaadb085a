"""The follower on a real sqlite registry with a tiny real model: swaps when the alias moves,
keeps serving through a registry that fails (logging once), says the first load's problem in
one line."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from birnn import tracking
from birnn.errors import TrackingError
from birnn.serve.follow import Follower


@pytest.fixture(scope="module")
def registry_with_two(tmp_path_factory: pytest.TempPathFactory) -> str:
    import keras

    tmp = tmp_path_factory.mktemp("follow")
    keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(10)]).save(
        tmp / "tiny.keras"
    )
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        client = MlflowClient(uri)
        with mlflow.start_run(experiment_id=client.create_experiment("follow")):
            source = tracking.log_model(tmp / "tiny.keras", None)
        client.create_registered_model("tiny")
        for _ in range(2):
            client.create_model_version("tiny", source, tags={"test_accuracy": "0.5"})
        client.set_registered_model_alias("tiny", "champion", "1")
    finally:
        mlflow.set_tracking_uri(None)
    return uri


@pytest.fixture(autouse=True)
def loads_from(registry_with_two: str):
    """Models load from the global tracking URI, which `birnn serve` sets to its store."""
    mlflow.set_tracking_uri(registry_with_two)
    yield
    mlflow.set_tracking_uri(None)


def test_a_moved_alias_is_swapped_in_once(registry_with_two: str) -> None:
    client = MlflowClient(registry_with_two)
    swaps = []
    follower = Follower("models:/tiny@champion", lambda: MlflowClient(registry_with_two), 0.1)
    follower.on_swap = lambda old, new: swaps.append((old.version, new.version))
    first = follower.current
    assert (first.name, first.version, first.alias, first.scores) == (
        "tiny",
        "1",
        "champion",
        {"test_accuracy": 0.5},
    )
    assert follower.poll_once() is False and follower.current is first
    client.set_registered_model_alias("tiny", "champion", "2")
    assert follower.poll_once() is True
    assert follower.current.version == "2" and swaps == [("1", "2")]
    assert np.asarray(follower.current.model.predict(np.zeros((2, 28, 28), np.float32))).shape == (
        2,
        10,
    )
    assert follower.poll_once() is False
    client.set_registered_model_alias("tiny", "champion", "1")


def test_a_failing_registry_keeps_the_model_and_logs_once(
    registry_with_two: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    where = {"uri": registry_with_two}
    follower = Follower("models:/tiny@champion", lambda: MlflowClient(where["uri"]), 0.1)
    errors = []
    follower.on_poll_error = lambda: errors.append(1)
    served = follower.current
    (tmp_path / "a-file").write_text("")
    where["uri"] = f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}"  # cannot be created
    with caplog.at_level(logging.INFO, logger="birnn.serve.follow"):
        for _ in range(3):
            assert follower.poll_once() is False
        assert follower.current is served and len(errors) == 3
        where["uri"] = registry_with_two
        assert follower.poll_once() is False
    lines = [r.getMessage() for r in caplog.records if r.name == "birnn.serve.follow"]
    assert sum("cannot look tiny@champion up" in m for m in lines) == 1, lines
    assert sum("the registry answers again" in m for m in lines) == 1, lines
    assert lines[0].endswith("still serving version 1"), lines


def test_a_missing_alias_or_model_is_one_line(registry_with_two: str) -> None:
    factory = lambda: MlflowClient(registry_with_two)  # noqa: E731
    with pytest.raises(TrackingError, match=r"tiny has no version with alias 'nope'"):
        Follower("models:/tiny@nope", factory)
    with pytest.raises(TrackingError, match=r"^cannot load model runs:/0123/model: "):
        Follower("runs:/0123/model", factory)
    fixed = Follower("models:/tiny/2", factory)
    assert (fixed.current.version, fixed.follows) == ("2", False)


def test_a_version_that_will_not_load_is_tried_once(
    registry_with_two: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = MlflowClient(registry_with_two)
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    broken = client.create_model_version("tiny", str(empty)).version
    follower = Follower("models:/tiny@champion", lambda: MlflowClient(registry_with_two), 0.1)
    client.set_registered_model_alias("tiny", "champion", str(broken))
    try:
        with caplog.at_level(logging.WARNING, logger="birnn.serve.follow"):
            for _ in range(3):
                assert follower.poll_once() is False
        assert follower.current.version == "1"  # still serving what it had
        lines = [r.getMessage() for r in caplog.records if r.name == "birnn.serve.follow"]
        assert [m for m in lines if f"cannot load tiny version {broken}" in m] == lines[:1], lines
        assert len(lines) == 1, lines  # tried and warned once, not at every poll
    finally:
        client.set_registered_model_alias("tiny", "champion", "1")
