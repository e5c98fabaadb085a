"""The logged MLflow model: the trained Keras network behind a pyfunc that takes raw pixels.

``tracking.log_model`` logs it as a "model from code" and carries this file and
``birnn/layers.py`` inside the model (``code_paths``), so loading it needs Keras and MLflow,
not this project installed. This module imports no other ``birnn`` module.

Input: ``(n, 28, 28)`` pixel values 0-255 (uint8 or float), white digit on black as in MNIST;
output: ``(n, 10)`` digit probabilities (float32).
"""

from __future__ import annotations

import os
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

IMAGE_SHAPE = (28, 28)
CHUNK = 256  # images per forward pass
MAX_BATCH = 2048  # images per HTTP request: bounds a server's memory per call
# Set by MLflow's scoring server (`mlflow models serve`); in-process calls take any batch.
SERVING_ENV = "_MLFLOW_IS_IN_SERVING_ENVIRONMENT"


def scale_pixels(images: Any) -> np.ndarray:
    """Validate ``(n, 28, 28)`` pixels 0-255 and scale them to [0, 1] float32.

    The same arithmetic as the preprocess stage (float32, then / 255), so a served model gives
    exactly the evaluate stage's predictions. Bad input raises an MlflowException, which the
    scoring server answers with HTTP 400.
    """
    if isinstance(images, dict) and len(images) == 1:
        images = next(iter(images.values()))  # {"inputs": ...} or one named tensor
    try:
        x = np.asarray(images)
        if x.dtype == object or not np.issubdtype(x.dtype, np.number):
            raise ValueError(f"pixel values must be numbers, got {x.dtype}")
    except (TypeError, ValueError) as exc:
        raise _bad(f"input is not an array of pixel values: {exc}") from None
    if x.ndim == 2 and x.shape == IMAGE_SHAPE:
        x = x[None]
    if x.ndim != 3 or x.shape[1:] != IMAGE_SHAPE:
        raise _bad(f"expected images of shape (n, 28, 28), got {x.shape}")
    if len(x) == 0:
        raise _bad("the batch is empty: send at least one 28x28 image")
    if len(x) > MAX_BATCH and os.environ.get(SERVING_ENV, "").lower() == "true":
        raise _bad(f"{len(x)} images in one request; at most {MAX_BATCH}: split the batch")
    x = x.astype(np.float32)
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 255:
        raise _bad("pixel values must be finite and within 0-255")
    return x / 255.0


def _bad(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


class DigitClassifier(mlflow.pyfunc.PythonModel):
    """Pixels in, digit probabilities out."""

    def load_context(self, context: Any) -> None:
        import keras

        import birnn.layers  # noqa: F401  (registers TiedBidirectional, carried with the model)

        self.model = keras.saving.load_model(context.artifacts["keras_model"], safe_mode=True)

    def predict(self, context: Any, model_input: Any, params: dict | None = None) -> np.ndarray:
        x = scale_pixels(model_input)
        # predict_on_batch per chunk: Keras' predict() sets up a data pipeline on every call,
        # ~40 ms here, which would dominate a one-image request.
        chunks = [self.model.predict_on_batch(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)]
        return np.concatenate([np.asarray(c) for c in chunks]).astype(np.float32, copy=False)
