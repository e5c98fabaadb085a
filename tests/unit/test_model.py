"""Every model variant builds from params, outputs (N, 10) and has the textbook parameter count."""

from __future__ import annotations

import itertools
from pathlib import Path

import keras
import numpy as np
import pytest

from birnn.config import ModelConfig
from birnn.model import TiedBidirectional, build_model, summary_text


def cell_params(cell: str, d: int, h: int) -> int:
    """Parameters of one direction of one recurrent layer (Keras 3 defaults)."""
    if cell == "lstm":
        return 4 * (h * (d + h) + h)
    if cell == "gru":  # reset_after=True: two bias vectors
        return 3 * (h * (d + h) + 2 * h)
    return h * (d + h) + h


def expected_params(cfg: ModelConfig, d: int = 28, classes: int = 10) -> int:
    total = 0
    for h in cfg.units:
        one = cell_params(cfg.cell, d, h)
        if cfg.bidirectional:
            total += one if cfg.tie_directions else 2 * one
            d = 2 * h if cfg.merge_mode == "concat" else h
        else:
            total += one
            d = h
    return total + d * classes + classes


VARIANTS = [
    (cell, bidir, tie, merge)
    for cell, (bidir, tie), merge in itertools.product(
        ("lstm", "gru", "simple_rnn"),
        ((False, False), (True, False), (True, True)),
        ("concat", "sum", "mul", "ave"),
    )
    if bidir or merge == "concat"  # merge_mode means nothing without a second direction
]


@pytest.mark.parametrize(("cell", "bidirectional", "tie", "merge"), VARIANTS)
def test_variant_shape_and_param_count(cell: str, bidirectional: bool, tie: bool, merge: str):
    cfg = ModelConfig(
        cell=cell,
        units=(6, 5),
        bidirectional=bidirectional,
        tie_directions=tie,
        merge_mode=merge,
        dropout=0.1,
        unroll=False,
    )
    model = build_model(cfg)
    out = model(np.random.default_rng(0).random((3, 28, 28), dtype=np.float32))
    assert tuple(out.shape) == (3, 10)
    np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, rtol=1e-5)
    assert model.count_params() == expected_params(cfg)


def test_seed_network_params() -> None:
    # Two Bidirectional LSTM(50) + Dense(10): the seed's 93,010 parameters.
    assert build_model(ModelConfig()).count_params() == 93_010


def test_tied_has_half_the_recurrent_params() -> None:
    untied = build_model(ModelConfig(units=(8,), dropout=0.0))
    tied = build_model(ModelConfig(units=(8,), dropout=0.0, tie_directions=True))
    dense = 2 * 8 * 10 + 10
    assert (tied.count_params() - dense) * 2 == untied.count_params() - dense


def palindrome(batch: int = 2, steps: int = 7, features: int = 4) -> np.ndarray:
    half = np.random.default_rng(3).random((batch, steps // 2 + 1, features), dtype=np.float32)
    return np.concatenate([half, half[:, -2::-1]], axis=1)


@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_rnn"])
def test_tied_directions_share_weights_on_palindrome(cell: str) -> None:
    x = palindrome()
    np.testing.assert_array_equal(x, x[:, ::-1])
    cfg = ModelConfig(cell=cell, unroll=False)
    from birnn.model import recurrent_layer

    tied = TiedBidirectional(recurrent_layer(cfg, 5, False, "r"), merge_mode="concat")
    out = np.asarray(tied(x))
    np.testing.assert_allclose(out[:, :5], out[:, 5:], rtol=1e-6, atol=1e-6)

    seq = TiedBidirectional(recurrent_layer(cfg, 5, True, "s"), merge_mode="concat")
    out = np.asarray(seq(x))
    # Backward outputs are re-reversed in time: b[t] == f[T-1-t] on a palindrome.
    np.testing.assert_allclose(out[:, :, 5:], out[:, ::-1, :5], rtol=1e-6, atol=1e-6)

    # Keras' untied Bidirectional has two weight sets, so the halves differ.
    untied = keras.layers.Bidirectional(recurrent_layer(cfg, 5, False, "u"))
    out = np.asarray(untied(x))
    assert not np.allclose(out[:, :5], out[:, 5:])


def test_tied_model_saves_and_loads_in_safe_mode(tmp_path: Path) -> None:
    model = build_model(ModelConfig(units=(4, 3), tie_directions=True, unroll=False))
    x = np.random.default_rng(0).random((2, 28, 28), dtype=np.float32)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.count_params() == model.count_params()


def test_summary_text_lists_layers_and_params() -> None:
    text = summary_text(build_model(ModelConfig()))
    assert "bidir_1" in text and "digits" in text
    assert "93,010" in text
