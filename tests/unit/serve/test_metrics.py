"""The serving metrics count what was predicted, by version."""

from __future__ import annotations

import numpy as np

from birnn.serve.metrics import Metrics


def value(m: Metrics, line_start: str) -> float:
    text = m.exposition().decode()
    (line,) = [ln for ln in text.splitlines() if ln.startswith(line_start + " ")]
    return float(line.split()[-1])


def test_digits_images_and_unsure_answers_are_counted_per_version() -> None:
    m = Metrics(low_confidence=0.5)
    p = np.full((3, 10), 0.01, dtype=np.float32)
    p[0, 7], p[1, 7], p[2, 3] = 0.91, 0.6, 0.3  # the third is unsure
    m.predicted("4", p)
    m.predicted("5", p[:1])
    assert value(m, 'birnn_images_total{version="4"}') == 3
    assert value(m, 'birnn_predicted_digits_total{digit="7",version="4"}') == 2
    assert value(m, 'birnn_predicted_digits_total{digit="3",version="4"}') == 1
    assert value(m, 'birnn_low_confidence_predictions_total{version="4"}') == 1
    assert value(m, 'birnn_images_total{version="5"}') == 1
    m.request("/invocations", 413, 0.01)
    m.request("/invocations", 200, 0.02)
    assert value(m, 'birnn_request_errors_total{endpoint="/invocations",status="413"}') == 1
    assert value(m, 'birnn_requests_total{endpoint="/invocations",status="200"}') == 1


def test_the_served_model_is_one_series_that_moves() -> None:
    m = Metrics(0.5)
    one = {"registered_model": "m", "version": "1", "alias": "champion", "run_id": "a"}
    two = {**one, "version": "2", "run_id": "b"}
    m.serving(one)
    m.serving(two, one)
    text = m.exposition().decode()
    assert 'version="2"} 1.0' in text and 'version="1"} 1.0' not in text
