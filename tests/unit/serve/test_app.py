"""The serving app's guard, driven as an ASGI server drives it: a body over the limit is
answered 413 without the app reading it (by Content-Length, or once a body without one passes
the limit); every request's status lands in the metrics."""

from __future__ import annotations

import asyncio
import json

from birnn.serve.app import Guard
from birnn.serve.metrics import Metrics


async def echo_app(scope, receive, send) -> None:
    """Reads the whole body, answers its length."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


def call(guard: Guard, chunks: list[bytes], length: int | None) -> tuple[int, bytes, int]:
    """(status, body, chunks the app was given)."""
    headers = [(b"content-length", str(length).encode())] if length is not None else []
    scope = {"type": "http", "path": "/invocations", "method": "POST", "headers": headers}
    given = {"n": 0}
    sent: list[dict] = []

    async def receive() -> dict:
        i = given["n"]
        given["n"] += 1
        return {"type": "http.request", "body": chunks[i], "more_body": i < len(chunks) - 1}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    return sent[0]["status"], sent[1]["body"], given["n"]


def test_bodies_over_the_limit_are_refused_without_being_read() -> None:
    metrics = Metrics(0.5)
    guard = Guard(echo_app, metrics, max_body=1000)
    assert call(guard, [b"x" * 600, b"x" * 400], 1000)[:2] == (200, b"1000")
    status, body, read = call(guard, [b"x" * 600, b"x" * 600], 1200)
    assert (status, read) == (413, 0)  # from the header: not one chunk read
    assert "at most 1000" in json.loads(body)["message"]
    status, _, read = call(guard, [b"x" * 600, b"x" * 600, b"x" * 600], None)
    assert (status, read) == (413, 2)  # no header: cut off at the chunk that passed the limit
    text = metrics.exposition().decode()
    assert 'birnn_requests_total{endpoint="/invocations",status="413"} 2.0' in text
    assert 'birnn_requests_total{endpoint="/invocations",status="200"} 1.0' in text
