"""Kill points: the list, the code and the docs agree; a point exits at once, the n-th time."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from birnn import crash
from tests.conftest import REPO


def test_list_prints_every_point_with_its_invariant() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "birnn.crash", "--list"], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert [name for name, _ in rows] == list(crash.POINTS)
    assert all(invariant for _, invariant in rows)


def test_the_code_names_exactly_the_listed_points() -> None:
    used = set()
    for path in (REPO / "src" / "birnn").rglob("*.py"):
        used |= set(re.findall(r"crash\.point\(\"([^\"]+)\"\)", path.read_text()))
    for path in (REPO / "scripts").rglob("*.sh"):  # the shell's points
        used |= set(re.findall(r"-m birnn\.crash --point ([\w.-]+)", path.read_text()))
    assert used == set(crash.POINTS)
    with pytest.raises(KeyError, match="unknown kill point"):
        crash.point("no.such-point")


def test_the_docs_list_each_point_with_the_test_that_checks_it() -> None:
    text = (REPO / "docs" / "reliability.md").read_text()
    table = text.split("<!-- kill-points -->")[1].split("<!-- /kill-points -->")[0]
    rows = re.findall(r"^\| `([^`]+)` \| [^|]+ \| `(tests/[^`]+)` \|$", table, re.M)
    assert [name for name, _ in rows] == list(crash.POINTS)
    for _, test in rows:
        path, name = test.split("::")
        assert f"def {name}(" in (REPO / path).read_text(), test


@pytest.mark.parametrize(
    ("wanted", "exits_at"), [("checkpoint.state", 1), ("checkpoint.state:3", 3)]
)
def test_a_point_exits_at_once_the_nth_time(wanted: str, exits_at: int) -> None:
    code = (
        "from birnn import crash\n"
        "for i in range(1, 5):\n"
        "    print(i, flush=True)\n"
        "    crash.point('checkpoint.state')\n"
        "    crash.point('checkpoint.files')\n"
    )
    env = {"BIRNN_CRASH_AT": wanted, "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == crash.EXIT_CODE
    assert res.stdout.split() == [str(i) for i in range(1, exits_at + 1)]
    assert f"exiting at checkpoint.state (BIRNN_CRASH_AT={wanted})" in res.stderr


def test_a_shell_script_point_exits_only_when_named() -> None:
    point = [sys.executable, "-m", "birnn.crash", "--point", "ci.pushed"]
    named = {"BIRNN_CRASH_AT": "ci.pushed", "PATH": "/usr/bin:/bin"}
    assert subprocess.run(point, env=named).returncode == crash.EXIT_CODE
    assert subprocess.run(point, env={"PATH": "/usr/bin:/bin"}).returncode == 0
    unknown = subprocess.run([*point[:-1], "ci.nope"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "usage:" in unknown.stderr
