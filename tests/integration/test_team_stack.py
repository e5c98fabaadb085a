"""The team stack on real servers (PostgreSQL, SeaweedFS S3, `mlflow server`) on loopback:
two users sharing data, models and runs; two pipelines at once; and each server failing."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from pytest_httpserver import HTTPServer

from birnn import crash
from birnn.revision import lock_model_md5
from birnn.stack import Stack
from birnn.stack.state import SERVICES
from tests.helpers.pipeline import (
    commit_all,
    dvc,
    git,
    raw_test,
    sh,
    stage_predictions,
    team_project,
)
from tests.integration.conftest import NAME

log = logging.getLogger(__name__)

# The `stack` fixture (tests/integration/conftest.py) skips, saying why, where PostgreSQL's
# binaries or SeaweedFS's `weed` are absent.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHAMPION = f"models:/{NAME}@champion"


@pytest.fixture()
def on_stack(stack: Stack) -> Iterator[MlflowClient]:
    mlflow.set_tracking_uri(stack.mlflow_uri())
    yield MlflowClient(stack.mlflow_uri())
    mlflow.set_tracking_uri(None)


def run(args: list[str], cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def dvc_run(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd, env)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "error" in line.lower()]


def remote_objects(stack: Stack) -> int:
    pages = stack.s3_client().get_paginator("list_objects_v2")
    return sum(p.get("KeyCount", 0) for p in pages.paginate(Bucket="birnn", Prefix="dvc/"))


# ---------------------------------------------------------------------------------------------
# Two users: A runs and pushes, B pulls and uses the champion from the shared server.


@pytest.fixture(scope="module")
def published(stack: Stack, tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> dict:
    """User A's run, pushed to the DVC remote and to a bare git origin's main. On the way the S3
    store stops with the push half done, and a rerun pushes the rest (what was seen is kept)."""
    root = tmp_path_factory.mktemp("published")
    repo_a, env = team_project(stack, root / "a", mnist_dir)
    t0 = time.monotonic()
    dvc("repro", cwd=repo_a, env=env)
    log.warning("user A: dvc repro against the stack in %.1fs", time.monotonic() - t0)

    dvc("push", "download", cwd=repo_a, env=env)
    first = remote_objects(stack)
    stack.stop("s3")
    failed = dvc_run("push", cwd=repo_a, env=env)
    stack.start("s3")
    t0 = time.monotonic()
    pushed = dvc("push", cwd=repo_a, env=env)
    log.warning("user A: rerun push in %.1fs: %s", time.monotonic() - t0, pushed.strip())

    origin = root / "origin.git"
    git("init", "-q", "--bare", "-b", "main", str(origin), cwd=root, env=env)
    commit_all(repo_a, env, "Retrained")
    git("push", "-q", str(origin), "main", cwd=repo_a, env=env)
    return {"origin": origin, "env": env, "repo_a": repo_a, "first": first, "failed": failed,
            "pushed": pushed, "remote_objects": remote_objects(stack)}  # fmt: skip


def test_no_secret_is_on_any_command_line_or_readable_by_others(stack: Stack) -> None:
    # Any local user's `ps` reads command lines: the stack's passwords and keys go by
    # environment or private files (0600), never by argument.
    import psutil

    st = stack.state()
    secrets = {"PostgreSQL password": st.pg_password, "S3 secret key": st.s3_secret_key}
    seen = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        seen += [f"{name} in pid {proc.info['pid']}: {line[:80]}"
                 for name, value in secrets.items() if value in line]  # fmt: skip
    assert seen == []
    for private in (stack.state_file, stack.env_file, stack.root / "s3-identities.json"):
        assert private.stat().st_mode & 0o077 == 0, f"{private} is readable by others"


def test_an_up_killed_before_recording_a_pid_is_finished_by_the_next_up(stack: Stack) -> None:
    # Kill point stack.spawned: `up` dies right after starting S3 (the second service), before
    # its pid is saved. The next `up` stops that unrecorded process (found by the stack's
    # marker, not by name or port) and starts S3 and MLflow; `down` leaves nothing running.
    # (The shared `stack` fixture only skips where the binaries are absent: this is another.)
    import psutil

    base = Path(tempfile.mkdtemp(prefix="birnn-stack-"))
    base.chmod(0o755)  # PostgreSQL runs as `nobody` under root: it must enter the folder
    other = Stack(base / "stack")
    env = {**os.environ, "BIRNN_CRASH_AT": "stack.spawned:2"}
    try:
        res = run([sys.executable, "-m", "birnn.stack", "--dir", str(other.root), "up"],
                  base, env, timeout=300)  # fmt: skip
        assert res.returncode == crash.EXIT_CODE, res.stderr[-2000:]
        assert other.pid("postgres") is not None and other.pid("s3") is None
        stray = other.orphans("s3")
        assert stray and all(psutil.pid_exists(g) for g in stray)
        assert set(other.up()) == {"s3", "mlflow"}
        assert other.orphans("s3") == [], "the unrecorded S3 still runs"
        assert all(info["answers"] for info in other.status().values())
        assert stack.answers("s3") and stack.answers("mlflow")  # the shared stack untouched
        assert sorted(other.down()) == sorted(SERVICES)
        assert all(not other.orphans(s) and other.pid(s) is None for s in SERVICES)
    finally:
        other.down()
        shutil.rmtree(base, ignore_errors=True)


def test_a_port_taken_between_pick_and_bind_starts_a_new_stack_on_other_ports(
    stack: Stack,
) -> None:
    # Two stacks starting at once (two test workers did) can both be handed one free port;
    # any process's outgoing connection can take one too. Here the stack's state names an
    # MLflow port that is already listening, as a first `up` leaves it when that happens, or
    # when it is killed after stopping what it started and before saving new ports: MLflow
    # exits, and `up` stops PostgreSQL and S3 and starts all three on new ports. A stack that
    # was up once (`up_once` in its state) keeps its ports: its users point at them.
    import socket
    from dataclasses import replace

    from birnn.stack.state import StackError, State

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    base = Path(tempfile.mkdtemp(prefix="birnn-stack-"))
    base.chmod(0o755)  # PostgreSQL runs as `nobody` under root: it must enter the folder
    other = Stack(base / "stack")
    other.root.mkdir()
    first = State.new()
    other.save(replace(first, ports=replace(first.ports, mlflow=port)))
    try:
        assert set(other.up()) == set(SERVICES)
        ports = other.state().ports
        assert ports.mlflow != port and ports != first.ports
        assert all(info["answers"] for info in other.status().values())
        assert "Address already in use" in (other.logs / "mlflow.log").read_text()
        assert stack.answers("mlflow")  # the shared stack untouched
        # Up once: its ports stay, taken or not (stack.env gone or not).
        assert other.state().up_once
        other.env_file.unlink()
        other.stop("mlflow")
        taken.close()
        taken = socket.socket()
        # MLflow's connections may linger in TIME_WAIT; a listening socket still keeps it out.
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", ports.mlflow))
        taken.listen()
        with pytest.raises(StackError, match="mlflow"):
            other.up()
        assert other.state().ports == ports
    finally:
        taken.close()
        other.down()
        shutil.rmtree(base, ignore_errors=True)


def test_s3_stopped_mid_push_fails_in_one_line_and_the_rerun_pushes_the_rest(
    published: dict,
) -> None:
    assert published["first"] == 5  # the four raw MNIST files and data/raw's listing
    failed = published["failed"]
    assert failed.returncode != 0
    assert "Could not connect to the endpoint URL" in failed.stderr, failed.stderr
    assert len(error_lines(failed.stderr)) == 1 and "Traceback" not in failed.stderr
    log.warning("dvc push with S3 stopped printed: %s", error_lines(failed.stderr))
    count = re.search(r"(\d+) files? pushed", published["pushed"])
    assert count, published["pushed"]
    assert int(count[1]) == published["remote_objects"] - published["first"]  # only the rest
    assert "in sync" in dvc("status", "-c", cwd=published["repo_a"], env=published["env"])


def test_two_users_share_data_model_and_runs_through_the_stack(
    stack: Stack, on_stack: MlflowClient, published: dict, tmp_path: Path
) -> None:
    origin, env = published["origin"], published["env"]
    # User B: a fresh clone with no data. The raw data alone first (no public mirror needed).
    repo_b = tmp_path / "b"
    git("clone", "-q", str(origin), str(repo_b), cwd=tmp_path, env=env)
    stack.configure_dvc_remote(repo_b)
    t0 = time.monotonic()
    dvc("pull", "download", cwd=repo_b, env=env)
    assert len(list((repo_b / "data/raw").glob("*.gz"))) == 4
    assert not (repo_b / "data/processed").exists()
    dvc("pull", cwd=repo_b, env=env)
    log.warning("user B: dvc pull (all outputs) in %.1fs", time.monotonic() - t0)
    assert "up to date" in dvc("status", cwd=repo_b, env=env)
    repro = dvc("repro", cwd=repo_b, env=env)
    assert "Running stage" not in repro, repro

    # B promotes main's model: A's evaluation registered it on the server, so it is found there
    # (not registered again), and it is B's champion, its artifacts served from S3.
    run_id = json.loads((repo_b / "reports/train.json").read_text())["mlflow_run_id"]
    versions = len(on_stack.search_model_versions(f"name='{NAME}'"))
    out = sh([sys.executable, "-m", "birnn", "promote"], repo_b, env)
    assert f"birnn promote: promoted {NAME} version" in out, out
    assert len(on_stack.search_model_versions(f"name='{NAME}'")) == versions
    champion = on_stack.get_model_version_by_alias(NAME, "champion")
    assert champion.run_id == run_id
    x, _ = raw_test(repo_b)
    predicted = np.asarray(mlflow.pyfunc.load_model(CHAMPION).predict(x.astype(np.float32)))
    np.testing.assert_array_equal(predicted.argmax(axis=1), stage_predictions(repo_b))
    pages = stack.s3_client().get_paginator("list_objects_v2").paginate(Bucket="birnn")
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    mlmodels = [key for key in keys if key.endswith("/MLmodel")]
    # MLflow 3 keeps a logged model under mlflow/<experiment>/models/<model id>/artifacts/.
    model_ids = [key.split("/")[3] for key in mlmodels if key.split("/")[2] == "models"]
    sources = {on_stack.get_logged_model(m).source_run_id for m in model_ids}
    assert run_id in sources, (run_id, mlmodels)
    assert (
        on_stack.get_run(run_id).data.tags["git.commit"]
        == git("rev-parse", "HEAD~1", cwd=repo_b, env=env).strip()
    )


def test_promote_fetches_a_model_no_cache_holds_from_the_stacks_s3(
    stack: Stack, published: dict, tmp_path: Path
) -> None:
    """A registry that never saw main's model, on a clone with no DVC cache: `birnn promote`
    fetches the model from the remote and registers it with main's metrics."""
    origin, env = published["origin"], published["env"]
    repo = tmp_path / "c"
    git("clone", "-q", str(origin), str(repo), cwd=tmp_path, env=env)
    stack.configure_dvc_remote(repo)
    md5 = lock_model_md5((repo / "dvc.lock").read_text())
    cached = repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    assert not cached.exists() and not (repo / "models").exists()
    own = f"sqlite:///{tmp_path / 'own.db'}"
    out = sh([sys.executable, "-m", "birnn", "promote"], repo, {**env, "MLFLOW_TRACKING_URI": own})
    head = git("rev-parse", "HEAD", cwd=repo, env=env).strip()
    assert f"birnn promote: promoted {NAME} version 1 ({head[:7]})" in out, out
    assert cached.is_file() and not (repo / "models").exists()  # fetched, not checked out
    version = MlflowClient(tracking_uri=own, registry_uri=own).get_model_version(NAME, "1")
    assert version.tags["model_md5"] == md5
    assert version.tags["birnn.registered_by"] == "birnn promote"
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert float(version.tags["test_accuracy"]) == pytest.approx(metrics["test_accuracy"])


