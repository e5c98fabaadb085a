"""``birnn promote`` on real ``dvc repro`` results in temp git repos: the flows a team takes
(edit, repro, commit, promote; an experiment applied and committed; a retrain on a clean main),
idempotence, rollback and history, another dataset's model, and two promotes at once against a
real ``mlflow server``. Pulling a model from the team stack's S3 is in test_team_stack.py; the
promote job on a push to main is rehearsed in test_workflow_rehearsal.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from birnn import registry
from birnn.revision import lock_model_md5
from tests.conftest import REPO
from tests.helpers.mlflow_server import mlflow_server
from tests.helpers.pipeline import (
    commit_all,
    dvc,
    env_for,
    exp_run,
    git,
    make_project,
    raw_test,
    set_params,
    stage_predictions,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NAME = "birnn-mnist"
SMALL = {"preprocess__train_samples": 1000, "train__epochs": 1, "evaluate__min_test_accuracy": 0.2}


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> tuple[Path, dict]:
    """A project whose `dvc repro` ran on a clean main (as CI's weekly job does) and whose
    results are committed; its MLflow store is the project's own ``mlflow.db``."""
    env = env_for(mnist_dir)
    repo = make_project(tmp_path_factory.mktemp("promote") / "repo", env, **SMALL)
    dvc("repro", cwd=repo, env=env)
    commit_all(repo, env, "model A")
    return repo, env


def clone(committed: tuple[Path, dict], dest: Path) -> tuple[Path, dict]:
    """A clone of the committed project with its own copy of the MLflow store, sharing the DVC
    cache (so each test starts from the same registry and nothing is trained twice)."""
    origin, env = committed
    git("clone", "-q", str(origin), str(dest), cwd=dest.parent, env=env)
    git("config", "user.email", "ci@example.org", cwd=dest, env=env)
    git("config", "user.name", "ci", cwd=dest, env=env)
    dvc("cache", "dir", "--local", str(origin / ".dvc" / "cache"), cwd=dest, env=env)
    dvc("checkout", "-q", cwd=dest, env=env)
    shutil.copy(origin / "mlflow.db", dest / "mlflow.db")
    return dest, env


def promote(repo: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "birnn", "promote", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def ok(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    (line,) = res.stdout.splitlines()  # every outcome is one line
    return line


def store(repo: Path) -> MlflowClient:
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def champion(client: MlflowClient, name: str = NAME) -> str | None:
    v = registry.alias(client, name, registry.CHAMPION)
    return None if v is None else str(v.version)


def head(repo: Path, env: dict) -> str:
    return git("rev-parse", "HEAD", cwd=repo, env=env).strip()


def test_repro_registers_and_promote_follows_the_committed_dvc_lock(committed, tmp_path) -> None:
    repo, env = clone(committed, tmp_path / "repo")
    client = store(repo)
    # The retrain on a clean main registered its model and moved nothing.
    (v1,) = registry.versions(client, NAME)
    assert v1.tags["git.commit"] == git("rev-parse", "HEAD~1", cwd=repo, env=env).strip()
    lock_md5 = lock_model_md5((repo / "dvc.lock").read_text())
    assert v1.tags[registry.MODEL_MD5] == lock_md5
    assert champion(client) is None
    res = subprocess.run(
        [sys.executable, "-m", "birnn", "predict", "reports/figures/loss.png"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        f"birnn predict: error: {NAME} has no champion yet: run `birnn promote` (it makes the "
        "model of the committed dvc.lock champion), or name a model with --model"
    )

    sha = head(repo, env)
    line = ok(promote(repo, env))
    assert line.startswith(f"birnn promote: promoted {NAME} version 1 ({sha[:7]}): test_accuracy")
    assert line.endswith("there was no champion")
    assert champion(client) == "1"
    assert ok(promote(repo, env)) == (
        f"birnn promote: nothing to do: {NAME} version 1 ({sha[:7]}) is already champion"
    )

    # Edit params and repro: a new version, the champion stays; uncommitted, it is not main's.
    set_params(repo, preprocess__train_samples=3000, train__epochs=2)
    dvc("repro", cwd=repo, env=env)
    assert [str(v.version) for v in registry.versions(client, NAME)] == ["1", "2"]
    assert champion(client) == "1"
    res = promote(repo, env)
    assert "nothing to do" in ok(res) and "dvc.lock has uncommitted changes" in res.stderr
    dry = ok(promote(repo, env, "--workspace", "--dry-run"))
    assert dry.startswith(f"birnn promote: (dry run) would promote {NAME} version 2")
    assert champion(client) == "1"

    # Commit, then promote: the better model takes the alias, with its audit record.
    commit_all(repo, env, "more data, two epochs")
    sha2 = head(repo, env)
    line = ok(promote(repo, env))
    assert line.startswith(f"birnn promote: promoted {NAME} version 2 ({sha2[:7]}): test_accuracy")
    assert "beats version 1's" in line
    assert (champion(client), str(registry.alias(client, NAME, "previous").version)) == ("2", "1")
    tags = client.get_model_version(NAME, "2").tags
    assert tags["promoted_commit"] == sha2 and tags["promoted_previous"] == "1"
    assert tags["promoted_reason"] in line and tags["promoted_at"].endswith("Z")

    # Roll back: version 1 again, version 2 blocked until forced.
    line = ok(promote(repo, env, "--rollback"))
    assert line.startswith(f"birnn promote: rolled {NAME} back to version 1")
    assert champion(client) == "1"
    assert registry.alias(client, NAME, "previous") is None  # not offered again
    again = promote(repo, env, "--rollback")
    assert again.returncode == 1 and "no previous champion to roll back to" in again.stdout
    refused = promote(repo, env)
    assert refused.returncode == 1
    assert refused.stdout.startswith(f"birnn promote: refused {NAME} version 2 ({sha2[:7]}): it")
    assert "rolled back at" in refused.stdout and "--force" in refused.stdout
    assert champion(client) == "1"
    assert "--force over version 1" in ok(promote(repo, env, "--force"))
    assert champion(client) == "2"

    history = ok_lines(promote(repo, env, "--history"))
    assert [(h.split()[1], h.split()[3]) for h in history] == [
        ("promote", "1"),
        ("promote", "2"),
        ("rollback", "1"),
        ("promote", "2"),
    ]
    assert f"commit {sha2[:7]}" in history[1] and "(was 1)" in history[1]


def ok_lines(res: subprocess.CompletedProcess) -> list[str]:
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    return res.stdout.splitlines()


def test_an_experiment_applied_committed_and_merged_becomes_champion(committed, tmp_path) -> None:
    repo, env = clone(committed, tmp_path / "repo")
    client = store(repo)
    ok(promote(repo, env))
    exp_run(repo, env, "wider", "preprocess.train_samples=2000", "train.epochs=2")
    newest = registry.versions(client, NAME)[-1]
    assert (str(newest.version), newest.tags["dvc.exp_name"]) == ("2", "wider")
    assert champion(client) == "1"  # an experiment only registers

    # Adopted as a pull request would be: on a branch first, where promote moves nothing ...
    git("checkout", "-q", "-b", "adopt-wider", cwd=repo, env=env)
    dvc("exp", "apply", "wider", cwd=repo, env=env)
    commit_all(repo, env, "adopt experiment wider")
    git("checkout", "-q", "main", cwd=repo, env=env)
    assert "nothing to do" in ok(promote(repo, env))  # main still names model A
    # ... then merged into main, whose push runs promote.
    git("merge", "-q", "--ff-only", "adopt-wider", cwd=repo, env=env)
    line = ok(promote(repo, env))
    assert line.startswith(f"birnn promote: promoted {NAME} version 2 ({head(repo, env)[:7]})")
    assert champion(client) == "2"
    assert len(registry.versions(client, NAME)) == 2  # found by its md5, not registered again


def test_a_model_no_store_has_seen_is_registered_and_other_datasets_never_compete(
    committed, tmp_path
) -> None:
    repo, env = clone(committed, tmp_path / "repo")
    client = store(repo)
    ok(promote(repo, env))
    # A revision that names another dataset (same files, another params.yaml): its model is
    # registered under that dataset's name, and the MNIST champion does not move.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["dataset"] = "fashion_mnist"
    params["registry"]["promote"] = "auto"  # a key removed since: older revisions have it
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit_all(repo, env, "fashion")
    (repo / "models" / "model.keras").unlink()  # from the DVC cache, then
    sha = head(repo, env)
    line = ok(promote(repo, env))
    fashion = "birnn-fashion-mnist"
    assert line.startswith(f"birnn promote: promoted {fashion} version 1 ({sha[:7]})")
    assert champion(client) == "1" and champion(client, fashion) == "1"
    version = client.get_model_version(fashion, "1")
    train_run = yaml.safe_load((repo / "reports/train.json").read_text())["mlflow_run_id"]
    assert version.tags["birnn.registered_by"] == "birnn promote"
    assert version.tags["birnn.train_run_id"] == train_run
    assert version.tags["git.commit"] == sha
    assert version.tags[registry.MODEL_MD5] == lock_model_md5((repo / "dvc.lock").read_text())
    run = client.get_run(version.run_id)
    assert run.info.run_name == f"promote-{sha[:7]}" and run.info.status == "FINISHED"
    metrics = yaml.safe_load((repo / "reports/metrics.json").read_text())
    assert run.data.metrics["test_accuracy"] == metrics["test_accuracy"]
    assert run.data.params["data.dataset"] == "fashion_mnist"
    # The registered model is the committed one, and it loads and predicts like evaluate did.
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{fashion}/1")
    finally:
        mlflow.set_tracking_uri(None)
    x, _ = raw_test(repo)
    probs = np.asarray(model.predict(x[:200].astype(np.float32)))
    np.testing.assert_array_equal(probs.argmax(axis=1), stage_predictions(repo)[:200])
    # An earlier revision is named by --rev; bad revisions are one line.
    assert "nothing to do" in ok(promote(repo, env, "--rev", "HEAD~1"))
    bad = promote(repo, env, "--rev", "no-such-rev")
    assert (bad.returncode, bad.stderr.strip().splitlines()[-1]) == (
        1,
        "birnn promote: error: unknown revision 'no-such-rev'",
    )


def test_two_promotes_at_once_against_a_server_agree(committed, tmp_path) -> None:
    repo, env = clone(committed, tmp_path / "repo")
    (tmp_path / "server").mkdir()
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    with mlflow_server(tmp_path / "server") as uri:
        # A server that has never seen the model: both processes register it, and neither
        # looks for a duplicate before both have (tests/helpers/promote_race.py).
        both = {**env, "MLFLOW_TRACKING_URI": uri}
        cmd = [sys.executable, "-m", "tests.helpers.promote_race", str(barrier)]
        procs = [
            # In the clone (promote reads git and DVC from its cwd), this checkout importable.
            subprocess.Popen(cmd, cwd=repo, env={**both, "PYTHONPATH": str(REPO)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]  # fmt: skip
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        assert len(list(barrier.glob("registered-*"))) == 2  # both did register
        client = MlflowClient(uri)
        (kept,) = registry.versions(client, NAME)  # the duplicate is gone
        assert str(kept.version) == "1" and champion(client) == "1"
        lines = [out.strip() for out, _ in outs]
        assert all(
            line.startswith(f"birnn promote: promoted {NAME} version 1 ")
            or line.startswith(f"birnn promote: nothing to do: {NAME} version 1 ")
            for line in lines
        ), lines
        assert "nothing to do" in ok(promote(repo, both))


@pytest.mark.parametrize(
    "point", ["registry.audit-tags", "registry.previous-alias", "registry.champion-alias"]
)
def test_a_promote_killed_at_any_point_keeps_a_scored_champion_and_the_rerun_finishes(
    committed, tmp_path: Path, point: str
) -> None:
    from birnn import crash
    from tests.helpers.registry import evaluated_version

    repo, env = clone(committed, tmp_path / "repo")
    client = store(repo)
    # A worse champion in place (set by hand), so the move has a `previous` to write too.
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    try:
        decoy = evaluated_version(client, 0.05, "decoy-weights")
    finally:
        mlflow.set_tracking_uri(None)
    client.set_registered_model_alias(NAME, registry.CHAMPION, decoy.version)
    target = "1"  # what the committed dvc.lock names

    res = promote(repo, {**env, "BIRNN_CRASH_AT": point})
    assert res.returncode == crash.EXIT_CODE, res.stdout + res.stderr[-2000:]
    champ = registry.alias(client, NAME, registry.CHAMPION)
    # Killed mid-move: the champion is the old one or the new one, scored either way, and the
    # new one only with the audit tags of its move.
    moved = point == "registry.champion-alias"
    assert str(champ.version) == (target if moved else str(decoy.version))
    assert registry.score_of(client, champ, "test_accuracy") is not None
    if moved:
        assert champ.tags["promoted_previous"] == str(decoy.version)

    line = ok(promote(repo, env))
    assert line.startswith(f"birnn promote: promoted {NAME} version {target}") or (
        "nothing to do" in line
    ), line
    assert champion(client) == target
    assert str(registry.alias(client, NAME, registry.PREVIOUS).version) == str(decoy.version)
    moves = [(m["version"], m["previous"]) for m in registry.history(client, NAME)]
    assert moves == [(target, str(decoy.version))]  # recorded once
