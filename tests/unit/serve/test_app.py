"""The serving app's guard, driven as an ASGI server drives it: a body over the limit is
answered 413 without the app reading it (by Content-Length, or once a chunked body passes the
limit, also in front of a real FastAPI app); a request past the timeout, upload included, is
answered 504 as MLflow's scoring server does; every request's status lands in the metrics."""

from __future__ import annotations

import asyncio
import json

from fastapi import FastAPI, Request
from fastapi.responses import Response

from birnn.serve.app import TIMED_OUT, Guard
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


def call(
    guard: Guard, chunks: list[bytes], length: int | None, delay: float = 0.0
) -> tuple[int, bytes, int]:
    """(status, body, chunks read from the client); ``delay``: seconds before each chunk."""
    headers = [(b"content-length", str(length).encode())] if length is not None else []
    scope = {"type": "http", "path": "/invocations", "method": "POST", "headers": headers,
             "query_string": b"", "root_path": ""}  # fmt: skip
    given = {"n": 0}
    sent: list[dict] = []

    async def receive() -> dict:
        await asyncio.sleep(delay)
        i = given["n"]
        given["n"] += 1
        return {"type": "http.request", "body": chunks[i], "more_body": i < len(chunks) - 1}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    return sent[0]["status"], sent[1]["body"], given["n"]


def test_bodies_over_the_limit_are_refused_without_being_read() -> None:
    metrics = Metrics(0.5)
    guard = Guard(echo_app, metrics, max_body=1000, timeout=30)
    assert call(guard, [b"x" * 600, b"x" * 400], 1000)[:2] == (200, b"1000")
    status, body, read = call(guard, [b"x" * 600, b"x" * 600], 1200)
    assert (status, read) == (413, 0)  # from the header: not one chunk read
    assert "at most 1000" in json.loads(body)["message"]
    status, _, read = call(guard, [b"x" * 600, b"x" * 600, b"x" * 600], None)
    assert (status, read) == (413, 2)  # no header: cut off at the chunk that passed the limit
    assert call(guard, [b"x" * 600, b"x" * 300], None)[:2] == (200, b"900")  # chunked, whole
    text = metrics.exposition().decode()
    assert 'birnn_requests_total{endpoint="/invocations",status="413"} 2.0' in text
    assert 'birnn_requests_total{endpoint="/invocations",status="200"} 2.0' in text


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        return Response(str(len(await request.body())))

    return app


def test_a_chunked_body_over_the_limit_is_413_in_front_of_a_real_app() -> None:
    guard = Guard(fastapi_app(), Metrics(0.5), max_body=1000, timeout=30)
    assert call(guard, [b"x" * 600, b"x" * 600, b"x" * 600], None)[0] == 413  # not a 500
    assert call(guard, [b"x" * 600, b"x" * 300], None)[:2] == (200, b"900")


def test_a_slow_upload_is_answered_504_as_mlflow_does() -> None:
    metrics = Metrics(0.5)
    guard = Guard(fastapi_app(), metrics, max_body=1000, timeout=0.3)
    status, body, _ = call(guard, [b"x" * 10] * 5, 50, delay=0.2)
    assert (status, body) == (504, TIMED_OUT)
    assert 'status="504"} 1.0' in metrics.exposition().decode()


def test_a_port_in_use_is_one_line_before_anything_loads() -> None:
    import socket

    import pytest

    from birnn.errors import ConfigError
    from birnn.serve.cli import _listen

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"^cannot listen on 127.0.0.1:{port}: "):
            _listen("127.0.0.1", port)


def test_connections_to_the_served_socket_send_small_answers_at_once() -> None:
    """asyncio sets TCP_NODELAY only on connections of a socket made for IPPROTO_TCP; without it
    a small answer waits for the client's delayed ACK (~40 ms a request)."""
    import socket

    from birnn.serve.cli import _listen

    async def main() -> int:
        made: asyncio.Future = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.Transport) -> None:
                sock = transport.get_extra_info("socket")
                made.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=_listen("127.0.0.1", 0))
        async with server:
            port = server.sockets[0].getsockname()[1]
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            nodelay = await asyncio.wait_for(made, 10)
            writer.close()
        return nodelay

    assert asyncio.run(main()) != 0
