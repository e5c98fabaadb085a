"""Image -> MNIST-style pixels, and the served model's input checks, on tiny inline images."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from PIL import Image

from birnn.digit_model import scale_pixels
from birnn.errors import DataError
from birnn.predict import to_mnist


def bar(ink: int, paper: int, mode: str = "L") -> Image.Image:
    """A 10x30 bar drawn off centre on a 100x80 page."""
    page = np.full((80, 100), paper, dtype=np.uint8)
    page[5:35, 60:70] = ink
    return Image.fromarray(page).convert(mode)


def test_mnist_style_box_and_centre_of_mass() -> None:
    out = to_mnist(bar(255, 0))
    assert out.shape == (28, 28) and out.dtype == np.uint8
    rows, _ = np.nonzero(out > 128)
    assert rows.max() - rows.min() + 1 == 20  # the longer side fills the 20-pixel box
    ys, xs = np.indices(out.shape)
    mass = out.astype(float)
    assert abs((ys * mass).sum() / mass.sum() - 13.5) <= 1.0
    assert abs((xs * mass).sum() / mass.sum() - 13.5) <= 1.0


def test_dark_ink_on_paper_in_colour_gives_the_same_digit() -> None:
    white_on_black = to_mnist(bar(255, 0))
    ink_on_paper = to_mnist(bar(10, 240, "RGB"))
    assert np.abs(white_on_black.astype(int) - ink_on_paper.astype(int)).max() <= 2


def test_blank_image_is_an_error() -> None:
    with pytest.raises(DataError, match="empty"):
        to_mnist(Image.new("L", (30, 30), 200))


def test_scale_pixels_checks_and_scales() -> None:
    x = np.full((2, 28, 28), 255, dtype=np.uint8)
    np.testing.assert_array_equal(scale_pixels(x), np.ones((2, 28, 28), np.float32))
    assert scale_pixels(np.zeros((28, 28))).shape == (1, 28, 28)
    for bad, message in [
        (np.zeros((2, 28, 27)), "shape"),
        (np.zeros((0, 28, 28)), "empty"),
        (np.full((1, 28, 28), 300.0), "within 0-255"),
        (np.full((1, 28, 28), "a"), "numbers"),
    ]:
        with pytest.raises(MlflowException, match=message):
            scale_pixels(bad)
