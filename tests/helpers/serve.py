"""Start ``birnn serve`` (or ``mlflow models serve``) on a free loopback port for a test."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from mlflow.tracking import MlflowClient

from birnn import registry
from birnn.stack import free_port
from tests.helpers.mlflow_server import stop_group


@dataclass
class Running:
    url: str
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text()


def _wait(running: Running, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert running.proc.poll() is None, running.output()[-3000:]
        try:
            if requests.get(f"{running.url}/ping", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, f"{running.url} did not come up"
        time.sleep(0.3)


@contextmanager
def started(
    commands: list[tuple[list[str], Path]], env: dict[str, str], cwd: Path
) -> Iterator[list[Running]]:
    """Start each server command (``{port}`` in its args replaced; output to its log file) at
    once, wait for every /ping, stop each by its own process group at the end."""
    running: list[Running] = []
    try:
        for args, log in commands:
            port = free_port()
            with log.open("w") as fh:
                proc = subprocess.Popen(
                    [a.replace("{port}", str(port)) for a in args],
                    env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            running.append(Running(f"http://127.0.0.1:{port}", proc, log))
        for r in running:
            _wait(r)
        yield running
    finally:
        for r in running:
            stop_group(r.proc)


def birnn_serve(*extra: str) -> list[str]:
    return [sys.executable, "-m", "birnn", "serve", "--port", "{port}", *extra]


def mlflow_models_serve(uri: str) -> list[str]:
    mlflow = str(Path(sys.executable).parent / "mlflow")
    return [mlflow, "models", "serve", "-m", uri, "--env-manager", "local",
            "-h", "127.0.0.1", "-p", "{port}"]  # fmt: skip


def copy_versions(
    client: MlflowClient, source: str, name: str, n: int, tags: dict[str, str] | None = None
) -> list[str]:
    """Register the model at ``source`` ``n`` more times as ``name`` (a model of its own, so
    moving its champion touches no other test's), with ``tags``; return the new versions."""
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    model_id = source.removeprefix("models:/")  # a logged model's URI, as mlflow registers it
    run_id = client.get_logged_model(model_id).source_run_id
    return [
        str(client.create_model_version(name, source, run_id, tags=tags, model_id=model_id).version)
        for _ in range(n)
    ]


def move(client: MlflowClient, name: str, version: str, previous: str | None) -> None:
    """Make ``version`` champion as ``birnn promote`` does (audit tags, previous, champion)."""
    registry.move_champion(
        client,
        name,
        registry.Move("promote", version, previous, "test", "a test", "test", "2026-12-07"),
    )
