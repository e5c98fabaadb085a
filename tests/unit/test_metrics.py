"""Confusion matrix and per-class scores against hand-computed values."""

from __future__ import annotations

import numpy as np

from birnn.metrics import confusion_matrix, per_class_scores


def test_confusion_and_scores() -> None:
    y_true = np.array([0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0])
    cm = confusion_matrix(y_true, y_pred, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    s = per_class_scores(cm)
    np.testing.assert_allclose(s["precision"], [0.5, 2 / 3, 0.0])
    np.testing.assert_allclose(s["recall"], [0.5, 1.0, 0.0])
    np.testing.assert_allclose(s["f1"], [0.5, 0.8, 0.0])
