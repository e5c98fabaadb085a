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


def test_the_mosaic_shows_the_wrong_digits(tmp_path: Path) -> None:
    images = np.zeros((20, 28, 28), dtype=np.float32)
    images[:, 8:20, 12:16] = 1.0  # a stroke in every image
    y_true = np.arange(20) % 10
    shown = {}
    for n_wrong in (0, 3):
        y_pred = y_true.copy()
        y_pred[:n_wrong] = (y_pred[:n_wrong] + 1) % 10
        plots.misclassified(images, y_true, y_pred, 2, tmp_path / f"{n_wrong}.png")
        with Image.open(tmp_path / f"{n_wrong}.png") as png:
            shown[n_wrong] = np.asarray(png.convert("L"), dtype=np.float32)
    # Three dark strokes (12 x 4 pixels each, drawn ~4x larger) beyond the titles' text.
    assert (shown[3] < 64).sum() - (shown[0] < 64).sum() > 3 * 12 * 4 * 4
