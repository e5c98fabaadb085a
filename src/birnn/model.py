"""Build the stacked (bi)directional RNN classifier from ``ModelConfig``.

Each 28x28 image is a sequence of 28 rows of 28 pixels. One recurrent layer per entry of
``model.units``; all but the last return full sequences so the next layer can read them.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from birnn.config import ModelConfig
from birnn.layers import TiedBidirectional

CELLS = {"lstm": layers.LSTM, "gru": layers.GRU, "simple_rnn": layers.SimpleRNN}


def recurrent_layer(cfg: ModelConfig, units: int, return_sequences: bool, name: str) -> Any:
    """One recurrent layer of the configured cell type."""
    # Fixed 28-step sequences: unrolling trades a little memory for a faster graph.
    return CELLS[cfg.cell](units, return_sequences=return_sequences, unroll=cfg.unroll, name=name)


def build_model(
    cfg: ModelConfig, input_shape: tuple[int, int] = (28, 28), num_classes: int = 10
) -> keras.Model:
    """The classifier described by ``cfg``, uncompiled."""
    inputs = keras.Input(shape=input_shape, name="rows")
    x = inputs
    for i, units in enumerate(cfg.units):
        last = i == len(cfg.units) - 1
        rnn = recurrent_layer(cfg, units, return_sequences=not last, name=f"{cfg.cell}_{i + 1}")
        if cfg.bidirectional and cfg.tie_directions:
            x = TiedBidirectional(rnn, merge_mode=cfg.merge_mode, name=f"tied_bidir_{i + 1}")(x)
        elif cfg.bidirectional:
            x = layers.Bidirectional(rnn, merge_mode=cfg.merge_mode, name=f"bidir_{i + 1}")(x)
        else:
            x = rnn(x)
        # Dropout after every recurrent layer, as in the seed network.
        if cfg.dropout > 0:
            x = layers.Dropout(cfg.dropout, name=f"dropout_{i + 1}")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="digits")(x)
    return keras.Model(inputs, outputs, name=f"birnn_{cfg.cell}")


def summary_text(model: keras.Model) -> str:
    """The model summary (layers, output shapes, parameter counts) as plain text."""
    lines: list[str] = []
    # 80 columns: wider asks of rich cut the "Param #" column off.
    model.summary(print_fn=lambda line, **_: lines.append(line), line_length=80)
    return "\n".join(lines) + "\n"
