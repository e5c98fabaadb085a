"""The Parquet shortcut answers exactly as MLflow's own path, and leaves every other body to it."""

from __future__ import annotations

import io
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.pyfunc import scoring_server
from mlflow.types import Schema, TensorSpec

from birnn.serve import fast_parquet
from birnn.serve.client import PARQUET, parquet_body


class Tiny(mlflow.pyfunc.PythonModel):
    """A real pyfunc with the served model's signature: (n, 28, 28) float32 -> (n, 10)."""

    def predict(self, context, model_input, params=None):
        if len(model_input) > 5:
            raise ValueError("at most 5 images")
        flat = np.asarray(model_input).reshape(len(model_input), -1)
        return (flat[:, :10] / 255.0 + flat.mean(axis=1, keepdims=True) / 1e3).astype(np.float32)


class Named(Tiny):
    """The same, for a signature whose one input is named: MLflow hands it a dict."""

    def predict(self, context, model_input, params=None):
        return super().predict(context, model_input["pixels"], params)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    path = Path(tmp_path_factory.mktemp("tiny")) / "model"
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 28, 28))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 10))]),
    )
    mlflow.pyfunc.save_model(str(path), python_model=Tiny(), signature=signature)
    return mlflow.pyfunc.load_model(str(path))


def table_body(row_group_size: int | None = None, **columns) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf, row_group_size=row_group_size)
    return buf.getvalue()


def pandas_body(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf)
    return buf.getvalue()


def mlflow_answer(model, body: bytes, content_type: str = PARQUET):
    schema = model.metadata.get_input_schema()
    try:
        res = scoring_server.invocations(body, content_type, model, schema)
        return res.status, res.response
    except MlflowException as exc:
        return exc.get_http_status_code(), exc.message


def fast_answer(model, body: bytes, content_type: str = PARQUET):
    schema = model.metadata.get_input_schema()
    res = fast_parquet.invocations(body, content_type, model, schema)
    return None if res is None else (res.status, res.response)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28)).astype(np.float32)


def test_the_client_layout_gets_mlflows_exact_bytes(model) -> None:
    for n in (1, 3, 5):
        body = parquet_body(images(n, n))
        fast = fast_answer(model, body)
        assert fast is not None
        assert fast == mlflow_answer(model, body)  # same status, same bytes
    # Plain (variable-length) lists of float32, each 784 values: the same.
    rows = images(2).reshape(2, -1)
    body = table_body(x=pa.array(list(rows), type=pa.list_(pa.float32())))
    assert fast_answer(model, body) == mlflow_answer(model, body)
    assert fast_answer(model, body)[0] == 200
    # Several row groups (one image each): the same.
    body = table_body(row_group_size=1, x=pa.array(list(rows), type=pa.list_(pa.float32())))
    assert fast_answer(model, body) == mlflow_answer(model, body)
    # What README's pandas snippet sends (a list column, the index in the metadata): the same.
    body = pandas_body(pd.DataFrame({"pixels": list(rows)}))
    assert fast_answer(model, body) == mlflow_answer(model, body)
    assert fast_answer(model, body)[0] == 200


def test_a_named_input_takes_the_shortcut_only_under_its_name(tmp_path: Path) -> None:
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 28, 28), "pixels")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 10))]),
    )
    mlflow.pyfunc.save_model(str(tmp_path / "m"), python_model=Named(), signature=signature)
    named = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    rows = list(images(2).reshape(2, -1))
    body = table_body(pixels=pa.array(rows, type=pa.list_(pa.float32())))
    assert fast_answer(named, body) is not None
    assert fast_answer(named, body) == mlflow_answer(named, body)
    other = table_body(other=pa.array(rows, type=pa.list_(pa.float32())))
    assert fast_answer(named, other) is None
    assert mlflow_answer(named, other)[0] == 400


# Bodies the shortcut leaves alone, with the status MLflow's own path gives each (a float64 or a
# NaN it accepts: the shortcut does not have to, since MLflow then answers it).
BAD = {
    "float64 values": (200, lambda: table_body(
        x=pa.array(list(images(2).reshape(2, -1)), type=pa.list_(pa.float64()))
    )),
    "a null value": (200, lambda: table_body(
        x=pa.array([[0.0] * 783 + [None]], type=pa.list_(pa.float32()))
    )),
    "783 values a row": (400, lambda: table_body(
        x=pa.array(list(images(2).reshape(2, -1)[:, :783]), type=pa.list_(pa.float32()))
    )),
    "rows of unequal width": (400, lambda: table_body(
        x=pa.array([[0.0] * 784, [0.0] * 1568], type=pa.list_(pa.float32()))
    )),
    "a null row": (400, lambda: table_body(
        x=pa.array([[0.0] * 784, None], type=pa.list_(pa.float32()))
    )),
    "two columns": (400, lambda: table_body(
        a=pa.array([[0.0] * 784], type=pa.list_(pa.float32())), b=pa.array([1])
    )),
    "scalars": (400, lambda: table_body(a=pa.array([1.0, 2.0], type=pa.float32()))),
    "no rows": (400, lambda: table_body(x=pa.array([], type=pa.list_(pa.float32())))),
    "not Parquet": (400, lambda: b"PAR1 but not really"),
    "structs": (400, lambda: table_body(
        x=pa.array([[{"a": 1.0}]], type=pa.list_(pa.struct([("a", pa.float64())])))
    )),
    "a pandas slice without row 0": (400, lambda: pandas_body(
        pd.DataFrame({"pixels": list(images(3).reshape(3, -1))}).iloc[1:]
    )),
    "more images than the model takes": (400, lambda: parquet_body(images(6))),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_any_other_body_is_left_to_mlflow(model, case: str) -> None:
    status, build = BAD[case]
    body = build()
    assert fast_answer(model, body) is None
    assert mlflow_answer(model, body)[0] == status


def test_content_type_parameters_go_mlflows_way(model) -> None:
    body = parquet_body(images(1))
    assert fast_answer(model, body, f"{PARQUET}; charset=utf-8") is None
    assert fast_answer(model, body, f" {PARQUET} ") is not None
