"""``birnn promote``'s decision (pure), what it reads from a dvc.lock, and the ``birnn`` entry
point. The flows against real stores are in tests/integration/test_promote.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from birnn.__main__ import COMMANDS
from birnn.config import params_from_dict
from birnn.errors import ConfigError
from birnn.promote import decide
from birnn.revision import lock_model_md5

PARAMS = params_from_dict({"registry": {"min_improvement": 0.01}})


@pytest.mark.parametrize(
    ("kwargs", "action", "reason"),
    [
        # target version, champion version, champion score
        ({"target": "3", "champ": "3", "old": 0.9}, "noop", "version 3 is already champion"),
        ({"target": None, "champ": None, "old": None}, "promote", "there was no champion"),
        ({"target": "2", "champ": "1", "old": 0.90}, "promote", "beats version 1's 0.9000"),
        ({"target": "2", "champ": "1", "old": 0.975}, "keep", "by more than 0.01"),
        ({"target": "2", "champ": "1", "old": None}, "keep", "version 1 has no test_accuracy"),
        ({"target": "2", "champ": "1", "old": 0.99, "force": True}, "promote", "--force over"),
        ({"target": "2", "champ": "1", "old": 0.9, "blocked": "rolled back"}, "refuse",
         "it was rolled back (--force"),
        ({"target": "2", "champ": "1", "old": 0.9, "blocked": "x", "force": True}, "promote", ""),
        ({"target": "2", "champ": "1", "old": 0.5, "acc": 0.6}, "refuse", "below evaluate.min"),
        ({"target": "2", "champ": "1", "old": 0.5, "acc": 0.6, "force": True}, "refuse", "below"),
        ({"target": "2", "champ": "1", "old": 0.5, "acc": 0.6, "allow_below_floor": True},
         "promote", "beats"),
    ],
)  # fmt: skip
def test_decision(kwargs: dict, action: str, reason: str) -> None:
    acc = kwargs.pop("acc", 0.98)
    d = decide(
        PARAMS,
        score=acc,
        accuracy=acc,
        target_version=kwargs.pop("target"),
        champion_version=kwargs.pop("champ"),
        champion_score=kwargs.pop("old"),
        **kwargs,
    )
    assert d.action == action, d
    assert reason in d.reason


def test_lower_is_better_for_test_loss() -> None:
    loss = params_from_dict({"registry": {"metric": "test_loss"}})
    d = decide(loss, 0.05, 0.99, "2", "1", 0.06)
    assert (d.action, d.reason) == ("promote", "test_loss 0.0500 beats version 1's 0.0600")
    assert decide(loss, 0.07, 0.99, "2", "1", 0.06).action == "keep"


def test_the_model_md5_comes_from_trains_output_in_dvc_lock() -> None:
    lock = """schema: '2.0'
stages:
  train:
    outs:
    - path: models/model.keras
      hash: md5
      md5: e308a1c48f32af49666ff0cf45fa1420
  evaluate:
    deps:
    - path: models/model.keras
      md5: 00000000000000000000000000000000
"""
    assert lock_model_md5(lock) == "e308a1c48f32af49666ff0cf45fa1420"
    assert lock_model_md5("schema: '2.0'\nstages: {}\n") is None


def birnn(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "birnn", *args], capture_output=True, text=True, timeout=120
    )


def test_birnn_help_lists_every_subcommand() -> None:
    res = birnn("--help")
    assert res.returncode == 0, res.stderr
    for name in ("predict", "promote", "sweep", "stack"):
        assert name in COMMANDS
        assert f"\n    {name} " in res.stdout, res.stdout
    bad = birnn("frobnicate")
    assert bad.returncode == 2 and "invalid choice: 'frobnicate'" in bad.stderr
    assert birnn().returncode == 2


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_subcommand_has_complete_help(command: str) -> None:
    res = birnn(command, "--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"usage: birnn {command}"), res.stdout[:200]


def test_an_older_revisions_removed_keys_are_left_out() -> None:
    from birnn.revision import without_removed_keys

    raw = {"registry": {"promote": "auto", "metric": "macro_f1"}, "data": {"dataset": "mnist"}}
    params = params_from_dict(without_removed_keys(raw))
    assert params.registry.metric == "macro_f1"
    assert raw["registry"]["promote"] == "auto"  # the caller's mapping is left as it was
    with pytest.raises(ConfigError, match=r"registry\.promote was removed"):
        params_from_dict(raw)  # a working tree's params.yaml still says so
