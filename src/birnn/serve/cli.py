"""``birnn serve``: the champion behind one URL that follows promotions.

    birnn serve                                  # models:/<registry name>@champion on :8000
    birnn serve --port 5001 --poll-interval 10
    birnn serve --model models:/birnn-mnist/3    # a fixed version (or runs:/ID/model): no polling

Fails with one line and exit 1 when the first model cannot be found or loaded; after that, a
registry outage or a version that will not load only logs, and the current model keeps serving.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence

log = logging.getLogger("birnn.serve")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="birnn serve",
        description="Serve a model (default: the champion) over HTTP: MLflow's /invocations, "
        "a page to draw digits at /, /model and Prometheus /metrics.",
    )
    ap.add_argument(
        "--model",
        help="models:/NAME@ALIAS (followed), models:/NAME/VERSION or "
        "runs:/ID/model (default: models:/<params.yaml's registry name>@champion)",
    )
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    ap.add_argument(
        "--poll-interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how often an alias is looked up again (default 30)",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=float(os.environ.get("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT", 60)),
        help="answer 504 to a request not done by then (default 60, as MLflow)",
    )
    ap.add_argument(
        "--max-body-mb",
        type=float,
        default=16.0,
        metavar="MiB",
        help="larger request bodies are refused with 413 (default 16)",
    )
    ap.add_argument(
        "--low-confidence",
        type=float,
        default=0.5,
        metavar="P",
        help="count answers whose top probability is below P (default 0.5)",
    )
    ap.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's start-up lines, library warnings and each request",
    )
    return ap


def serve(args: argparse.Namespace) -> None:
    import uvicorn
    from mlflow.tracking import MlflowClient

    from birnn import tracking
    from birnn.errors import ConfigError
    from birnn.predict import Predictor, default_model_uri
    from birnn.serve.app import create_app
    from birnn.serve.follow import Follower
    from birnn.serve.metrics import Metrics

    if args.poll_interval <= 0 or args.timeout <= 0 or args.max_body_mb <= 0:
        raise ConfigError("--poll-interval, --timeout and --max-body-mb must be positive")
    if not 0 <= args.low_confidence <= 1:
        raise ConfigError("--low-confidence must be within 0-1")
    uri = args.model or default_model_uri()
    sock = _listen(args.host, args.port)  # before the model loads: a port in use fails at once
    store = tracking.tracking_uri()
    # A lookup of a dead server fails in seconds (MLflow's own client retries for minutes).
    for key, value in tracking.HTTP_LIMITS.items():
        os.environ.setdefault(key, value)
    Predictor._check_store(store)
    import mlflow

    mlflow.set_tracking_uri(store)
    follower = Follower(uri, lambda: MlflowClient(store), args.poll_interval)
    metrics = Metrics(args.low_confidence)

    metrics.serving(follower.current.labels())

    def on_swap(old, new) -> None:
        metrics.swaps.inc()
        metrics.serving(new.labels(), old.labels())

    follower.on_swap = on_swap
    follower.on_poll_error = metrics.poll_errors.inc
    app = create_app(follower, metrics, int(args.max_body_mb * 2**20), args.timeout)
    served = follower.current
    log.info(
        "serving %s%s at http://%s:%d (%s)",
        served.uri,
        f" ({follower.alias}, checked every {args.poll_interval:g} s)" if follower.follows else "",
        args.host,
        args.port,
        "page at /, MLflow scoring at /invocations",
    )
    follower.start()
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        workers=1,
        log_level="info" if args.verbose else "warning",
        access_log=args.verbose,
        timeout_graceful_shutdown=10,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        follower.stop()
        sock.close()


def _listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound and listening; one line if it cannot be."""
    from birnn.errors import ConfigError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # The protocol named (IPPROTO_TCP), not left 0: asyncio sets TCP_NODELAY only on
        # connections of such a socket, and without it a small answer waits out the client's
        # delayed ACK (measured: one-image requests 48 ms instead of 5 ms at the median).
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def main(argv: Sequence[str] | None = None) -> None:
    """``birnn serve``"""
    from birnn.predict import quiet_libraries
    from birnn.stage import one_line_errors, setup_logging

    args = parser().parse_args(argv)
    if not args.verbose:
        quiet_libraries()
    setup_logging()
    with one_line_errors("birnn serve"):
        serve(args)
    sys.exit(0)
