"""Custom Keras layers of the network, in a module that imports nothing but Keras.

The logged MLflow model carries this file (``code_paths``), so a model that uses
``TiedBidirectional`` loads in a process where the ``birnn`` package is not installed.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops


def merge(a: Any, b: Any, mode: str) -> Any:
    """Combine the two directions' outputs: concat, sum, mul or ave."""
    if mode == "concat":
        return ops.concatenate([a, b], axis=-1)
    if mode == "sum":
        return a + b
    if mode == "mul":
        return a * b
    return (a + b) / 2.0  # "ave"


@keras.saving.register_keras_serializable(package="birnn")
class TiedBidirectional(layers.Layer):
    """A bidirectional layer whose two directions share one set of weights.

    The wrapped layer reads the sequence forward, then (same weights) the time-reversed
    sequence; the backward output is reversed back in time when sequences are returned, and
    the two are merged as in ``keras.layers.Bidirectional``.
    """

    def __init__(self, layer: layers.Layer, merge_mode: str = "concat", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.layer = layer
        self.merge_mode = merge_mode
        self.return_sequences = layer.return_sequences

    def build(self, input_shape: tuple) -> None:
        self.layer.build(input_shape)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        forward = self.layer(inputs, training=training)
        backward = self.layer(ops.flip(inputs, axis=1), training=training)
        if self.return_sequences:
            backward = ops.flip(backward, axis=1)
        return merge(forward, backward, self.merge_mode)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        out = self.layer.compute_output_shape(input_shape)
        if self.merge_mode == "concat":
            return (*out[:-1], out[-1] * 2)
        return out

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            layer=keras.saving.serialize_keras_object(self.layer), merge_mode=self.merge_mode
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TiedBidirectional:
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
        return cls(**config)
