"""A real `mlflow server` on 127.0.0.1 for tests: free port, sqlite store in a temp dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from birnn.stack import free_port
from birnn.stack.state import SERVER_ENV


@contextmanager
def mlflow_server(
    root: Path,
    timeout: float = 120.0,
    started: list[subprocess.Popen] | None = None,
    port: int | None = None,
) -> Iterator[str]:
    """Start the server, wait for /health, yield its URI; stop it by its pid at the end.
    ``started`` receives the server's process (a test that kills it mid-way); ``port``: where
    (a server restarted where its clients point), else a free one."""
    port = port or free_port()
    uri = f"http://127.0.0.1:{port}"
    log = (root / "server.log").open("a")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **SERVER_ENV},
        start_new_session=True,  # its own process group, so workers stop with it
    )  # fmt: skip
    if started is not None:
        started.append(proc)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()}")
            try:
                if requests.get(f"{uri}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not answer /health in time")
            time.sleep(0.5)
        yield uri
    finally:
        stop_group(proc)
        log.close()


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a server started with ``start_new_session=True`` and its workers, by its pid."""
    if proc.poll() is not None:
        return  # already stopped (a test killed it)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
