"""The seed's training script, as a yardstick: its network and settings, timed end to end.

Two Bidirectional LSTM(50) (not unrolled), dropout 0.2, Adam 1e-3, batch 64, 10 epochs on all
60,000 training images, validating on the test set as the seed did (our pipeline does not).
Prints the wall time from start to finish, samples/s and test accuracy.

    python benchmarks/seed_baseline.py [/path/to/mnist] [--seed 0]   (default: $BIRNN_DATA_MIRROR)

``benchmarks/accuracy_per_second.py`` runs it beside the pipeline, seed by seed.
"""

from __future__ import annotations

import argparse
import os
import time

START = time.perf_counter()

from pathlib import Path  # noqa: E402

import keras  # noqa: E402
from keras import layers  # noqa: E402

from birnn.data import load_raw, scale  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?", default=os.environ.get("BIRNN_DATA_MIRROR"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not args.folder:
        raise SystemExit("give the MNIST folder, or set BIRNN_DATA_MIRROR")
    raw = load_raw(Path(args.folder))
    x_train, y_train = scale(raw["x_train"]), raw["y_train"]
    x_test, y_test = scale(raw["x_test"]), raw["y_test"]
    keras.utils.set_random_seed(args.seed)
    model = keras.Sequential(
        [
            keras.Input((28, 28)),
            layers.Bidirectional(layers.LSTM(50, return_sequences=True)),
            layers.Dropout(0.2),
            layers.Bidirectional(layers.LSTM(50)),
            layers.Dropout(0.2),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    fit_start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=64, epochs=10, validation_data=(x_test, y_test),
              verbose=2)  # fmt: skip
    fit_s = time.perf_counter() - fit_start
    _, acc = model.evaluate(x_test, y_test, verbose=0)
    total = time.perf_counter() - START
    rate = len(y_train) * 10 / fit_s
    print(f"seed script: total {total:.1f} s, fit {fit_s:.1f} s, {rate:.0f} samples/s")
    print(f"(samples/s include validation) test accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
