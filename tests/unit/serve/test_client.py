"""`birnn predict --server`'s Parquet body is what MLflow's scoring server reads as the model's
(n, 28, 28) float32 tensor, values unchanged."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from mlflow.models.utils import _enforce_tensor_schema
from mlflow.types import Schema, TensorSpec

from birnn.serve.client import parquet_body


def test_parquet_body_is_the_models_tensor() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    frame = pd.read_parquet(io.BytesIO(parquet_body(pixels)))  # as the scoring server does
    schema = Schema([TensorSpec(np.dtype(np.float32), (-1, 28, 28))])
    tensor = _enforce_tensor_schema(frame, schema)
    assert tensor.dtype == np.float32
    np.testing.assert_array_equal(tensor, pixels.astype(np.float32))


def test_the_readme_request_reads_the_same() -> None:
    # README's Python example: a pandas column of float32 rows, written by pandas.
    pixels = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    body = io.BytesIO()
    rows = list(pixels.reshape(len(pixels), -1).astype(np.float32))
    pd.DataFrame({"pixels": rows}).to_parquet(body)
    frame = pd.read_parquet(io.BytesIO(body.getvalue()))
    schema = Schema([TensorSpec(np.dtype(np.float32), (-1, 28, 28))])
    np.testing.assert_array_equal(_enforce_tensor_schema(frame, schema), pixels.astype(np.float32))
