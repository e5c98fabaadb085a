"""Evaluate's pure part: loss and accuracy from predicted probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from birnn.evaluate import evaluate_predictions


def test_evaluate_predictions_loss_and_accuracy() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    y = np.array([0, 1, 1])
    r = evaluate_predictions(y, probs)
    assert r["metrics"]["test_accuracy"] == pytest.approx(2 / 3)
    expected_loss = -(np.log(0.9) + np.log(0.8) + np.log(0.4)) / 3
    assert r["metrics"]["test_loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert r["per_class"]["1"]["recall"] == pytest.approx(0.5)