# ---------------------------------------------------------------------------------------------
# CI's scripts against the real remote: a bare git origin, the DVC remote on the loopback S3
# server, and a stand-in only for the GitHub API.


def ci_env(stack: Stack, env: dict, **extra: str) -> dict:
    """What the retrain workflow's jobs have: the S3 secrets, the venv's Python."""
    s3 = stack.s3_env()
    return {**env, "PYTHON": sys.executable, "DVC_REMOTE_URL": "s3://birnn/dvc",
            "DVC_REMOTE_ENDPOINT_URL": stack.s3_endpoint(),
            "AWS_ACCESS_KEY_ID": s3["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": s3["AWS_SECRET_ACCESS_KEY"], **extra}  # fmt: skip


def ci_checkout(
    origin: Path, dest: Path, env: dict, branch: str = "main", pull: bool = True
) -> Path:
    """A job's checkout: clone, the remote from the secrets (scripts/ci/dvc_remote.sh), pull."""
    git("clone", "-q", "-b", branch, str(origin), str(dest), cwd=dest.parent, env=env)
    git("config", "user.email", "ci@example.org", cwd=dest, env=env)
    git("config", "user.name", "ci", cwd=dest, env=env)
    assert sh(["bash", "scripts/ci/dvc_remote.sh"], dest, env).strip() == "team"
    if pull:
        dvc("pull", cwd=dest, env=env)
    return dest


def test_scheduled_retraining_lands_as_a_pull_request(
    stack: Stack, published: dict, tmp_path: Path, httpserver: HTTPServer
) -> None:
    api = {"GITHUB_REPOSITORY": "acme/birnn", "GH_TOKEN": "t0ken",
           "GITHUB_API_URL": httpserver.url_for("/")}  # fmt: skip
    env = ci_env(stack, published["env"], **api)
    origin = published["origin"]
    pulls = "/repos/acme/birnn/pulls"
    query = {"state": "open", "head": "acme:retrain/auto", "base": "main"}

    # main as published passes the check a push to main runs (on a checkout with no cache).
    ci = ci_checkout(origin, tmp_path / "ci", env, pull=False)
    assert "is on the DVC remote" in sh(["bash", "scripts/ci/check_remote.sh"], ci, env)

    # A scheduled run that reproduces main proposes nothing.
    dvc("pull", cwd=ci, env=env)
    report = str(tmp_path / "report.md")
    sh(["bash", "scripts/ci/retrain.sh", "origin/main"], ci, {**env, "REPORT_MD": report})
    out = sh(["bash", "scripts/ci/propose.sh", report], ci, env)
    assert "nothing to propose" in out and not httpserver.log

    # A manual run with a new seed: dvc.lock now names outputs only this job has, which the
    # check on main would refuse, naming them.
    run_env = {**env, "REPORT_MD": report, "RETRAIN_SET": "train.seed=7"}
    sh(["bash", "scripts/ci/retrain.sh", "origin/main"], ci, run_env)
    refused = run(["bash", "scripts/ci/check_remote.sh"], ci, env)
    assert refused.returncode == 1 and "models/model.keras" in refused.stderr, refused.stderr
    assert "run `dvc push`" in refused.stderr
    log.warning("check_remote.sh on unpushed outputs printed: %s", refused.stderr.strip())

    # Killed after the push, before the pull request (kill point ci.pushed): the branch is
    # there, no request was made; run again in the same checkout, it opens the pull request.
    crashed = run(["bash", "scripts/ci/propose.sh", report], ci,
                  {**env, "BIRNN_CRASH_AT": "ci.pushed"})  # fmt: skip
    assert crashed.returncode == crash.EXIT_CODE, crashed.stderr
    assert git("ls-remote", str(origin), "refs/heads/retrain/auto", cwd=tmp_path, env=env)
    assert not httpserver.log
    httpserver.expect_ordered_request(pulls, "GET", query_string=query).respond_with_json([])
    httpserver.expect_ordered_request(pulls, "POST").respond_with_json({"number": 7}, 201)
    assert "opened pull request #7" in sh(["bash", "scripts/ci/propose.sh", report], ci, env)
    created = json.loads(httpserver.log[-1][0].get_data())
    assert (created["head"], created["base"]) == ("retrain/auto", "main")
    assert created["body"].startswith("<!-- birnn-report -->")
    assert "| params.yaml | train.seed |" in created["body"]
    assert httpserver.log[-1][0].headers["Authorization"] == "Bearer t0ken"

    # The proposed branch: its dvc.lock is the new one, and a fresh clone pulls all of it.
    pr = ci_checkout(origin, tmp_path / "pr", env, branch="retrain/auto", pull=False)
    assert (pr / "dvc.lock").read_text() == (ci / "dvc.lock").read_text()
    assert "is on the DVC remote" in sh(["bash", "scripts/ci/check_remote.sh"], pr, env)
    dvc("pull", cwd=pr, env=env)
    assert "up to date" in dvc("status", cwd=pr, env=env)

    # Next run, dvc.lock changed again: the same branch and pull request are updated.
    again = ci_checkout(origin, tmp_path / "again", env)
    sh(["bash", "scripts/ci/retrain.sh", "origin/main"], again,
       {**env, "REPORT_MD": report, "RETRAIN_SET": "evaluate.batch_size=500"})  # fmt: skip
    httpserver.expect_ordered_request(pulls, "GET", query_string=query).respond_with_json(
        [{"number": 7}]
    )
    httpserver.expect_ordered_request(f"{pulls}/7", "PATCH").respond_with_json({"number": 7})
    assert "updated pull request #7" in sh(["bash", "scripts/ci/propose.sh", report], again, env)
    httpserver.check_assertions()
    heads = git("ls-remote", str(origin), "refs/heads/retrain/auto", cwd=tmp_path, env=env)
    assert heads.split()[0] == git("rev-parse", "HEAD", cwd=again, env=env).strip()


# ---------------------------------------------------------------------------------------------
# Two pipelines at once against the shared server.


def test_two_pipelines_at_once_log_everything_to_the_shared_server(
    stack: Stack, on_stack: MlflowClient, tmp_path: Path, mnist_dir: Path
) -> None:
    repo, env = team_project(stack, tmp_path / "p", mnist_dir, tracking__experiment_name="par")
    # The data stages first, as docs/mlflow.md says: two experiments that run the same stage
    # with the same inputs at the same moment can collide in DVC's run cache.
    dvc("repro", "preprocess", cwd=repo, env=env)
    commit_all(repo, env, "data")
    cmd = [sys.executable, "-m", "dvc", "exp", "run", "--temp"]
    procs = [
        subprocess.Popen([*cmd, "-n", name, "-S", f"train.seed={seed}"], cwd=repo, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, seed in (("ta", 11), ("tb", 12))
    ]  # fmt: skip
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)

    exp_id = on_stack.get_experiment_by_name("par").experiment_id
    runs = on_stack.search_runs([exp_id])
    assert len(runs) == 2
    assert sorted(r.data.params["train.seed"] for r in runs) == ["11", "12"]
    for run_ in runs:
        assert run_.info.status == "FINISHED"
        assert {"test_accuracy", "val_accuracy", "loss"} <= set(run_.data.metrics)
        assert len(on_stack.get_metric_history(run_.info.run_id, "loss")) == 1  # one epoch
        names = {a.path for a in on_stack.list_artifacts(run_.info.run_id)}
        assert {"figures", "history.csv", "reports"} <= names, names
    models = on_stack.search_logged_models([exp_id])
    assert sorted(m.source_run_id for m in models) == sorted(r.info.run_id for r in runs)
    versions = on_stack.search_model_versions(f"name='{NAME}'")
    mine = {v.run_id for v in versions} & {r.info.run_id for r in runs}
    assert len(mine) == 2  # each registered its own weights, none lost or mixed up


# ---------------------------------------------------------------------------------------------
# Faults: the MLflow server down between train and evaluate; PostgreSQL restarted mid-run.


def test_mlflow_server_down_between_train_and_evaluate(
    stack: Stack, on_stack: MlflowClient, tmp_path: Path, mnist_dir: Path
) -> None:
    repo, env = team_project(stack, tmp_path / "m", mnist_dir, tracking__experiment_name="gap")
    dvc("repro", "train", cwd=repo, env=env)
    model = (repo / "models/model.keras").stat().st_mtime_ns
    stack.stop("mlflow")
    try:
        failed = dvc_run("repro", cwd=repo, env=env)
    finally:
        stack.start("mlflow")
    assert failed.returncode != 0
    stage_errors = [line for line in failed.stderr.splitlines() if "evaluate: error:" in line]
    assert len(stage_errors) == 1 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
    log.warning("evaluate with the MLflow server down printed: %s", stage_errors[0])

    again = dvc("repro", cwd=repo, env=env)
    assert "Running stage 'evaluate'" in again and "Running stage 'train'" not in again, again
    assert (repo / "models/model.keras").stat().st_mtime_ns == model  # not retrained
    runs = on_stack.search_runs([on_stack.get_experiment_by_name("gap").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert "test_accuracy" in runs[0].data.metrics and "loss" in runs[0].data.metrics


def repro_until_an_epoch_is_logged(
    repo: Path, env: dict, client: MlflowClient, experiment: str, *stages: str
) -> subprocess.Popen:
    """``dvc repro [STAGES]`` in the background (data prepared first), returned once its
    training run has logged epoch 1."""
    dvc("repro", "preprocess", cwd=repo, env=env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", *stages],
        cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while True:
        exp = client.get_experiment_by_name(experiment)
        runs = client.search_runs([exp.experiment_id]) if exp else []
        if runs and client.get_metric_history(runs[0].info.run_id, "loss"):
            return proc
        assert proc.poll() is None and time.monotonic() < deadline, "training never logged"
        time.sleep(0.5)


def test_a_tracking_server_killed_mid_training_costs_seconds_and_no_finished_epoch(
    stack: Stack, on_stack: MlflowClient, tmp_path: Path, mnist_dir: Path
) -> None:
    # The incident: `kill -9` of the stack's mlflow server during training stalled the stage
    # 532 s. Now the next logging call gives up within ~30 s, the stage stops with one line,
    # and the rerun resumes after the last checkpointed epoch, logging each epoch once.
    repo, env = team_project(stack, tmp_path / "dead", mnist_dir,
                             tracking__experiment_name="dead", train__epochs=3)  # fmt: skip
    proc = repro_until_an_epoch_is_logged(repo, env, on_stack, "dead", "train")
    os.killpg(stack.pid("mlflow"), signal.SIGKILL)
    try:
        out = proc.communicate(timeout=600)[0]
        ended = time.time()
        state = repo / ".checkpoints/train/state.json"
        # From the last checkpoint (the epoch it could not log) to the stage's end.
        stalled = ended - state.stat().st_mtime
        done = json.loads(state.read_text())["epochs_done"]
    finally:
        stack.start("mlflow")
    errors = [line for line in out.splitlines() if ": error:" in line]
    log.warning("train with its server killed: %d epochs checkpointed, stopped %.1fs after the "
                "last one: %s", done, stalled, errors)  # fmt: skip
    assert proc.returncode != 0 and len(errors) == 1 and "Traceback" not in out, out[-3000:]
    assert done >= 2 and stalled < 40, (done, stalled, out[-3000:])

    again = dvc("repro", cwd=repo, env=env)
    assert f"resuming from checkpoint after epoch {done}" in again, again[-3000:]
    runs = on_stack.search_runs([on_stack.get_experiment_by_name("dead").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"]
    history = on_stack.get_metric_history(runs[0].info.run_id, "loss")
    assert sorted(m.step for m in history) == [1, 2, 3], history  # each epoch once


def test_s3_down_behind_the_tracking_server_fails_an_upload_in_seconds(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server proxies artifacts to S3: with S3 stopped, an upload (a figure, the model)
    # fails within the client's limits instead of stalling the stage, and works once S3 is back.
    from mlflow.exceptions import MlflowException

    from birnn import tracking
    from birnn.config import params_from_dict

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.mlflow_uri())
    for key in tracking.HTTP_LIMITS:
        # Registered with monkeypatch (set, then removed), so the limits connect() sets in
        # os.environ are undone after this test.
        monkeypatch.setenv(key, "unset")
        monkeypatch.delenv(key)
    params = params_from_dict({"tracking": {"experiment_name": "s3-down"}})
    tracking.connect(params)
    run_id = tracking.start_run(params, run_name="s3-down")
    figure = tmp_path / "figure.png"
    figure.write_bytes(b"\x89PNG not really")
    try:
        stack.stop("s3")
        try:
            t0 = time.monotonic()
            with pytest.raises(MlflowException) as failed:
                tracking.log_artifacts([figure], "figures")
            took = time.monotonic() - t0
        finally:
            stack.start("s3")
        log.warning("an upload with S3 down behind the server failed after %.1fs: %s", took,
                    str(failed.value).splitlines()[0][:200])  # fmt: skip
        assert took < 35, f"an upload stalled {took:.0f} s with S3 down"
        tracking.log_artifacts([figure], "figures")  # S3 back: it goes through
    finally:
        tracking.end_run()
        mlflow.set_tracking_uri(None)
    client = MlflowClient(stack.mlflow_uri())
    assert [a.path for a in client.list_artifacts(run_id, "figures")] == ["figures/figure.png"]


def test_postgres_restarted_mid_run(
    stack: Stack, on_stack: MlflowClient, tmp_path: Path, mnist_dir: Path
) -> None:
    repo, env = team_project(stack, tmp_path / "pg", mnist_dir, tracking__experiment_name="pg",
                             train__epochs=3)  # fmt: skip
    # Restart PostgreSQL once the training run has logged its first epoch.
    proc = repro_until_an_epoch_is_logged(repo, env, on_stack, "pg")
    stack.stop("postgres")
    time.sleep(2)
    stack.start("postgres")
    out = proc.communicate(timeout=900)[0]
    log.warning("dvc repro across a PostgreSQL restart exited %s", proc.returncode)
    if proc.returncode != 0:
        # Then it must have said so in one line, and a rerun finishes what was left.
        assert [line for line in out.splitlines() if ": error:" in line], out[-3000:]
        assert "Traceback" not in out, out[-3000:]
        log.warning("it printed: %s", [line for line in out.splitlines() if ": error:" in line])
        out = dvc("repro", cwd=repo, env=env)
    runs = on_stack.search_runs([on_stack.get_experiment_by_name("pg").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"], out[-3000:]
    history = on_stack.get_metric_history(runs[0].info.run_id, "loss")
    assert sorted(m.step for m in history) == [1, 2, 3], history  # each epoch once
    assert "test_accuracy" in runs[0].data.metrics
