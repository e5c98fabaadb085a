"""The embedded sqlite store under concurrency and failure: the raced first use, repairs of
half-migrated files, "database is locked", and parallel DVC experiments on a fresh clone."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from birnn import store, tracking
from birnn.config import params_from_dict
from birnn.errors import TrackingError
from tests.helpers.pipeline import commit_all, dvc, env_for, make_project

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PLAIN_FIRST_USE = "import sys; from mlflow.tracking import MlflowClient; " \
    "MlflowClient(sys.argv[1]).search_experiments()"  # fmt: skip


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder whose default store is ``mlflow.db`` in it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    yield tmp_path
    mlflow.set_tracking_uri(None)


def tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def half_migrated_new_store(db: Path) -> None:
    """What processes racing through a new store's schema migration left, with plain MLflow
    before the lock: the schema made, a batch operation's temp table never renamed back, no
    records. Made exactly, so the test never depends on a race being lost."""
    subprocess.run(
        [sys.executable, "-c", PLAIN_FIRST_USE, f"sqlite:///{db}"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE _alembic_tmp_experiments AS SELECT * FROM experiments")
        conn.commit()


def log_one_run(params) -> str:
    tracking.connect(params)
    run_id = tracking.start_run(params, run_name="after-repair")
    tracking.log_metrics({"test_accuracy": 0.5})
    tracking.end_run()
    return run_id


def test_raced_first_use_is_repaired_at_connect(project: Path, caplog) -> None:
    db = project / "mlflow.db"
    half_migrated_new_store(db)
    assert store.leftover_tables(db) == ["_alembic_tmp_experiments"]

    run_id = log_one_run(params_from_dict({}))
    assert not store.leftover_tables(db)
    assert "set it aside as mlflow.db.broken-" in caplog.text
    assert list(project.glob("mlflow.db.broken-*")), "the broken file is kept, not deleted"
    assert MlflowClient(f"sqlite:///{db}").get_run(run_id).data.metrics["test_accuracy"] == 0.5


def store_with_runs(db: Path, n: int = 2) -> list[str]:
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    ids = []
    for i in range(n):
        with mlflow.start_run(experiment_id="0") as run:
            mlflow.set_tag("k", f"v{i}")
            mlflow.log_metric("m", i)
            ids.append(run.info.run_id)
    mlflow.set_tracking_uri(None)
    return ids


@pytest.mark.parametrize("only", ["registered model", "experiment"])
def test_a_cut_short_migration_of_a_store_without_runs_keeps_what_it_holds(
    project: Path, only: str, caplog
) -> None:
    # A store with no run but a registered model (or an experiment of its own) is not empty:
    # repaired in place, never set aside as broken.
    db = project / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    if only == "registered model":
        client.create_registered_model("kept-model")
    else:
        client.create_experiment("kept-experiment")
    # Cut short inside the very table that holds it: copied, the original dropped, the copy
    # not yet renamed back (alembic's batch mode).
    table = "registered_models" if only == "registered model" else "experiments"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (schema,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        conn.execute(schema.replace(table, f"_alembic_tmp_{table}", 1))  # same columns and keys
        conn.execute(f"INSERT INTO _alembic_tmp_{table} SELECT * FROM {table}")
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute(f"DROP TABLE {table}")
        conn.commit()
    log_one_run(params_from_dict({}))
    assert "set it aside" not in caplog.text and not list(project.glob("mlflow.db.broken-*"))
    assert "repaired MLflow store" in caplog.text
    if only == "registered model":
        assert client.get_registered_model("kept-model").name == "kept-model"
    else:
        assert client.get_experiment_by_name("kept-experiment") is not None


@pytest.mark.parametrize("cut", ["before-drop", "before-rename"])
def test_interrupted_batch_migration_with_runs_is_repaired_keeping_every_run(
    project: Path, cut: str, caplog
) -> None:
    db = project / "mlflow.db"
    ids = store_with_runs(db)
    # What alembic's batch mode leaves when cut short: the table copied into _alembic_tmp_tags
    # (original still there), or the original dropped before the copy was renamed back.
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE _alembic_tmp_tags AS SELECT * FROM tags")
        if cut == "before-rename":
            conn.execute("DROP TABLE tags")
    log_one_run(params_from_dict({}))
    assert "_alembic_tmp_tags" not in tables(db) and "tags" in tables(db)
    assert "repaired MLflow store" in caplog.text
    assert list(project.glob("mlflow.db.before-repair-*")), "a copy of the store as it was"
    client = MlflowClient(f"sqlite:///{db}")
    for i, run_id in enumerate(ids):
        run = client.get_run(run_id)
        assert run.data.tags["k"] == f"v{i}" and run.data.metrics["m"] == i


# Another process with the store open, as `mlflow ui` migrating it without our lock: its
# temp table is work in progress. It finishes (drops the table) after ``sys.argv[2]`` seconds,
# or keeps the file open that long with the table still there.
MIGRATING = (
    "import sqlite3, sys, time\n"
    "conn = sqlite3.connect(sys.argv[1])\n"
    "conn.execute('SELECT name FROM sqlite_master').fetchall()\n"
    "print('open', flush=True)\n"
    "time.sleep(float(sys.argv[2]))\n"
    "if sys.argv[3] == 'finishes':\n"
    "    conn.execute('DROP TABLE _alembic_tmp_tags')\n"
    "    conn.commit()\n"
)


@pytest.mark.parametrize("holder", ["finishes", "stays"])
def test_a_migration_another_process_runs_is_never_repaired_under_it(
    project: Path, holder: str, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = project / "mlflow.db"
    ids = store_with_runs(db)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE _alembic_tmp_tags AS SELECT * FROM tags")
    seconds = "2" if holder == "finishes" else "60"
    proc = subprocess.Popen([sys.executable, "-c", MIGRATING, str(db), seconds, holder],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline() == "open\n"
        if holder == "finishes":
            # The stage waits for it, then finds nothing to repair.
            log_one_run(params_from_dict({}))
            assert "repaired" not in caplog.text
            assert not list(project.glob("mlflow.db.before-repair-*"))
        else:
            monkeypatch.setattr(store, "HOLDER_WAIT_S", 1.0)
            before = db.read_bytes()
            with pytest.raises(TrackingError, match=f"pid {proc.pid} .*has it open") as err:
                tracking.connect(params_from_dict({}))
            assert "\n" not in str(err.value)
            assert db.read_bytes() == before
    finally:
        proc.kill()
        proc.wait()
    client = MlflowClient(f"sqlite:///{db}")
    for i, run_id in enumerate(ids):
        assert client.get_run(run_id).data.tags["k"] == f"v{i}"


def test_a_store_it_cannot_safely_repair_is_one_line_and_left_as_it_was(project: Path) -> None:
    db = project / "mlflow.db"
    store_with_runs(db)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE _alembic_tmp_tags AS SELECT * FROM tags")
        conn.execute("INSERT INTO _alembic_tmp_tags SELECT * FROM tags")  # more rows than tags
    before = db.read_bytes()
    with pytest.raises(TrackingError, match="holds rows that tags lacks: not repaired") as err:
        tracking.connect(params_from_dict({}))
    assert "\n" not in str(err.value)
    assert db.read_bytes() == before


def test_database_is_locked_is_retried_not_fatal(project: Path, caplog) -> None:
    params = params_from_dict({})
    tracking.connect(params)
    run_id = tracking.start_run(params, run_name="locked")
    db, flag = project / "mlflow.db", project / "locked"
    # Another writer holds the database past MLflow's own 20 s sqlite busy timeout.
    hold = (
        "import sqlite3, sys, time, pathlib;"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None);"
        "c.execute('BEGIN EXCLUSIVE'); pathlib.Path(sys.argv[2]).touch(); time.sleep(23);"
        "c.execute('COMMIT')"
    )
    proc = subprocess.Popen([sys.executable, "-c", hold, str(db), str(flag)])
    while not flag.exists():
        time.sleep(0.05)
    caplog.set_level("DEBUG", logger="birnn.store")
    start = time.monotonic()
    tracking.log_metrics({"during_lock": 1.0})
    assert time.monotonic() - start > 20
    assert "database is locked: retrying log_batch" in caplog.text
    proc.wait()
    tracking.end_run()
    assert MlflowClient(f"sqlite:///{db}").get_run(run_id).data.metrics["during_lock"] == 1.0


# ---------------------------------------------------------------------------------------------
# Parallel DVC experiments on a fresh clone: no mlflow.db yet.

SLICE = ("preprocess.train_samples=400", "train.epochs=1")


def check_store(repo: Path, names: set[str]) -> None:
    """One finished run per experiment in ``names`` (beside any other test's on this clone),
    and every run's weights registered once."""
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("birnn-mnist")
    runs = client.search_runs([exp.experiment_id])
    mine = sorted(r.info.run_name for r in runs if r.info.run_name in names)
    assert mine == sorted(names), [r.info.run_name for r in runs]
    for run in runs:
        assert run.info.status == "FINISHED", run.info.run_name
        assert {"test_accuracy", "val_accuracy", "loss"} <= set(run.data.metrics), run.info.run_name
    versions = client.search_model_versions("name='birnn-mnist'")
    # Every run registers its own weights once, none lost, none twice; no alias moves.
    assert sorted(v.run_id for v in versions) == sorted(r.info.run_id for r in runs)
    assert len({v.tags["weights_sha256"] for v in versions}) == len(versions)
    assert not any(v.aliases for v in versions)


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path):
    env = env_for(mnist_dir)
    repo = make_project(tmp_path_factory.mktemp("parallel") / "repo", env)
    # The data stages first (docs/mlflow.md): experiments that run one stage with the same
    # inputs at the same moment can collide in DVC's run cache. They do not touch MLflow.
    dvc("repro", "preprocess", cwd=repo, env=env)
    commit_all(repo, env, "data")
    assert not (repo / "mlflow.db").exists()
    return repo, env


