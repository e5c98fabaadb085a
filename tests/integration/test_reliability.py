"""Reproducibility, resume after a kill, and one-line errors from the real stage commands."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from birnn import crash
from birnn.lineage import code_digest, stage_modules
from tests.conftest import REPO, run_module

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def write_params(cwd: Path, **sections: dict) -> None:
    """params.yaml with ``sections`` updated; the LSTMs not unrolled, as in SMALL_RUN."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["unroll"] = False
    for section, values in sections.items():
        params[section].update(values)
    (cwd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def ok(module: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    res = run_module(module, cwd, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """A stage folder with real raw and processed data (2,000 training samples)."""
    cwd = tmp_path_factory.mktemp("prepared")
    write_params(
        cwd,
        preprocess={"train_samples": 2000},
        train={"epochs": 1, "batch_size": 64, "lr_schedule": "constant"},
    )
    ok("birnn.download", cwd, BIRNN_DATA_MIRROR=str(mnist_dir))
    ok("birnn.preprocess", cwd)
    return cwd


def clone_stage_dir(src: Path, dest: Path) -> Path:
    shutil.copytree(src / "data", dest / "data")
    shutil.copy(src / "params.yaml", dest / "params.yaml")
    return dest


def stage_copy(src: Path, dest: Path) -> Path:
    """A whole copy of a stage folder whose MLflow store points at the copy: the store names
    its artifact folder by absolute path (``<folder>/mlruns``), so a plain copy's runs would
    write into ``src``."""
    shutil.copytree(src, dest)
    db = dest / "mlflow.db"
    if db.is_file():
        with contextlib.closing(sqlite3.connect(db)) as conn:
            for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"):
                for column in conn.execute(f'PRAGMA table_info("{table}")').fetchall():
                    if column[2].upper().startswith(("VARCHAR", "TEXT")):
                        conn.execute(
                            f'UPDATE "{table}" SET "{column[1]}" = '
                            f'replace("{column[1]}", ?, ?) WHERE "{column[1]}" LIKE ?',
                            (str(src), str(dest), f"%{src}%"),
                        )
            conn.commit()
    return dest


def evaluated(cwd: Path) -> tuple[str, bytes, bytes]:
    ok("birnn.evaluate", cwd)
    train = json.loads((cwd / "reports/train.json").read_text())
    reports = cwd / "reports"
    return (
        train["weights_sha256"],
        (reports / "metrics.json").read_bytes(),
        (reports / "history.csv").read_bytes(),
    )


@pytest.fixture(scope="module")
def trained(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One training on the prepared data, not evaluated (shared: each test works on a copy)."""
    cwd = clone_stage_dir(prepared, tmp_path_factory.mktemp("trained") / "trained")
    ok("birnn.train", cwd)
    return cwd


def test_training_is_bitwise_reproducible(prepared: Path, trained: Path, tmp_path: Path) -> None:
    first = evaluated(stage_copy(trained, tmp_path / "first"))
    again = clone_stage_dir(prepared, tmp_path / "again")
    ok("birnn.train", again)
    assert evaluated(again) == first


def test_preprocess_output_is_byte_identical(prepared: Path, tmp_path: Path) -> None:
    cwd = clone_stage_dir(prepared, tmp_path / "again")
    before = {p.name: p.read_bytes() for p in (cwd / "data/processed").iterdir()}
    time.sleep(2.1)
    ok("birnn.preprocess", cwd)
    after = {p.name: p.read_bytes() for p in (cwd / "data/processed").iterdir()}
    assert before == after


def kill_after_first_epoch(cwd: Path) -> int:
    """Start the train stage, SIGKILL it once a checkpoint exists; return the epochs done."""
    state = cwd / ".checkpoints/train/state.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "birnn.train"],
        cwd=cwd,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if state.is_file():
            done = json.loads(state.read_text())["epochs_done"]
            if done >= 1:
                break
        time.sleep(0.1)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return done


FOUR_EPOCHS = {
    "preprocess": {"train_samples": 2000},
    "train": {"epochs": 4, "batch_size": 64, "lr_schedule": "constant"},
}


@pytest.fixture(scope="module")
def killed(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A 4-epoch training SIGKILLed once its first epoch was checkpointed: the stage folder
    (checkpoint and MLflow store included) and the epochs it had done. Each test resumes a copy
    of it, so one kill serves them all."""
    cwd = clone_stage_dir(prepared, tmp_path_factory.mktemp("killed") / "killed")
    write_params(cwd, **FOUR_EPOCHS)
    done = kill_after_first_epoch(cwd)
    assert 1 <= done < 4
    return cwd, done


def store(cwd: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")


def runs_of(client: MlflowClient, experiment: str = "birnn-mnist") -> list:
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def test_killed_training_resumes_in_the_same_run(killed, tmp_path: Path) -> None:
    cwd = stage_copy(killed[0], tmp_path / "resume")
    assert not (cwd / "reports/history.csv").exists()

    res = ok("birnn.train", cwd)
    assert "resuming from checkpoint after epoch" in res.stderr
    with (cwd / "reports/history.csv").open() as fh:
        epochs = [int(r["epoch"]) for r in csv.DictReader(fh)]
    assert epochs == [1, 2, 3, 4]
    assert not (cwd / ".checkpoints/train").exists()

    info = json.loads((cwd / "reports/train.json").read_text())
    client = store(cwd)
    assert [r.info.run_id for r in runs_of(client)] == [info["mlflow_run_id"]]
    steps = [m.step for m in client.get_metric_history(info["mlflow_run_id"], "val_accuracy")]
    assert sorted(steps) == [1, 2, 3, 4]
    mlflow.set_tracking_uri(None)


# Dropout masks (seed-generator state), optimizer state, data order, augmentation and the
# early-stopping state all carry over a kill. At this learning rate val_loss soon gets worse,
# and early stopping ends the run: at epoch 3 on the machines of 2026-11 and 12-06, at epoch 6
# on an AVX512 one of 2026-12-07 (its arithmetic differs in the last bits). The tests read the
# epoch from the uninterrupted run.
RESUMED = {
    **FOUR_EPOCHS,
    "train": {**FOUR_EPOCHS["train"], "epochs": 10, "learning_rate": 0.02,
              "early_stopping_patience": 1, "augment_shift": 1},
}  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The run never killed, and the epoch early stopping ended it at."""
    whole = clone_stage_dir(prepared, tmp_path_factory.mktemp("whole") / "whole")
    write_params(whole, **RESUMED)
    ok("birnn.train", whole)
    with (whole / "reports/history.csv").open() as fh:
        stopped_at = len(list(csv.DictReader(fh)))
    assert stopped_at < RESUMED["train"]["epochs"], "early stopping did not end the run"
    return whole, stopped_at


# A SIGKILL at an arbitrary moment is test_killed_training_resumes_in_the_same_run's; these are
# the two windows between the checkpoint's writes, hit exactly, and the window after the epoch
# that early stopping ends with is checkpointed (before, the resume trained on past it).
@pytest.mark.parametrize("kill", ["checkpoint.files:2", "checkpoint.state:2", "checkpoint.state:"])
def test_resumed_training_equals_uninterrupted_with_dropout_and_early_stopping(
    prepared: Path, uninterrupted: tuple[Path, int], tmp_path: Path, kill: str
) -> None:
    # Killed exactly at a kill point of the second epoch's save (or of the last epoch's, the
    # one early stopping ends with), then resumed: it ends bit-for-bit where an uninterrupted
    # run does.
    whole, stopped_at = uninterrupted
    kill = kill if kill[-1].isdigit() else f"{kill}{stopped_at}"
    resumed = clone_stage_dir(prepared, tmp_path / "resumed")
    write_params(resumed, **RESUMED)
    res = run_module("birnn.train", resumed, env={"BIRNN_CRASH_AT": kill})
    assert res.returncode == crash.EXIT_CODE, res.stderr[-2000:]
    assert "resuming from checkpoint" in ok("birnn.train", resumed).stderr
    for name in ("history.csv",):
        assert (whole / "reports" / name).read_bytes() == (resumed / "reports" / name).read_bytes()
    digest = [json.loads((d / "reports/train.json").read_text())["weights_sha256"]
              for d in (whole, resumed)]  # fmt: skip
    assert digest[0] == digest[1]


def test_resume_whose_run_was_deleted_goes_on_in_a_new_run(killed, tmp_path: Path) -> None:
    cwd = stage_copy(killed[0], tmp_path / "deleted")
    client = store(cwd)
    (old,) = runs_of(client)
    client.delete_run(old.info.run_id)  # as the UI's "Delete" does
    res = ok("birnn.train", cwd)
    assert f"run {old.info.run_id} was deleted: the resumed training logs to a new" in res.stderr
    info = json.loads((cwd / "reports/train.json").read_text())
    assert info["mlflow_run_id"] != old.info.run_id
    steps = [m.step for m in client.get_metric_history(info["mlflow_run_id"], "val_accuracy")]
    assert sorted(steps) == [1, 2, 3, 4]  # the checkpointed epochs were back-filled
    mlflow.set_tracking_uri(None)


def test_code_change_after_a_kill_starts_fresh(killed, tmp_path: Path) -> None:
    cwd = stage_copy(killed[0], tmp_path / "codechange")
    src = tmp_path / "src"
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PYTHONPATH": str(src)}  # this copy of the package, not the installed one
    # Until the edit, the copy's code is the killed run's: only the edit can start it fresh.
    assert code_digest(stage_modules("train", src / "birnn"), src / "birnn") == code_digest(
        stage_modules("train")
    )
    model_py = src / "birnn/model.py"
    model_py.write_text(model_py.read_text() + "\n# a change to the network's code\n")
    res = ok("birnn.train", cwd, **env)
    assert "resuming" not in res.stderr
    assert "from other params, data, code or library versions: starting fresh" in res.stderr


def test_evaluate_of_a_deleted_or_foreign_run_starts_a_linked_run(trained, tmp_path: Path):
    cwd = stage_copy(trained, tmp_path / "evalnew")
    client = store(cwd)
    train_id = json.loads((cwd / "reports/train.json").read_text())["mlflow_run_id"]
    # Another experiment between the stages: the training run is not reopened across it.
    res = ok("birnn.evaluate", cwd, MLFLOW_EXPERIMENT_NAME="elsewhere")
    assert "belongs to another experiment" in res.stderr
    (other,) = runs_of(client, "elsewhere")
    assert other.data.tags["birnn.train_run_id"] == train_id
    # Deleted in the UI: a new run in the project's experiment, never a traceback.
    client.delete_run(train_id)
    res = ok("birnn.evaluate", cwd)
    assert f"run {train_id} was deleted" in res.stderr
    (new,) = runs_of(client)
    assert new.info.run_id != train_id and "test_accuracy" in new.data.metrics
    mlflow.set_tracking_uri(None)


def test_changed_params_do_not_reuse_a_checkpoint(prepared: Path, tmp_path: Path) -> None:
    from birnn.checkpoint import Checkpoint, fingerprint
    from birnn.config import params_from_dict

    files = [prepared / "data/processed/train.npz", prepared / "data/processed/val.npz"]
    a = fingerprint(params_from_dict({"train": {}}), files)
    b = fingerprint(params_from_dict({"train": {"learning_rate": 0.002}}), files)
    assert a != b
    ckpt_dir = tmp_path / "ckpt"
    (ckpt_dir / "epoch-0002").mkdir(parents=True)  # the epoch's files, named by the state
    (ckpt_dir / "epoch-0002" / "model.keras").write_bytes(b"x")
    (ckpt_dir / "state.json").write_text(
        json.dumps({"fingerprint": a, "epochs_done": 2, "history": [], "run_id": "r"})
    )
    assert Checkpoint.load(ckpt_dir, a).epochs_done == 2
    assert Checkpoint.load(ckpt_dir, b).epochs_done == 0
    assert not ckpt_dir.exists()


def one_error_line(res: subprocess.CompletedProcess, stage: str) -> str:
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith(f"birnn.{stage}: error: ")]
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ("preprocess", "data/raw/train-images-idx3-ubyte.gz not found: run `dvc repro download`"),
        ("train", "data/processed/train.npz not found: run `dvc repro preprocess` first"),
        ("evaluate", "data/processed/test.npz not found: run `dvc repro preprocess` first"),
    ],
)
def test_stage_before_its_input_says_what_to_run(tmp_path: Path, stage: str, expected: str):
    write_params(tmp_path)
    assert expected in one_error_line(run_module(f"birnn.{stage}", tmp_path), stage)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train:\n  epochs: [1\n", "params.yaml: YAML syntax error at line 3"),
        ("train:\n  epohcs: 1\n", "unknown key 'train.epohcs' (did you mean 'epochs'?)"),
        ("train:\n  batch_size: 0\n", "train.batch_size must be >= 1, got 0"),
        ("model:\n  cell: transformer\n", "model.cell must be one of lstm, gru, simple_rnn"),
        ("", "params.yaml is empty: restore it"),
        ("# all commented out\n", "params.yaml is empty: restore it"),
    ],
)
def test_bad_params_one_line_error(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "params.yaml").write_text(text)
    assert expected in one_error_line(run_module("birnn.preprocess", tmp_path), "preprocess")


def test_corrupt_raw_file_keeps_old_outputs(prepared: Path, tmp_path: Path) -> None:
    cwd = clone_stage_dir(prepared, tmp_path / "corrupt")
    before = {p.name: p.read_bytes() for p in (cwd / "data/processed").iterdir()}
    raw = cwd / "data/raw/train-labels-idx1-ubyte.gz"
    raw.write_bytes(raw.read_bytes()[:1000])
    line = one_error_line(run_module("birnn.preprocess", cwd), "preprocess")
    assert "train-labels-idx1-ubyte.gz" in line
    assert {p.name: p.read_bytes() for p in (cwd / "data/processed").iterdir()} == before


def test_kill_while_writing_keeps_old_output_whole(prepared: Path, tmp_path: Path) -> None:
    cwd = clone_stage_dir(prepared, tmp_path / "killwrite")
    write_params(cwd, preprocess={"train_samples": None})  # the whole set: a longer write
    target = cwd / "data/processed/train.npz"
    before = target.read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-m", "birnn.preprocess"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.name.startswith(".tmp-") for p in target.parent.iterdir()):
            break
        time.sleep(0.005)
    assert proc.poll() is None, "preprocess finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.read_bytes() == before
    # The next run sweeps the killed run's temp file away and writes a whole new output.
    ok("birnn.preprocess", cwd)
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".tmp-")]
    assert len(target.read_bytes()) > len(before)


@pytest.mark.parametrize(
    ("store_uri", "expected"),
    [
        ("corrupt", "cannot be used: (sqlite3.DatabaseError) file is not a database"),
        # A driver the project does not install (PostgreSQL's is: see the team stack).
        ("mysql+pymysql://u:p@127.0.0.1:9/db", "needs the Python package 'pymysql'"),
    ],
)
def test_unusable_store_is_one_line(prepared: Path, tmp_path: Path, store_uri, expected) -> None:
    cwd = clone_stage_dir(prepared, tmp_path / "store")
    env = {}
    if store_uri == "corrupt":
        (cwd / "mlflow.db").write_bytes(os.urandom(4096))  # any non-sqlite bytes
        before = (cwd / "mlflow.db").read_bytes()
    else:
        assert importlib.util.find_spec("pymysql") is None
        env["MLFLOW_TRACKING_URI"] = store_uri
    for stage in ("train", "evaluate"):
        line = one_error_line(run_module(f"birnn.{stage}", cwd, env=env), stage)
        assert expected in line, line
    if store_uri == "corrupt":
        assert (cwd / "mlflow.db").read_bytes() == before  # nothing touched, nothing lost
