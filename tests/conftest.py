"""Shared fixtures: the real MNIST folder, the repo root, and small helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Real MNIST beside the checkout (../shared/data/mnist); BIRNN_MNIST_DIR overrides.
MNIST_DIR = Path(os.environ.get("BIRNN_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))


def pytest_configure(config: pytest.Config) -> None:
    """Telemetry off for this process and every server or pipeline it starts."""
    from birnn.stack import NO_TELEMETRY

    os.environ.update(NO_TELEMETRY)
    # TensorFlow turns its oneDNN kernels on by default only on CPUs with AVX512_VNNI/BF16 or
    # AMX (then it also prints two start-up lines that TF_CPP_MIN_LOG_LEVEL does not quiet).
    # Their arithmetic differs in the last bits, and the tests' tuned small runs (an early stop
    # at epoch 3, a trial killed mid-epoch) would then depend on the CPU: off in every test.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Test files run side by side (pytest-xdist): each TensorFlow process keeps to one core,
        # so the files' stages share the cores instead of each spinning a pool sized for all.
        os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
        os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


# The heaviest test files, heaviest first (seconds of one full run, 3 workers on 2 cores,
# 2026-12-07; a SAME_WORKER group as the sum of its files). Each file runs whole on one worker,
# so the longest must start first, or the run waits on it at the end (longest-processing-time
# first); the rest keep their order behind them.
HEAVIEST_FIRST = (
    "tests/integration/test_reliability.py",  # 831 s
    "tests/integration/test_team_stack.py",  # 828 s
    "tests/integration/test_sweep.py",  # 455 s
    "tests/integration/test_promote.py",  # 420 s
    "tests/integration/test_serve.py",  # 387 s with the rest of the `tracked` group
    "tests/integration/test_workflow_rehearsal.py",  # 363 s
    "tests/integration/test_store.py",  # 305 s
    "tests/integration/test_workflows.py",  # 157 s
    "tests/integration/test_pipeline.py",  # 138 s
)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (pyproject.toml): one worker more than xdist would start (its count of the
    cores); ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still sets the number itself.

    Many tests wait (a server starting, a kill, a poll); with one worker per core the 2 cores
    of a full run were 1.57 busy on average, with 3 workers 1.78: 22 min 48 s of pytest
    against 26 min 19 s (2026-12-07, docs/development.md). ``--maxprocesses`` caps it.
    """
    from xdist.plugin import pytest_xdist_auto_num_workers as xdist_count

    count = xdist_count(config)
    set_by_hand = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS", "").strip().isdigit()
    return count if set_by_hand else count + 1


# Files that share a costly session fixture run on one worker, so it is built once: `tracked`
# (tests/integration/conftest.py: a small pipeline logged to a server and promoted, ~65 s).
# Not the team stack's files: a stack starts in ~12 s, and those files together (~1,650 s)
# would outlast the whole run on one worker.
SAME_WORKER = {
    "tests/integration/test_tracking.py": "tracked",
    "tests/integration/test_serving.py": "tracked",
    "tests/integration/test_serve.py": "tracked",
    "tests/integration/test_predict.py": "tracked",
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadfile`` (pyproject.toml) with the files of ``SAME_WORKER`` as one unit."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFixtureScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return SAME_WORKER.get(path, path)

    return SharedFixtureScheduling(config, log)


@pytest.hookimpl(trylast=True)  # after pytest-randomly's shuffle, which this keeps per file
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder with the four official MNIST .gz files; skip when it is absent."""
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found at {MNIST_DIR} (set BIRNN_MNIST_DIR)")
    return MNIST_DIR


def run_module(module: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600):
    """Run ``python -m module`` in ``cwd``; return the CompletedProcess."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