def test_queue_with_two_workers_on_a_fresh_clone(fresh_clone) -> None:
    repo, env = fresh_clone
    for i, name in enumerate(("qa", "qb", "qc"), start=1):
        sets = [a for kv in (*SLICE, f"train.seed={i}") for a in ("-S", kv)]
        dvc("exp", "run", "--queue", "-n", name, *sets, cwd=repo, env=env)
    dvc("queue", "start", "-j", "2", cwd=repo, env=env)
    deadline = time.monotonic() + 900
    while True:
        status = dvc("queue", "status", cwd=repo, env=env)
        if not any(word in status for word in ("Queued", "Running")):
            break
        assert time.monotonic() < deadline, status
        time.sleep(15)  # each look is a dvc process (~1 s of CPU)
    assert status.count("Success") == 3, status + dvc("queue", "logs", "qa", cwd=repo, env=env)
    check_store(repo, {"qa", "qb", "qc"})


def test_two_temp_experiments_started_at_once(fresh_clone) -> None:
    repo, env = fresh_clone
    cmd = [sys.executable, "-m", "dvc", "exp", "run", "--temp"]
    procs = []
    for i, name in ((4, "ta"), (5, "tb")):
        sets = [a for kv in (*SLICE, f"train.seed={i}") for a in ("-S", kv)]
        procs.append(
            subprocess.Popen([*cmd, "-n", name, *sets], cwd=repo, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )  # fmt: skip
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    check_store(repo, {"ta", "tb"})
    shown = json.loads(dvc("exp", "show", "--json", cwd=repo, env=env))
    names = {e.get("name") for rev in shown for e in (rev.get("experiments") or [])}
    assert {"ta", "tb"} <= names
