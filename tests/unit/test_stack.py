"""The team stack's state, configuration and command line, without starting its servers."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from birnn.stack import Ports, Stack, StackError, State, missing_binaries, postgres
from birnn.stack.core import start_ticks


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "birnn.stack", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ports_are_distinct_and_keep_a_chosen_mlflow_port() -> None:
    ports = Ports.pick(mlflow=5055)
    values = list(vars(ports).values())
    assert ports.mlflow == 5055
    assert len(set(values)) == len(values)


def test_state_round_trips_and_only_its_owner_can_read_it(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    state = State.new()
    state.pids["s3"] = 123
    stack.save(state)
    assert stack.load() == state
    assert stat.S_IMODE(stack.state_file.stat().st_mode) == 0o600
    assert state.pg_password and state.s3_secret_key != state.pg_password


def test_a_state_file_of_another_version_loads(tmp_path: Path) -> None:
    # Before `up_once` existed (it defaults to False) and after a newer version added a key.
    stack = Stack(tmp_path)
    stack.save(State.new())
    data = json.loads(stack.state_file.read_text())
    del data["up_once"]
    data["added_later"] = 1
    stack.state_file.write_text(json.dumps(data))
    assert stack.load().up_once is False


def test_a_state_file_that_is_not_one_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text('{"ports": {}}')
    with pytest.raises(StackError, match="is not a stack state file"):
        Stack(tmp_path).load()


def test_status_and_down_of_a_folder_with_no_stack(tmp_path: Path) -> None:
    res = run_cli("status", "--dir", str(tmp_path / "none"), cwd=tmp_path)
    assert res.returncode == 3
    assert [line.split()[:2] for line in res.stdout.splitlines()] == [
        ["postgres", "down"],
        ["s3", "down"],
        ["mlflow", "down"],
    ]
    res = run_cli("down", "--dir", str(tmp_path / "none"), cwd=tmp_path)
    assert res.returncode == 0 and "nothing was running" in res.stderr


def test_dvc_remote_without_a_stack_is_one_line(tmp_path: Path) -> None:
    res = run_cli("dvc-remote", "--dir", str(tmp_path / "none"), cwd=tmp_path)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"birnn.stack: error: no stack in {tmp_path / 'none'}: run `python -m birnn.stack up` first"
    ]


def test_the_dvc_remote_is_all_local_and_private(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    # No remote committed: a clone without the stack cannot push to a bucket we do not own,
    # and DVC says how to set one.
    push = subprocess.run(
        [sys.executable, "-m", "dvc", "push"], cwd=repo, capture_output=True, text=True
    )
    assert push.returncode != 0 and "no remote specified" in push.stderr, push.stderr
    stack = Stack(tmp_path / "stack")
    stack.root.mkdir()
    state = State.new()
    stack.save(state)
    # What an older `dvc-remote` left (the url was in the shared config then): rewritten whole.
    (repo / ".dvc/config.local").write_text("['remote \"team\"']\n    endpointurl = http://x\n")
    stack.configure_dvc_remote(repo)
    shared = (repo / ".dvc/config").read_text()
    local = (repo / ".dvc/config.local").read_text()
    assert "remote" not in shared and "s3://" not in shared
    assert "url = s3://birnn/dvc" in local and "remote = team" in local
    assert f"endpointurl = http://127.0.0.1:{state.ports.s3}" in local
    assert state.s3_access_key in local and state.s3_secret_key in local
    assert (repo / ".dvc/config.local").stat().st_mode & 0o777 == 0o600
    listed = subprocess.run(
        [sys.executable, "-m", "dvc", "config", "--list"],
        cwd=repo, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert f"remote.team.secret_access_key={state.s3_secret_key}" in listed  # DVC reads it


def test_up_names_what_is_missing_before_doing_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIRNN_PG_BINDIR", str(tmp_path))  # no initdb there
    assert any("PostgreSQL" in m for m in missing_binaries())
    with pytest.raises(StackError, match="missing: PostgreSQL server binaries"):
        Stack(tmp_path / "stack").up()
    assert not (tmp_path / "stack").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="PostgreSQL runs as itself when not root")
def test_under_root_a_folder_postgres_cannot_enter_is_refused(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(StackError, match=r"cannot enter .*chmod o\+x"):
        postgres.check_reachable(Stack(private / "stack"))


def test_a_recorded_pid_now_held_by_another_process_is_never_signalled(tmp_path: Path) -> None:
    # After a crash or a reboot, stack.json's pid may belong to anything: here a `sleep` that
    # is not the service (it started at another time). `down` must leave it alone.
    foreign = subprocess.Popen(["sleep", "60"], start_new_session=True)  # a group, as services
    try:
        stack = Stack(tmp_path / "stack")
        stack.root.mkdir()
        state = State.new()
        real_start = start_ticks(foreign.pid)
        assert real_start is not None
        state.pids["mlflow"] = foreign.pid
        state.starts["mlflow"] = real_start - 100  # ours started a second earlier
        stack.save(state)
        assert stack.pid("mlflow") is None
        assert stack.down() == []
        assert foreign.poll() is None, "a process that is not the stack's was signalled"
        # A state from before start times were kept: a `sleep` is no mlflow server either.
        del state.starts["mlflow"]
        stack.save(state)
        assert stack.pid("mlflow") is None and stack.down() == []
        assert foreign.poll() is None
        # The same pid with its true start is taken for the service, and stopped.
        state.starts["mlflow"] = real_start
        stack.save(state)
        assert stack.pid("mlflow") == foreign.pid
        assert stack.down() == ["mlflow"]
        assert foreign.wait(timeout=10) is not None
    finally:
        if foreign.poll() is None:
            foreign.kill()
