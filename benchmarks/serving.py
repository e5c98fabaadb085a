"""`birnn serve` on loopback, beside in-process predict, in one run on one machine.

Logs ``models/model.keras`` (the pipeline's trained model; ``--model`` for another) into a temp
sqlite store as the pipeline does, registers it twice (versions 1 and 2, version 2 champion,
version 1 previous), starts ``birnn serve`` on a free 127.0.0.1 port following the champion
(``--poll-interval 1``) and measures, with bounded loads:

- batches of 1, 32 and 256 real test images: images/s of in-process ``predict`` (the same
  ``mlflow.pyfunc`` model), served as JSON and served as Parquet (bodies encoded beforehand:
  the server's work is timed, not the client's), the three taken in interleaved rounds;
- 2,000 one-image JSON requests in a row: p50 / p99 latency;
- 8 concurrent clients sending one-image requests for a few seconds: requests/s, p99;
- ``birnn promote --rollback`` (a real promote run) until the first answer by the version it
  made champion: the command's own time, and the time to that answer.

    python benchmarks/serving.py [--requests 2000] [--batch-requests 60] [--rounds 5]
        [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from birnn.data import load_raw  # noqa: E402
from birnn.serve.client import PARQUET, VERSION_HEADER, parquet_body  # noqa: E402
from tests.helpers.serve import birnn_serve, copy_versions, move, started  # noqa: E402

NAME = "bench"


def rates(fns: list, bodies: list[list], per: int, rounds: int) -> list[float]:
    """Images/s of each ``fns[k]`` over its ``bodies[k]``, taken in ``rounds`` interleaved turns
    (a drift of the machine's speed then touches every way alike)."""
    for fn, mine in zip(fns, bodies, strict=True):
        fn(mine[0])  # warm: a new batch size traces the forward pass once
    spent = [0.0] * len(fns)
    for r in range(rounds):
        for k, (fn, mine) in enumerate(zip(fns, bodies, strict=True)):
            turn = mine[r::rounds]
            t = time.perf_counter()
            for b in turn:
                fn(b)
            spent[k] += time.perf_counter() - t
    return [per * len(mine) / s for mine, s in zip(bodies, spent, strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=REPO / "models/model.keras")
    ap.add_argument("--requests", type=int, default=2000, help="one-image requests in a row")
    ap.add_argument("--batch-requests", type=int, default=60, help="requests per batch size")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved turns per batch size")
    ap.add_argument("--seconds", type=float, default=5.0, help="of the 8-client load")
    args = ap.parse_args()
    if not args.model.is_file():
        raise SystemExit(f"{args.model} not found: `dvc pull` or `dvc repro` first")

    import mlflow
    from mlflow.tracking import MlflowClient

    from birnn import tracking

    pixels = load_raw(REPO / "data/raw")["x_test"]
    x = pixels.astype(np.float32)
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = store
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    mlflow.set_tracking_uri(store)
    with mlflow.start_run():
        source = tracking.log_model(args.model, pixels[:5])
    client = MlflowClient(store)
    v1, v2 = copy_versions(client, source, NAME, 2)
    move(client, NAME, v1, None)
    move(client, NAME, v2, v1)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/{v2}")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["registry"]["model_name"] = NAME
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    serve = birnn_serve("--model", f"models:/{NAME}@champion", "--poll-interval", "1")
    with started([(serve, tmp / "serve.log")], env, tmp) as (server,):
        url = f"{server.url}/invocations"
        s = requests.Session()
        as_json = {"Content-Type": "application/json"}
        as_parquet = {"Content-Type": PARQUET}

        print("| batch | in-process images/s | served JSON | served Parquet | JSON / in-process "
              "| Parquet / in-process |\n|---|---|---|---|---|---|")  # fmt: skip
        for batch in (1, 32, 256):
            starts = [(i * batch) % 9000 for i in range(args.batch_requests)]
            chunks = [x[i : i + batch] for i in starts]
            jsons = [
                json.dumps({"inputs": pixels[i : i + batch].tolist()}).encode() for i in starts
            ]
            parquets = [parquet_body(pixels[i : i + batch]) for i in starts]
            local, by_json, by_parquet = rates(
                [
                    model.predict,
                    lambda d: s.post(url, data=d, headers=as_json).raise_for_status(),
                    lambda d: s.post(url, data=d, headers=as_parquet).raise_for_status(),
                ],
                [chunks, jsons, parquets],
                batch,
                args.rounds,
            )
            print(f"| {batch} | {local:,.0f} | {by_json:,.0f} | {by_parquet:,.0f} | "
                  f"{by_json / local:.2f} | {by_parquet / local:.2f} |")  # fmt: skip

        one = [json.dumps({"inputs": pixels[i : i + 1].tolist()}).encode() for i in range(100)]
        lat = []
        for i in range(args.requests):
            t = time.perf_counter()
            s.post(url, data=one[i % 100], headers=as_json).raise_for_status()
            lat.append(time.perf_counter() - t)
        ms = np.array(lat) * 1000
        print(f"\n{args.requests} one-image JSON requests in a row: p50 "
              f"{np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms")  # fmt: skip

        done: list[float] = []
        stop = threading.Event()

        def client_loop() -> None:
            with requests.Session() as c:
                while not stop.is_set():
                    t = time.perf_counter()
                    c.post(url, data=one[len(done) % 100], headers=as_json).raise_for_status()
                    done.append(time.perf_counter() - t)

        threads = [threading.Thread(target=client_loop) for _ in range(8)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        ms = np.array(done) * 1000
        print(f"8 concurrent clients, one image each request: {len(done) / wall:,.0f} requests/s "
              f"over {wall:.1f} s, p50 {np.percentile(ms, 50):.1f} ms, "
              f"p99 {np.percentile(ms, 99):.1f} ms")  # fmt: skip

        # A real promote: roll the champion back to version 1; time until version 1 answers.
        answered: list[float] = []

        def watch() -> None:
            while not answered:
                r = requests.post(url, data=one[0], headers=as_json, timeout=60)
                if r.headers.get(VERSION_HEADER) == v1:
                    answered.append(time.perf_counter())
                time.sleep(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "birnn", "promote", "--rollback"], cwd=tmp,
                       env=env, check=True, capture_output=True)  # fmt: skip
        promoted = time.perf_counter()
        watcher.join(timeout=120)
        if not answered:
            raise SystemExit("the new champion never answered")
        print(f"`birnn promote --rollback`: {promoted - t0:.1f} s; first answer by version {v1} "
              f"{answered[0] - t0:.1f} s after the command started "
              f"({answered[0] - promoted:.1f} s after it ended; poll interval 1 s)")  # fmt: skip
        print(f"\n(store and logs in {tmp})")


if __name__ == "__main__":
    main()
