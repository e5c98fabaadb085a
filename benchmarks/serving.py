"""Latency and throughput of the served model on loopback, beside in-process predict.

Logs ``models/model.keras`` (the pipeline's trained model; ``--model`` for another) into a temp
sqlite store as the pipeline does, starts ``mlflow models serve --env-manager local`` on a free
127.0.0.1 port, and measures with a bounded load (a fixed number of sequential requests):

- one-image requests: p50 / p99 latency;
- batches of 1, 32 and 256 real test images: images/s served, and images/s of the same
  ``mlflow.pyfunc`` model's ``predict`` in this process (the ceiling).

    python benchmarks/serving.py [--requests 200] [--batch-requests 20]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from birnn.data import load_raw  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=REPO / "models/model.keras")
    ap.add_argument("--requests", type=int, default=200, help="one-image requests timed")
    ap.add_argument("--batch-requests", type=int, default=20, help="requests per batch size")
    args = ap.parse_args()

    import mlflow

    from birnn import tracking

    pixels = load_raw(REPO / "data/raw")["x_test"]  # uint8: JSON of small integers
    x = pixels.astype(np.float32)
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    with mlflow.start_run():
        uri = tracking.log_model(args.model, x[:5].astype(np.uint8))
    model = mlflow.pyfunc.load_model(uri)

    port = free_port()
    url = f"http://127.0.0.1:{port}/invocations"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the server did not come up")
            time.sleep(0.5)
        session = requests.Session()
        for i in range(10):  # warm-up
            session.post(url, json={"inputs": pixels[i : i + 1].tolist()}, timeout=60)

        lat = []
        for i in range(args.requests):
            body = {"inputs": pixels[i % len(x) : i % len(x) + 1].tolist()}
            t = time.perf_counter()
            r = session.post(url, json=body, timeout=60)
            lat.append(time.perf_counter() - t)
            r.raise_for_status()
        lat_ms = np.array(lat) * 1000
        print(f"one-image requests: n={len(lat)}  p50 {np.percentile(lat_ms, 50):.1f} ms  "
              f"p99 {np.percentile(lat_ms, 99):.1f} ms")  # fmt: skip

        print("| batch | served images/s | in-process predict images/s | served / in-process |")
        print("|---|---|---|---|")
        for batch in (1, 32, 256):
            bodies = [x[(i * batch) % 9000 : (i * batch) % 9000 + batch] for i in range(20)]
            # Bodies encoded beforehand: the server's work is timed, not this client's.
            encoded = [
                json.dumps({"inputs": b.astype(np.uint8).tolist()}).encode()
                for b in bodies[: args.batch_requests]
            ]
            headers = {"Content-Type": "application/json"}
            # Warm-up: the first request of a new batch size traces the forward pass.
            session.post(url, data=encoded[0], headers=headers, timeout=120).raise_for_status()
            t = time.perf_counter()
            for data in encoded:
                session.post(url, data=data, headers=headers, timeout=120).raise_for_status()
            served = batch * min(len(bodies), args.batch_requests) / (time.perf_counter() - t)
            model.predict(bodies[0])  # warm
            t = time.perf_counter()
            for b in bodies[: args.batch_requests]:
                model.predict(b)
            local = batch * min(len(bodies), args.batch_requests) / (time.perf_counter() - t)
            print(f"| {batch} | {served:,.0f} | {local:,.0f} | {served / local:.2f} |")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
