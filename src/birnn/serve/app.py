"""The HTTP app of ``birnn serve``: MLflow's scoring protocol plus a page, ``/model`` and
``/metrics``, in front of a :class:`~birnn.serve.follow.Follower`.

Promises:
- ``/invocations``, ``/ping``, ``/health`` and ``/version`` answer as ``mlflow models serve``
  does: the same request formats (JSON, CSV, Parquet), the same 400s, through MLflow's own
  parsing (:func:`mlflow.pyfunc.scoring_server.invocations`; the Parquet layout ``birnn predict
  --server`` sends takes a shorter road to the same bytes, ``fast_parquet``). Each answer names
  the version that gave it in the ``Birnn-Model-Version`` header.
- A request reads the served model once, so one that is in flight when the alias moves finishes
  on the old model.
- Limits: a body over ``max_body`` bytes is answered 413 without being read (from its
  Content-Length; a chunked body is read up to the limit, then refused); at most
  ``digit_model.MAX_BATCH`` images per request (400, the model's own check); an image to
  ``/classify`` of at most ``MAX_PIXELS`` (400, checked before it is decoded); a request not
  answered within ``timeout`` seconds, its upload included, is answered 504 as MLflow does
  (its prediction still finishes in its thread).
- ``POST /classify`` takes an image file (the page's drawing, a photo, a scan), converts it as
  ``birnn predict`` does and answers the top 3 digits and the model that answered.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from importlib import resources
from typing import Any

import numpy as np
from fastapi import Request  # at module level: FastAPI resolves the handlers' annotations here

from birnn.serve import fast_parquet
from birnn.serve.client import VERSION_HEADER
from birnn.serve.follow import Follower, Served
from birnn.serve.metrics import CONTENT_TYPE_LATEST, Metrics

MAX_PIXELS = 4096 * 4096  # of an image sent to /classify: a small file can decode to gigabytes
ENDPOINTS = ("/invocations", "/classify", "/ping", "/health", "/version", "/model", "/metrics", "/")


class _Observed:
    """The served model as MLflow's ``invocations`` sees it; counts what it predicts."""

    def __init__(self, served: Served, metrics: Metrics) -> None:
        self.served = served
        self.metrics = metrics
        self.metadata = served.model.metadata

    def predict(self, data: Any, params: dict | None = None) -> Any:
        out = self.served.model.predict(data, params=params)
        self.metrics.predicted(self.served.label, out)
        return out


def _error(status: int, message: str, code: str = "BAD_REQUEST") -> tuple[int, bytes]:
    return status, json.dumps({"error_code": code, "message": message}).encode()


# MLflow's scoring server answers a request past its timeout with this (status 504).
TIMED_OUT = b"Request processing time exceeded limit"
NO_ANSWER = 499  # the metrics' status of a request that ended without an answer (client gone)


class Guard:
    """ASGI middleware around the app: the body limit, the request timeout (the body's upload
    included, as MLflow's scoring server times the whole request), and every request's status
    and latency in the metrics."""

    def __init__(self, app: Any, metrics: Metrics, max_body: int, timeout: float) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        self.timeout = timeout

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        state = {"status": NO_ANSWER, "started": False}

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        try:
            await asyncio.wait_for(self._guarded(scope, receive, sending), self.timeout)
        except TimeoutError:
            if not state["started"]:
                await _answer(sending, 504, TIMED_OUT)
        finally:
            self.metrics.request(endpoint, state["status"], time.perf_counter() - started)

    async def _guarded(self, scope: dict, receive: Any, send: Any) -> None:
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit():
            if int(length) > self.max_body:
                await self._too_large(send, int(length))  # refused before the body is read
                return
            await self.app(scope, receive, send)
            return
        # No Content-Length (a chunked body): read it here, up to the limit, and hand the app
        # the whole of it; the app never sees a body over the limit.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_body:
                await self._too_large(send, size)
                return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)

    async def _too_large(self, send: Any, size: int) -> None:
        mib = self.max_body / 2**20
        status, body = _error(
            413,
            f"request body of {size} bytes or more; at most {self.max_body} ({mib:g} MiB, "
            "birnn serve --max-body-mb): split the batch, or send Parquet",
            "REQUEST_LIMIT_EXCEEDED",
        )
        await _answer(send, status, body, close=True)


