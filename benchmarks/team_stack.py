"""The team stack's start time, and a small real pipeline logged to it against the embedded
sqlite store: the same stages on the same data, alternating the two stores.

    BIRNN_DATA_MIRROR=$PWD/../shared/data/mnist python benchmarks/team_stack.py [--repeats 2]
        [--set preprocess.train_samples=3000 train.epochs=2]

Starts its own stack (PostgreSQL, SeaweedFS, mlflow server) in a temp folder on free loopback
ports and stops it at the end. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from birnn.stack import NO_TELEMETRY, Stack

ROOT = Path(__file__).resolve().parents[1]
TRACKED = ("train", "evaluate")  # the stages that talk to MLflow


def stage_seconds(stage: str, workdir: Path, uri: str) -> float:
    env = {**os.environ, **NO_TELEMETRY, "TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_TRACKING_URI": uri}
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", f"birnn.{stage}"], cwd=workdir, env=env,
                         capture_output=True, text=True)  # fmt: skip
    if res.returncode != 0:
        raise SystemExit(f"birnn.{stage} failed:\n{res.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[
        "preprocess.train_samples=3000", "train.epochs=2", "train.batch_size=64",
        "train.lr_schedule=constant"])  # fmt: skip
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="birnn-bench-stack-"))
    base.chmod(0o755)  # PostgreSQL runs as `nobody` under root and must enter it
    stack = Stack(base / "stack")
    try:
        start = time.perf_counter()
        parts = stack.up()
        total = time.perf_counter() - start
        print("| stack start | seconds |\n|---|---|")
        for service, seconds in parts.items():
            print(f"| {service} | {seconds:.1f} |")
        print(f"| **all three** | **{total:.1f}** |\n")

        work = base / "work"
        work.mkdir()
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        for item in args.set:
            key, value = item.split("=", 1)
            section, name = key.split(".")
            params[section][name] = yaml.safe_load(value)
        (work / "params.yaml").write_text(yaml.safe_dump(params))
        for stage in ("download", "preprocess"):
            stage_seconds(stage, work, "")

        stores = {"embedded sqlite": f"sqlite:///{work}/bench.db", "team stack": stack.mlflow_uri()}
        times: dict[str, dict[str, list[float]]] = {s: {t: [] for t in TRACKED} for s in stores}
        for _ in range(args.repeats):
            for store, uri in stores.items():
                for stage in TRACKED:
                    times[store][stage].append(stage_seconds(stage, work, uri))
        print(f"Median of {args.repeats} runs each, alternating, with {' '.join(args.set)}:\n")
        print("| store | train (s) | evaluate (s) | train + evaluate (s) |\n|---|---|---|---|")
        for store in stores:
            t, e = (statistics.median(times[store][s]) for s in TRACKED)
            print(f"| {store} | {t:.1f} | {e:.1f} | {t + e:.1f} |")
    finally:
        stack.down()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
