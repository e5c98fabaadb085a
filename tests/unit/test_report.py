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
