"""MLflow tracking against a real `mlflow server` on loopback, driven by real `dvc` runs."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from birnn.config import Params, flatten
from tests.conftest import run_module
from tests.helpers.mlflow_server import free_port, mlflow_server
from tests.helpers.pipeline import exp_run, git
from tests.integration.conftest import EPOCHS, NAME

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            out |= artifact_paths(client, run_id, item.path)
        else:
            out.add(item.path)
    return out


def test_run_has_all_params(tracked) -> None:
    repo, _, _, run = tracked
    params = yaml.safe_load((repo / "params.yaml").read_text())
    from birnn.config import params_from_dict

    expected = flatten(params_from_dict(params))
    assert set(expected) <= set(run.data.params)
    assert set(flatten(Params())) <= set(run.data.params)
    assert run.data.params["train.epochs"] == str(EPOCHS)
    assert run.data.params["model.units"] == "[50, 50]"
    assert int(run.data.params["data.train_samples"]) == pytest.approx(3000, abs=100)
    assert run.data.params["data.val_samples"] == "1199"  # 2% (SMALL_RUN)
    assert run.info.status == "FINISHED"


def test_per_epoch_and_final_metrics(tracked) -> None:
    _, _, client, run = tracked
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_time_s"):
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1)), key
    final = run.data.metrics
    for key in ("test_loss", "test_accuracy", "macro_f1", "train_wall_time_s",
                "train_samples_per_s", *[f"test_f1_class_{c}" for c in range(10)]):  # fmt: skip
        assert key in final, key
    assert final["test_accuracy"] > 0.6


def test_artifacts(tracked) -> None:
    _, _, client, run = tracked
    arts = artifact_paths(client, run.info.run_id)
    for a in (
        "figures/loss.png",
        "figures/accuracy.png",
        "figures/confusion_matrix.png",
        "figures/misclassified.png",
        "reports/history.csv",
        "reports/metrics.json",
        "reports/params.yaml",
        "model_summary.txt",
    ):
        assert a in arts, (a, sorted(arts))


def lock_entries(repo: Path, env: dict) -> dict[tuple[str, str], str]:
    """(stage, path) -> md5 for every dep and out in the dvc.lock the fixture committed (another
    test's `dvc exp run`, in any order, may have changed the workspace's since)."""
    lock = yaml.safe_load(git("show", "HEAD:dvc.lock", cwd=repo, env=env))["stages"]
    return {
        (stage, e["path"]): e["md5"]
        for stage, entry in lock.items()
        for e in [*entry.get("deps", []), *entry.get("outs", [])]
    }


def dvc_tags(run) -> dict[tuple[str, str], str]:
    out = {}
    for key, value in run.data.tags.items():
        if key.startswith("dvc.") and key.endswith(".md5"):
            stage, path = key[len("dvc.") : -len(".md5")].split(".", 1)
            out[(stage, path)] = value
    return out


def test_lineage_tags_match_the_final_dvc_lock(tracked) -> None:
    repo, env, _, run = tracked
    tags = run.data.tags
    # The commit the run started from (the fixture then committed its results on top).
    assert tags["git.commit"] == git("rev-parse", "HEAD~1", cwd=repo, env=env).strip()
    assert tags["git.dirty"] == "false"  # only pipeline outputs changed since the commit
    lock, tagged = lock_entries(repo, env), dvc_tags(run)
    # What train read and wrote, and what evaluate read and wrote (both log into this run).
    for key in [
        ("train", "data/processed/train.npz"),
        ("train", "data/processed/val.npz"),
        ("train", "models/model.keras"),
        ("train", "reports/history.csv"),
        ("train", "reports/train.json"),
        ("evaluate", "data/processed/test.npz"),
        ("evaluate", "models/model.keras"),
        ("evaluate", "reports/metrics.json"),
        ("evaluate", "reports/figures"),
    ]:
        assert key in tagged, (key, sorted(tagged))
    for key, md5 in tagged.items():
        assert lock.get(key) == md5, key
    for key in ("tensorflow.version", "keras.version", "host.cpu_count", "weights_sha256"):
        assert tags[key], key


def test_datasets_name_the_dvc_tracked_files(tracked) -> None:
    repo, env, _, run = tracked
    lock = lock_entries(repo, env)
    seen = {}
    for inp in run.inputs.dataset_inputs:
        context = next(t.value for t in inp.tags if t.key == "mlflow.data.context")
        seen[context] = (inp.dataset.name, inp.dataset.digest)
    assert seen == {
        "train": ("data/processed/train.npz", lock[("train", "data/processed/train.npz")]),
        "validation": ("data/processed/val.npz", lock[("train", "data/processed/val.npz")]),
        "testing": ("data/processed/test.npz", lock[("evaluate", "data/processed/test.npz")]),
    }


def test_evaluate_again_makes_one_linked_run_and_no_second_version(tracked) -> None:
    repo, env, client, first = tracked
    experiment = first.info.experiment_id
    runs_before = {r.info.run_id for r in client.search_runs([experiment])}
    versions_before = client.search_model_versions(f"name='{NAME}'")
    metrics_before = dict(first.data.metrics)
    models_before = len(first.outputs.model_outputs)

    out = exp_run(repo, env, "grid4", "evaluate.misclassified_grid=4")
    assert "Running stage 'evaluate'" in out and "Running stage 'train'" not in out

    again = client.get_run(first.info.run_id)
    assert again.data.metrics == metrics_before
    assert len(again.outputs.model_outputs) == models_before
    assert again.data.params["evaluate.misclassified_grid"] == "5"
    (new_id,) = {r.info.run_id for r in client.search_runs([experiment])} - runs_before
    new = client.get_run(new_id)
    assert new.data.tags["birnn.train_run_id"] == first.info.run_id
    assert new.data.params["evaluate.misclassified_grid"] == "4"
    assert new.data.params["data.train_samples"] == first.data.params["data.train_samples"]
    assert new.data.metrics["test_accuracy"] == metrics_before["test_accuracy"]
    assert len(client.search_model_versions(f"name='{NAME}'")) == len(versions_before)
    assert new.data.tags["registry.note"].startswith("same weights as version")
    assert not new.outputs.model_outputs


def test_evaluate_in_a_store_without_the_run_starts_a_named_run(tracked, tmp_path: Path):
    # A fresh clone with a pulled DVC cache has the model but not the training run.
    repo, env, _, _ = tracked
    other = f"sqlite:///{tmp_path / 'other.db'}"
    res = run_module("birnn.evaluate", repo, env={**env, "MLFLOW_TRACKING_URI": other})
    assert res.returncode == 0, res.stderr[-3000:]
    client = MlflowClient(tracking_uri=other, registry_uri=other)
    (new,) = client.search_runs([client.get_experiment_by_name("birnn-mnist").experiment_id])
    from birnn.files import file_sha256

    sha = file_sha256(repo / "models/model.keras")
    assert new.data.tags["model.sha256"] == sha
    assert new.info.run_name == f"model-{sha[:12]}-eval"
    # The workspace holds the last experiment's model and train.json (dvc exp run applies it).
    trained_in = json.loads((repo / "reports/train.json").read_text())["mlflow_run_id"]
    assert new.data.tags["birnn.train_run_id"] == trained_in
    assert "test_accuracy" in new.data.metrics
    # Registered there, and nothing else: only `birnn promote` makes a champion.
    (version,) = client.search_model_versions(f"name='{NAME}'")
    assert version.run_id == new.info.run_id and not version.aliases
    mlflow.set_tracking_uri(None)


def test_unreachable_server_fails_before_training(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 1\n")
    dead = f"http://127.0.0.1:{free_port()}"
    res = run_module("birnn.train", tmp_path, env={"MLFLOW_TRACKING_URI": dead})
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("birnn.train: error")]
    assert len(lines) == 1, res.stderr
    assert f"MLflow tracking server {dead} is unreachable" in lines[0]
    assert "Traceback" not in res.stderr
    assert "Epoch" not in res.stdout
    assert not (tmp_path / "models").exists()


def test_a_dead_tracking_server_stalls_a_logging_call_at_most_30_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MLflow's own client retried a killed server for minutes (532 s seen in training); the
    # limits `tracking.connect` sets make one call give up within ~30 s, with an error.
    import contextlib
    import os
    import signal
    import time

    from birnn import tracking
    from birnn.config import params_from_dict

    monkeypatch.chdir(tmp_path)
    for key in tracking.HTTP_LIMITS:
        # setenv first, so that the limits connect() sets are undone after the test too.
        monkeypatch.setenv(key, "unset")
        monkeypatch.delenv(key)
    started: list = []
    (tmp_path / "server").mkdir()
    with mlflow_server(tmp_path / "server", started=started) as uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        params = params_from_dict({})
        tracking.connect(params)
        assert {k: os.environ[k] for k in tracking.HTTP_LIMITS} == tracking.HTTP_LIMITS
        tracking.start_run(params, run_name="dies")
        tracking.log_metrics({"loss": 1.0}, step=1)
        os.killpg(started[0].pid, signal.SIGKILL)  # kill -9, as in the incident
        started[0].wait()
        t0 = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017 - MLflow's or requests' own error
            tracking.log_metrics({"loss": 0.5}, step=2)
        took = time.monotonic() - t0
        with contextlib.suppress(Exception):  # ending the run needs the server too
            mlflow.end_run()
    assert took < 30, f"a logging call stalled {took:.0f} s on a dead server"
