"""The team stack's state, configuration and command line, without starting its servers."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from birnn.stack import Ports, Stack, StackError, State, missing_binaries, postgres


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


def test_dvc_remote_url_is_shared_and_credentials_stay_local(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    stack = Stack(tmp_path / "stack")
    stack.root.mkdir()
    state = State.new()
    stack.save(state)
    stack.configure_dvc_remote(repo)
    shared = (repo / ".dvc/config").read_text()
    local = (repo / ".dvc/config.local").read_text()
    assert "remote = team" in shared and "url = s3://birnn/dvc" in shared
    assert state.s3_secret_key not in shared and "127.0.0.1" not in shared
    assert f"endpointurl = http://127.0.0.1:{state.ports.s3}" in local
    assert state.s3_access_key in local and state.s3_secret_key in local


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
