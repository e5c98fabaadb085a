"""The figures: written whole as PNG, the same bytes for the same input, any number of
mistakes (none, fewer than the grid holds, more)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from birnn import plots


@pytest.mark.parametrize("n_wrong", [0, 3, 40])
def test_misclassified_mosaic_is_a_repeatable_png(tmp_path: Path, n_wrong: int) -> None:
    rng = np.random.default_rng(0)
    images = rng.random((50, 28, 28), dtype=np.float32)
    y_true = rng.integers(0, 10, 50)
    y_pred = y_true.copy()
    y_pred[:n_wrong] = (y_pred[:n_wrong] + 1) % 10
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plots.misclassified(images, y_true, y_pred, 5, a)
    plots.misclassified(images, y_true, y_pred, 5, b)
    assert a.read_bytes() == b.read_bytes()
    with Image.open(a) as png:
        assert png.format == "PNG" and png.size == (800, 900)  # 1.6 x 1.8 in per cell, 100 dpi
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]  # no temp left
