"""Markdown rendering of the CI report and the accuracy threshold."""

from __future__ import annotations

import pytest

from birnn.errors import BirnnError
from birnn.report import MARKER, check_threshold, render, table

METRICS = {
    "reports/metrics.json": {
        "test_accuracy": {"old": 0.981, "new": 0.9875, "diff": 0.0065},
        "macro_f1": {"old": 0.98, "new": 0.987, "diff": 0.007},
    }
}
PARAMS = {"params.yaml": {"train.epochs": {"old": 10, "new": 15}}}


def test_table_rows_and_diff_column() -> None:
    text = table(METRICS, with_diff=True)
    assert "| file | name | base | this run | change |" in text
    assert "| reports/metrics.json | test_accuracy | 0.9810 | 0.9875 | +0.0065 |" in text
    assert "| params.yaml | train.epochs | 10 | 15 |" in table(PARAMS, with_diff=False)
    assert table({}, with_diff=False) == "_No changes._\n"


def test_render_has_marker_sections_and_status() -> None:
    text = render(METRICS, PARAMS, "origin/main", {"test_accuracy": 0.9875}, 0.97, "http://x/1")
    assert text.startswith(MARKER)
    assert "### Metrics diff against `origin/main`" in text
    assert "### Params diff against `origin/main`" in text
    assert "passes the threshold 0.97" in text
    assert "[figures artifact](http://x/1)" in text
    assert "FAILS" in render({}, {}, "main", {"test_accuracy": 0.5}, 0.97)


def test_threshold() -> None:
    check_threshold({"test_accuracy": 0.98}, 0.97)
    with pytest.raises(BirnnError, match=r"below evaluate\.min_test_accuracy = 0\.99"):
        check_threshold({"test_accuracy": 0.98}, 0.99)
    with pytest.raises(BirnnError, match="no test_accuracy"):
        check_threshold({}, 0.9)


def test_on_merge_says_what_promote_would_decide() -> None:
    from birnn.config import params_from_dict
    from birnn.report import on_merge

    params = params_from_dict({"registry": {"min_improvement": 0.001}})
    better = on_merge(params, {"test_accuracy": 0.99}, {"test_accuracy": 0.98}, "main")
    assert better == "**promote** this model: test_accuracy 0.9900 beats `main`'s committed 0.9800"
    close = on_merge(params, {"test_accuracy": 0.9805}, {"test_accuracy": 0.98}, "main")
    assert close.startswith("**not promote** this model") and "by more than 0.001" in close
    low = on_merge(params, {"test_accuracy": 0.5}, {"test_accuracy": 0.4}, "main")
    assert low.startswith("**refuse** this model: test_accuracy 0.5000 is below")
    first = on_merge(params, {"test_accuracy": 0.99}, {}, "main")
    assert first == "**promote** this model: `main` has no committed test_accuracy to compare with"
    loss = params_from_dict({"registry": {"metric": "test_loss"}})
    kept = on_merge(loss, {"test_accuracy": 0.99, "test_loss": 0.05}, {"test_loss": 0.04}, "main")
    assert kept.startswith("**not promote**")
    text = render(METRICS, PARAMS, "main", {"test_accuracy": 0.99}, 0.97, promotion=better)
    assert f"### On merge\n\n`birnn promote` on main would {better}." in text
