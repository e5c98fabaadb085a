"""End to end: `dvc repro` of the real pipeline on a small slice of real MNIST, in a temp repo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from birnn.stage import default_op_threads
from tests.helpers.pipeline import commit_all, dvc, env_for, exp_run, make_project, set_params

pytestmark = pytest.mark.integration

OUTPUTS = [
    "data/raw/train-images-idx3-ubyte.gz",
    "data/processed/train.npz",
    "data/processed/val.npz",
    "data/processed/test.npz",
    "models/model.keras",
    "reports/history.csv",
    "reports/train.json",
    "reports/model_summary.txt",
    "reports/metrics.json",
    "reports/per_class.json",
    "reports/confusion.csv",
    "reports/predictions.csv",
    "reports/figures/loss.png",
    "reports/figures/accuracy.png",
    "reports/figures/confusion_matrix.png",
    "reports/figures/misclassified.png",
]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> tuple[Path, dict]:
    env = env_for(mnist_dir)
    repo = make_project(
        tmp_path_factory.mktemp("e2e") / "repo",
        env,
        preprocess__train_samples=3000,
        train__epochs=1,
        train__learning_rate=0.003,  # one short epoch: a bolder step size learns more
    )
    # In this first run the stages choose their threads per op as for users (tests/conftest.py
    # sets one per op for the rest): were it chosen after TensorFlow's first op, the run would
    # fail; their INFO lines say what they chose.
    own = {k: v for k, v in env.items() if k != "TF_NUM_INTRAOP_THREADS"}
    FIRST_RUN["log"] = dvc("repro", cwd=repo, env={**own, "BIRNN_LOG_LEVEL": "INFO"})
    # What that first run wrote, before other tests (in any order) change params and rerun.
    FIRST_RUN["present"] = [rel for rel in OUTPUTS if (repo / rel).is_file()]
    for name in ("metrics.json", "history.csv", "train.json"):
        FIRST_RUN[name] = (repo / "reports" / name).read_text()
    return repo, env


FIRST_RUN: dict = {}


def test_repro_writes_every_output_and_learns(project: tuple[Path, dict]) -> None:
    assert FIRST_RUN["present"] == OUTPUTS
    metrics = json.loads(FIRST_RUN["metrics.json"])
    assert metrics["test_samples"] == 10_000  # the whole untouched test set
    assert metrics["test_accuracy"] > 0.5  # chance is 0.1
    history = FIRST_RUN["history.csv"].splitlines()
    assert history[0] == "epoch,loss,accuracy,val_loss,val_accuracy,learning_rate"
    assert len(history) == 2
    train = json.loads(FIRST_RUN["train.json"])
    assert 2900 <= train["train_samples"] <= 3100
    assert train["val_samples"] == 1200 - 1  # 2% of each class (SMALL_RUN), rounded per class


def test_train_and_evaluate_give_each_op_half_the_cores(project: tuple[Path, dict]) -> None:
    threads = default_op_threads()
    assert FIRST_RUN["log"].count(f"TensorFlow: {threads} thread(s) per op") == 2


def test_second_repro_does_nothing(project: tuple[Path, dict]) -> None:
    repo, env = project
    out = dvc("repro", cwd=repo, env=env)
    assert "Running stage" not in out
    assert "up to date" in out


def test_evaluate_params_rerun_only_evaluate(project: tuple[Path, dict]) -> None:
    repo, env = project
    set_params(repo, evaluate__misclassified_grid=3)
    out = dvc("repro", cwd=repo, env=env)
    assert "Running stage 'evaluate'" in out
    for stage in ("download", "preprocess", "train"):
        assert f"Running stage '{stage}'" not in out


@pytest.mark.slow
def test_exp_run_with_overrides_is_listed(project: tuple[Path, dict]) -> None:
    repo, env = project
    commit_all(repo, env, "baseline results")
    exp_run(repo, env, "quick5k", "train.epochs=1", "preprocess.train_samples=5000")
    shown = dvc("exp", "show", "--json", cwd=repo, env=env)
    assert "quick5k" in shown
    data = json.loads(shown)
    exps = [e for rev in data for e in (rev.get("experiments") or []) if e.get("name") == "quick5k"]
    assert exps, shown[:2000]


@pytest.mark.slow
def test_forced_rerun_gives_identical_data_hashes(project: tuple[Path, dict]) -> None:
    import yaml

    repo, env = project

    def data_hashes() -> dict[str, str]:
        lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
        return {o["path"]: o["md5"] for s in ("download", "preprocess") for o in lock[s]["outs"]}

    before = data_hashes()
    out = dvc("repro", "--force", "preprocess", cwd=repo, env=env)
    assert "Running stage 'download'" in out and "Running stage 'preprocess'" in out
    assert data_hashes() == before