async def _answer(send: Any, status: int, body: bytes, close: bool = False) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:  # the rest of the body is never read: the connection cannot be reused
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def page() -> str:
    return resources.files("birnn.serve").joinpath("page.html").read_text(encoding="utf-8")


def create_app(follower: Follower, metrics: Metrics, max_body: int, timeout: float) -> Any:
    """The ASGI app (FastAPI, as MLflow's scoring server) serving ``follower.current``."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, Response
    from mlflow.exceptions import MlflowException
    from mlflow.version import VERSION

    from birnn.digit_model import SERVING_ENV

    # As MLflow's scoring server: the model refuses batches over MAX_BATCH when served.
    os.environ[SERVING_ENV] = "true"
    app = FastAPI(title="birnn serve", docs_url=None, redoc_url=None, openapi_url=None)
    html = page()

    def answer(
        status: int,
        body: bytes | str,
        served: Served | None = None,
        media: str = "application/json",
    ) -> Response:
        headers = {VERSION_HEADER: served.label} if served is not None else None
        return Response(content=body, status_code=status, media_type=media, headers=headers)

    @app.get("/ping")
    @app.get("/health")
    async def ping() -> Response:
        return answer(200, "\n")

    @app.get("/version")
    async def version() -> Response:
        return answer(200, VERSION)

    @app.get("/model")
    async def model() -> Response:
        served = follower.current
        body = {
            **served.describe(),
            "follows": follower.uri if follower.follows else None,
            "poll_interval_s": follower.poll_interval if follower.follows else None,
        }
        return answer(200, json.dumps(body), served)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(content=metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/")
    async def index() -> HTMLResponse:
        return HTMLResponse(html)

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        served = follower.current  # read once: a swap mid-request does not touch this one
        data = await request.body()
        content_type = request.headers.get("content-type") or ""
        observed = _Observed(served, metrics)
        schema = served.model.metadata.get_input_schema()
        try:
            result = await asyncio.to_thread(_invocations, data, content_type, observed, schema)
        except MlflowException as exc:
            return answer(exc.get_http_status_code(), exc.serialize_as_json(), served)
        return answer(result.status, result.response, served, result.mimetype)

    @app.post("/classify")
    async def classify(request: Request) -> Response:
        served = follower.current
        data = await request.body()
        result = await asyncio.to_thread(_classify, served, data, metrics)
        if isinstance(result, str):
            return answer(*_error(400, result), served)
        return answer(200, json.dumps(result), served)

    return Guard(app, metrics, max_body, timeout)


def _invocations(data: bytes, content_type: str, model: _Observed, schema: Any) -> Any:
    """MLflow's ``invocations``, with its answer to the Parquet layout ``birnn predict --server``
    sends computed without pandas (``fast_parquet``: the same bytes, or MLflow's own path)."""
    from mlflow.pyfunc import scoring_server

    fast = fast_parquet.invocations(data, content_type, model, schema)
    return fast or scoring_server.invocations(data, content_type, model, schema)


def _classify(served: Served, data: bytes, metrics: Metrics) -> dict | str:
    """An image file -> the top 3 digits (or the reason it cannot be read, as a string)."""
    from PIL import Image, UnidentifiedImageError

    from birnn.errors import DataError
    from birnn.predict import to_mnist

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:  # checked before decoding it
                return f"{img.width}x{img.height} pixels; at most {MAX_PIXELS:,} (e.g. 4096x4096)"
            img.load()
            pixels = to_mnist(img)
    except Image.DecompressionBombError as exc:
        return str(exc).split(".")[0]
    except UnidentifiedImageError:
        return "not an image (or a format Pillow cannot read)"
    except DataError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read the image: {exc}"
    probs = np.asarray(served.model.predict(pixels[None].astype(np.float32)))
    metrics.predicted(served.label, probs)
    order = np.argsort(-probs[0])[:3]
    return {
        "top": [{"digit": int(d), "probability": float(probs[0][d])} for d in order],
        "pixels": pixels.tolist(),  # what the model saw (28x28, 0-255)
        "model": {k: served.describe()[k] for k in ("registered_model", "version", "alias")},
    }
