"""The stage shell: service failures are one line and exit 1; bugs keep their traceback; a
stage's process exits as usual, minus the teardown's walk over every object; a bad
TF_NUM_INTRAOP_THREADS is one line, a good one is left to TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy.exc
from mlflow.exceptions import MlflowException

from birnn.errors import DataError
from birnn.stage import run_stage, set_op_threads


def fail_with(exc: BaseException):
    def stage() -> None:
        raise exc

    return stage


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (DataError("data/raw/x.gz not found"), "birnn.s: error: data/raw/x.gz not found"),
        (
            MlflowException("Run 'abc' not found\nmore detail"),
            "birnn.s: error: MLflow failed (MlflowException): Run 'abc' not found",
        ),
        (
            sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("database is locked")),
            "birnn.s: error: the MLflow database failed (OperationalError): ",
        ),
    ],
)
def test_failures_become_one_line(exc, expected, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        run_stage("s", fail_with(exc))
    assert done.value.code == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("birnn.s: error")]
    assert len(lines) == 1 and lines[0].startswith(expected), err
    assert "Traceback" not in err


def test_a_service_failure_raised_from_our_code_is_found_through_the_cause() -> None:
    def stage() -> None:
        try:
            raise MlflowException("boom")
        except MlflowException as exc:
            raise RuntimeError("while logging") from exc

    with pytest.raises(SystemExit):
        run_stage("s", stage)


def test_a_bug_keeps_its_traceback() -> None:
    with pytest.raises(ZeroDivisionError):
        run_stage("s", fail_with(ZeroDivisionError("bug")))


@pytest.mark.parametrize(
    ("raises", "code"),
    [("", 0), ("raise DataError('no data')", 1), ("raise KeyboardInterrupt", 130)],
)
def test_a_stage_exits_as_usual_without_the_teardown_walk(
    tmp_path: Path, raises: str, code: int
) -> None:
    # freeze_at_exit() has exit freeze the garbage collector's objects so it skips walking them
    # (~2 s of a train process's CPU), done or failed; everything else exit does must still
    # happen. The checking handler is registered first, so it runs last (atexit is LIFO).
    script = f"""
import atexit, gc, sys, threading, time
from pathlib import Path
from birnn.errors import DataError
from birnn.stage import run_stage
out = Path({str(tmp_path)!r})
atexit.register(lambda: (out / "frozen").write_text(str(gc.get_freeze_count())))

def late_write():
    time.sleep(0.3)
    (out / "thread").write_text("joined")

def stage():
    assert gc.get_freeze_count() == 0  # at exit, not now: a long-lived process still collects
    threading.Thread(target=late_write).start()
    atexit.register(lambda: (out / "atexit").write_text("ran"))
    sys.stdout.write("buffered, no newline")
    {raises}

run_stage("s", stage)
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == code, res.stderr
    assert res.stdout == "buffered, no newline"
    assert ("stage s done in" in res.stderr) == (code == 0), res.stderr
    assert "Traceback" not in res.stderr
    assert (tmp_path / "thread").read_text() == "joined"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert int((tmp_path / "frozen").read_text()) > 0  # frozen before the teardown: walk spared


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5"])
def test_a_bad_threads_variable_is_one_line(value, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", value)
    with pytest.raises(SystemExit) as done:
        run_stage("s", set_op_threads)
    assert done.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"birnn.s: error: TF_NUM_INTRAOP_THREADS={value!r}: not a whole number of threads >= 1 "
        "(unset it to let the stage choose)"
    ]


def test_a_threads_variable_is_left_to_tensorflow(monkeypatch, caplog) -> None:
    # TensorFlow reads the variable itself: the stage only logs it, setting no count.
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", " 3 ")
    caplog.set_level("INFO", logger="birnn")
    set_op_threads()
    assert "TensorFlow: 3 thread(s) per op (TF_NUM_INTRAOP_THREADS)" in caplog.text
