"""Training throughput: the pipeline's training loop against a bare ``model.fit``.

Builds the model from ``params.yaml`` and trains it on the processed arrays (run ``dvc repro
preprocess`` first), alternating a bare ``fit`` (no callbacks) and the train stage's own loop
(its input path with augmentation when on, LR schedule, checkpoint after every epoch, MLflow
per-epoch logging into a throwaway sqlite store) in the same process, so both see the same
machine state. With augmentation on, a third run feeds the stage's augmented input to a fit with
no callbacks, which separates the input's cost from logging/checkpoint overhead. Steady state =
epochs after the first (which includes graph tracing). Prints samples/s, ratios, epoch time and
peak RSS.

    python benchmarks/train_throughput.py [--samples 20000] [--epochs 3] [--rounds 2]
        [--set train.batch_size=128 --set model.unroll=false ...] [--torch]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import yaml

from birnn import paths
from birnn.checkpoint import Checkpoint
from birnn.config import params_from_dict
from birnn.data import load_split
from birnn.model import build_model
from birnn.stage import set_op_threads
from birnn.train import callbacks_for, compile_model, fit, seed_everything


class EpochClock:
    """Per-epoch wall time around every other callback: ``start`` goes first, ``stop`` last."""

    def __init__(self) -> None:
        self.times: list[float] = []
        clock = self

        class Start(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
                clock._t = time.perf_counter()

        class Stop(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                clock.times.append(time.perf_counter() - clock._t)

        self.start, self.stop = Start(), Stop()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_params_with(overrides: list[str]):
    raw = yaml.safe_load(paths.PARAMS.read_text())
    for item in overrides:
        key, value = item.split("=", 1)
        section, name = key.split(".")
        raw[section][name] = yaml.safe_load(value)
    return params_from_dict(raw)


def run_keras(params, train, val, epochs: int, kind: str, workdir: Path) -> list[float]:
    """Train a fresh model; return per-epoch wall times (the timer wraps every callback)."""
    seed_everything(params.train.seed)
    model = build_model(params.model)
    compile_model(model, params.train)
    clock = EpochClock()
    cfg = dataclasses.replace(params.train, epochs=epochs)
    if kind == "pipeline":
        from birnn import tracking

        # The train stage's own loop: its input path (augmentation when on), LR schedule,
        # per-epoch checkpoint and MLflow logging.
        ckpt = Checkpoint(directory=workdir / "ckpt", fingerprint="bench")
        tracking.start_run(params)
        cbs = [clock.start, *callbacks_for(cfg, ckpt, [tracking.EpochLogger()]), clock.stop]
        fit(model, train, val, cfg, cbs, verbose=0)
        tracking.end_run()
    elif kind == "input":
        # The stage's input path (the augmented tf.data stream) with no callbacks at all.
        fit(model, train, val, cfg, [clock.start, clock.stop], verbose=0)
    else:
        model.fit(
            train[0], train[1], batch_size=cfg.batch_size, epochs=epochs,
            validation_data=val, shuffle=True, callbacks=[clock.start, clock.stop], verbose=0,
        )  # fmt: skip
    return clock.times


def run_torch(params, train, epochs: int) -> list[float] | None:
    """The same network in PyTorch eager, for reference (skipped without torch)."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(params.train.seed)
    units = params.model.units

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers, d = [], 28
            for h in units:
                layers.append(torch.nn.LSTM(d, h, batch_first=True, bidirectional=True))
                d = 2 * h
            self.rnns = torch.nn.ModuleList(layers)
            self.drop = torch.nn.Dropout(params.model.dropout)
            self.out = torch.nn.Linear(d, 10)

        def forward(self, x):
            for rnn in self.rnns:
                x = self.drop(rnn(x)[0])
            return self.out(x[:, -1])

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=params.train.learning_rate)
    x = torch.from_numpy(train[0])
    y = torch.from_numpy(train[1].astype(np.int64))
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), params.train.batch_size):
            idx = perm[i : i + params.train.batch_size]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t)
    return times


def steady(times: list[float]) -> float:
    return float(np.median(times[1:])) if len(times) > 1 else times[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=20000, help="training samples (0 = all)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--torch", action="store_true", help="also time PyTorch eager")
    args = ap.parse_args()
    set_op_threads()  # the train stage's threads per op, before TensorFlow's first op

    params = load_params_with(args.set)
    x, y = load_split(paths.PROCESSED_DIR, "train")
    if args.samples:
        x, y = x[: args.samples], y[: args.samples]
    val = load_split(paths.PROCESSED_DIR, "val")
    n = len(y)
    print(
        f"model {params.model}\ntrain batch_size={params.train.batch_size} samples={n} "
        f"val={len(val[1])} epochs={args.epochs} rounds={args.rounds} cpus={os.cpu_count()}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/bench.db"
        from birnn import tracking

        tracking.connect(params)
        kinds = ["bare", "pipeline"] + (["input"] if params.train.augment_shift else [])
        results: dict[str, list[float]] = {k: [] for k in kinds}
        for r in range(args.rounds):
            for kind in kinds if r % 2 == 0 else kinds[::-1]:
                times = run_keras(params, (x, y), val, args.epochs, kind, Path(tmp))
                results[kind].append(steady(times))
                print(
                    f"round {r + 1} {kind:8s} epoch times {[round(t, 2) for t in times]} "
                    f"-> {n / steady(times):7.0f} samples/s (incl. validation)",
                    flush=True,
                )

    med = {k: float(np.median(v)) for k, v in results.items()}
    labels = {
        "bare": "bare fit (plain arrays, no callbacks)",
        "input": "bare fit (stage's augmented input, no callbacks)",
        "pipeline": "pipeline loop (stage's input and callbacks)",
    }
    print()
    for kind in kinds:
        print(f"{labels[kind]:50s} {n / med[kind]:7.0f} samples/s  epoch {med[kind]:6.2f} s")
    print(f"ratio pipeline / bare fit on plain arrays: {med['bare'] / med['pipeline']:.3f}")
    if "input" in med:
        print(
            f"ratio pipeline / bare fit on the same input (logging, checkpoint, history "
            f"overhead): {med['input'] / med['pipeline']:.3f}"
        )
    if args.torch:
        times = run_torch(params, (x, y), args.epochs)
        if times is None:
            print("torch: not installed")
        else:
            print(f"torch eager:   {n / steady(times):8.0f} samples/s (no validation)")
    print(f"peak RSS: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
