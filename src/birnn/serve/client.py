"""A client of a running ``birnn serve`` (or ``mlflow models serve``): ``birnn predict --server``.

Batches go as Parquet: one column, one row of 784 float32 pixel values (0-255) per image, which
MLflow's scoring server reshapes to the model's ``(n, 28, 28)`` tensor without the per-value
work JSON needs (docs/serving.md has the figures). Fails with one
:class:`~birnn.errors.TrackingError` line when the server cannot be reached or refuses a batch.
"""

from __future__ import annotations

import io
import json

import numpy as np

from birnn.digit_model import MAX_BATCH
from birnn.errors import TrackingError

PARQUET = "application/vnd.apache.parquet"
VERSION_HEADER = "Birnn-Model-Version"


def parquet_body(pixels: np.ndarray) -> bytes:
    """``(n, 28, 28)`` pixels -> a one-column Parquet file of flattened float32 rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = np.ascontiguousarray(pixels, dtype=np.float32).reshape(len(pixels), -1)
    column = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])
    buf = io.BytesIO()
    pq.write_table(pa.table({"pixels": column}), buf, compression="none")
    return buf.getvalue()


class ServerPredictor:
    """Pixels 0-255 -> probabilities, from the server at ``url``."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        import requests

        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.version: str | None = None
        try:
            self.session.get(f"{self.url}/ping", timeout=10).raise_for_status()
        except requests.RequestException as exc:
            raise TrackingError(
                f"server {self.url} is unreachable ({type(exc).__name__})"
            ) from None
        self.uri = self.url

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        import requests

        out = []
        for start in range(0, len(pixels), MAX_BATCH):
            body = parquet_body(pixels[start : start + MAX_BATCH])
            try:
                res = self.session.post(
                    f"{self.url}/invocations",
                    data=body,
                    headers={"Content-Type": PARQUET},
                    timeout=self.timeout,
                )
            except requests.RequestException as exc:
                raise TrackingError(
                    f"server {self.url} did not answer ({type(exc).__name__})"
                ) from None
            if res.status_code != 200:
                try:
                    message = res.json().get("message", "")
                except ValueError:
                    message = res.text
                first = (message.strip().splitlines() or [""])[0][:200]
                raise TrackingError(f"server {self.url} answered {res.status_code}: {first}")
            self.version = res.headers.get(VERSION_HEADER, self.version)
            out.append(np.asarray(json.loads(res.content)["predictions"], dtype=np.float32))
        return np.concatenate(out)
