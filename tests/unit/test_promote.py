"""``birnn promote``'s decision (pure), what it reads from a dvc.lock, and the ``birnn`` entry
point. The flows against real stores are in tests/integration/test_promote.py."""

from __future__ import annotations

import pytest

from birnn.config import params_from_dict
from birnn.promote import decide

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
