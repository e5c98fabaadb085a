"""Wall time and peak RSS of each stage, and how train time grows with data and width.

Runs the real stage commands (``python -m birnn.<stage>``) in a temp folder on real MNIST
(``BIRNN_DATA_MIRROR`` must point at the dataset files) and prints Markdown tables.

    python benchmarks/pipeline_costs.py stages   [--set train.epochs=1 ...]
    python benchmarks/pipeline_costs.py growth   [--samples 5000 15000 0] [--units 25 100]
    python benchmarks/pipeline_costs.py noop     # time a no-op `dvc repro` in this project
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("download", "preprocess", "train", "evaluate")


def run_measured(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, peak RSS MiB) of that process tree's largest member."""
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/b.db",
    }
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.read()[-3000:]}")
    return wall, usage.ru_maxrss / 1024


def params_with(overrides: list[str]) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for item in overrides:
        key, value = item.split("=", 1)
        section, name = key.split(".")
        params[section][name] = yaml.safe_load(value)
    return params


def stage_table(workdir: Path, overrides: list[str]) -> None:
    (workdir / "params.yaml").write_text(yaml.safe_dump(params_with(overrides)))
    print("| stage | wall time (s) | peak RSS (MiB) |\n|---|---|---|")
    for stage in STAGES:
        wall, rss = run_measured([sys.executable, "-m", f"birnn.{stage}"], workdir)
        print(f"| {stage} | {wall:.1f} | {rss:.0f} |", flush=True)
    print("\nmetrics:", (workdir / "reports/metrics.json").read_text())


def steady_epoch_time(workdir: Path, run_id: str) -> float:
    """Median time of the epochs after the first (which includes graph tracing)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir}/b.db")
    times = sorted(client.get_metric_history(run_id, "epoch_time_s"), key=lambda m: m.step)
    later = [m.value for m in times[1:]] or [times[0].value]
    return sorted(later)[len(later) // 2]


def growth_table(workdir: Path, grid: list[tuple[int, int]], epochs: int) -> None:
    print(
        "| train_samples | units | steady epoch (s) | samples/s | train stage wall (s) | ", end=""
    )
    print("peak RSS (MiB) |\n|---|---|---|---|---|---|")
    for n, u in grid:
        params = params_with([f"train.epochs={epochs}"])
        params["preprocess"]["train_samples"] = n or None
        params["model"]["units"] = [u, u]
        (workdir / "params.yaml").write_text(yaml.safe_dump(params))
        if not (workdir / "data/raw").is_dir():
            run_measured([sys.executable, "-m", "birnn.download"], workdir)
        run_measured([sys.executable, "-m", "birnn.preprocess"], workdir)
        wall, rss = run_measured([sys.executable, "-m", "birnn.train"], workdir)
        info = json.loads((workdir / "reports/train.json").read_text())
        epoch = steady_epoch_time(workdir, info["mlflow_run_id"])
        rate = info["train_samples"] / epoch
        row = f"| {info['train_samples']} | [{u}, {u}] | {epoch:.1f} | {rate:.0f} | {wall:.1f} |"
        print(f"{row} {rss:.0f} |", flush=True)


def noop_time() -> None:
    times = []
    for _ in range(3):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=ROOT, text=True,
                             capture_output=True, check=True).stdout  # fmt: skip
        times.append(time.perf_counter() - start)
    print(out.strip().splitlines()[-1] if out.strip() else "")
    print("no-op dvc repro:", ", ".join(f"{t:.2f} s" for t in times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("stages", "growth", "noop"))
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument(
        "--samples",
        type=int,
        nargs="+",
        default=[5000, 15000, 0],
        help="train_samples to try at units 50 (0 = all)",
    )
    ap.add_argument(
        "--units",
        type=int,
        nargs="+",
        default=[25, 100],
        help="more widths to try at 15000 samples",
    )
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    if args.what == "noop":
        noop_time()
        return
    if not os.environ.get("BIRNN_DATA_MIRROR"):
        print("note: BIRNN_DATA_MIRROR is unset; the download stage uses the public mirrors")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.what == "stages":
            stage_table(workdir, args.set)
        else:
            grid = [(n, 50) for n in args.samples] + [(15000, u) for u in args.units]
            growth_table(workdir, grid, args.epochs)
        shutil.rmtree(workdir / "data", ignore_errors=True)


if __name__ == "__main__":
    main()
