"""Shared integration fixtures: one real `mlflow server` and one small real pipeline run
logged to it, used by the tracking, registry-lineage and serving tests."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from birnn.stack import Stack, missing_binaries
from tests.helpers.mlflow_server import mlflow_server
from tests.helpers.pipeline import commit_all, dvc, env_for, make_project, sh

EPOCHS = 2
NAME = "birnn-mnist"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> str:
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


@pytest.fixture()
def on_the_server(server: str):
    """Other modules' tests move MLflow's global tracking URI: point it at the server again."""
    mlflow.set_tracking_uri(server)
    yield
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def tracked(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path, server: str):
    env = env_for(mnist_dir, MLFLOW_TRACKING_URI=server)
    repo = make_project(
        tmp_path_factory.mktemp("tracked") / "repo",
        env,
        preprocess__train_samples=3000,
        train__epochs=EPOCHS,
        evaluate__min_test_accuracy=0.5,  # the floor `birnn promote` holds, for a small run
    )
    dvc("repro", cwd=repo, env=env)
    # Evaluate only registers: commit the results and promote them, as a team's main would.
    commit_all(repo, env, "first results")
    sh([sys.executable, "-m", "birnn", "promote"], repo, env)
    mlflow.set_tracking_uri(server)
    client = MlflowClient(server)
    run_id = json.loads((repo / "reports/train.json").read_text())["mlflow_run_id"]
    return repo, env, client, client.get_run(run_id)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The team stack (PostgreSQL, SeaweedFS S3, mlflow server) on free loopback ports."""
    missing = missing_binaries()
    if missing:
        pytest.skip(f"team stack cannot run here: {'; '.join(missing)}")
    # Not under pytest's tmp folder: that one is private to root, and PostgreSQL runs as
    # `nobody` under root, so the stack's folder must be one it can enter.
    base = Path(tempfile.mkdtemp(prefix="birnn-stack-"))
    base.chmod(0o755)
    stack = Stack(base / "stack")
    t0 = time.monotonic()
    try:  # an `up` that fails part-way still stops what it started
        timings = stack.up()
        logging.getLogger(__name__).warning(
            "stack up in %.1fs (%s)",
            time.monotonic() - t0,
            ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()),
        )
        yield stack
    finally:
        stack.down()
        shutil.rmtree(base, ignore_errors=True)
