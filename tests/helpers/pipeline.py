"""Helpers that copy the project into a temp git repo and drive DVC there."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from birnn.data import load_raw
from birnn.stack import NO_TELEMETRY, Stack
from tests.conftest import REPO

# Small real runs: a few hundred steps at most, so the batch is small and the rate constant
# (the defaults are tuned for 12 epochs on all 54,000 images), and the LSTMs not unrolled:
# tracing the unrolled graph costs every train process ~10 s of CPU, more than a small slice's
# training (the same network and maths; unrolling only pays over many steps). 2% of the
# training set held out for validation (1,199 images, not 5,999): every epoch of every test run
# validates on it (measured: a 1-epoch, 1,000-image train stage 15.0 s instead of 18.4 s).
SMALL_RUN = {
    "train__batch_size": 64,
    # The rate these slices were tuned with (the default's 0.005 is tuned for batch 256 and a
    # cosine decay over the default epochs).
    "train__learning_rate": 0.003,
    "train__lr_schedule": "constant",
    "model__unroll": False,
    "preprocess__val_fraction": 0.02,
}

PROJECT_FILES = ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore", "pyproject.toml")


def env_for(mnist_dir: Path, **extra: str) -> dict[str, str]:
    """Environment of a pipeline run: this venv first on PATH, the local MNIST mirror."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["BIRNN_DATA_MIRROR"] = str(mnist_dir)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.update(NO_TELEMETRY)
    env.update(extra)
    return env


def sh(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> str:
    """Run a command; fail with its output if it fails; return stdout + stderr."""
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = res.stdout + res.stderr
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {res.returncode}:\n{out[-4000:]}")
    return out


def dvc(*args: str, cwd: Path, env: dict[str, str], timeout: int = 900) -> str:
    return sh([sys.executable, "-m", "dvc", *args], cwd, env, timeout)


def git(*args: str, cwd: Path, env: dict[str, str]) -> str:
    return sh(["git", *args], cwd, env)


def set_params(repo: Path, **overrides: object) -> None:
    """Edit ``params.yaml`` in ``repo``: keys like ``train__epochs=1``."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for key, value in overrides.items():
        section, name = key.split("__")
        params[section][name] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def make_project(dest: Path, env: dict[str, str], **overrides: object) -> Path:
    """A committed git + DVC project with this repo's pipeline, ``SMALL_RUN`` and ``overrides``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        shutil.copy(REPO / name, dest / name)
    for folder in ("src", "scripts"):
        shutil.copytree(REPO / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    git("init", "-q", "-b", "main", cwd=dest, env=env)
    git("config", "user.email", "ci@example.org", cwd=dest, env=env)
    git("config", "user.name", "ci", cwd=dest, env=env)
    dvc("init", "-q", cwd=dest, env=env)
    # What `dvc config core.analytics false` writes, without a second dvc process.
    (dest / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
    set_params(dest, **{**SMALL_RUN, **overrides})
    git("add", "-A", cwd=dest, env=env)
    git("commit", "-qm", "project", cwd=dest, env=env)
    return dest


# Small real runs; the accuracy gate of scripts/ci/retrain.sh lowered to what they reach.
TEAM_SMALL = {
    "preprocess__train_samples": 1000,
    "train__epochs": 1,
    "evaluate__min_test_accuracy": 0.2,
}


def team_project(stack: Stack, dest: Path, mnist_dir: Path, **overrides) -> tuple[Path, dict]:
    """A committed project whose runs go to the stack and whose DVC remote is the stack's S3."""
    env = env_for(mnist_dir, MLFLOW_TRACKING_URI=stack.mlflow_uri())
    repo = make_project(dest, env, **{**TEAM_SMALL, **overrides})
    stack.configure_dvc_remote(repo)
    commit_all(repo, env, "DVC remote: the team's S3")
    return repo, env


def commit_all(repo: Path, env: dict[str, str], message: str) -> None:
    """Commit everything in ``repo`` (results included), as a developer would."""
    git("add", "-A", cwd=repo, env=env)
    git("commit", "-qm", message, "--allow-empty", cwd=repo, env=env)


def exp_run(repo: Path, env: dict[str, str], name: str, *overrides: str) -> str:
    """``dvc exp run -n NAME -S KEY=VALUE ...``; return its output."""
    sets = [arg for kv in overrides for arg in ("-S", kv)]
    return dvc("exp", "run", "-n", name, *sets, cwd=repo, env=env)


def raw_test(repo: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 real test images (raw 0-255 pixels) and labels in ``repo/data/raw``."""
    raw = load_raw(repo / "data/raw")
    return raw["x_test"], raw["y_test"]


def _predicted(lines) -> np.ndarray:
    return np.array([int(r["predicted"]) for r in csv.DictReader(lines)])


def stage_predictions(repo: Path) -> np.ndarray:
    """The evaluate stage's predicted digit for each test image."""
    with (repo / "reports/predictions.csv").open() as fh:
        return _predicted(fh)


def committed_predictions(repo: Path, rev: str = "HEAD") -> np.ndarray:
    """The predictions ``rev`` committed: those of the model its ``dvc.lock`` names (what
    ``birnn promote`` made champion), whatever later runs left in the workspace."""
    text = subprocess.run(
        ["git", "show", f"{rev}:reports/predictions.csv"],
        cwd=repo, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return _predicted(text.splitlines())
