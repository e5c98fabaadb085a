"""Stage 3, train: fit the network on the train split, validating on the validation split.

The test set is never read here. After every epoch a checkpoint (model, optimizer state,
history, MLflow run id) is written to ``.checkpoints/train``; if the stage is killed, the next
``dvc repro`` resumes at the following epoch in the same MLflow run, provided params and data
are unchanged (a fingerprint guards against mixing checkpoints of different runs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from birnn import paths
from birnn.cli import run_stage
from birnn.config import Params, TrainConfig, load_params
from birnn.data import load_split
from birnn.files import (
    atomic_path,
    file_sha256,
    remove_stale_temps,
    write_csv,
    write_json,
    write_text,
)
from birnn.model import build_model, summary_text

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TF ops deterministic."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def make_optimizer(cfg: TrainConfig) -> keras.optimizers.Optimizer:
    """The optimizer named by ``train.optimizer``."""
    kinds = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "rmsprop": keras.optimizers.RMSprop,
        "sgd": keras.optimizers.SGD,
    }
    return kinds[cfg.optimizer](learning_rate=cfg.learning_rate)


def learning_rate_at(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate for 0-based ``epoch``: constant, or cosine decay to 1% over the epochs."""
    if cfg.lr_schedule == "cosine":
        floor = 0.01 * cfg.learning_rate
        frac = epoch / max(cfg.epochs, 1)
        return floor + (cfg.learning_rate - floor) * 0.5 * (1.0 + math.cos(math.pi * frac))
    return cfg.learning_rate


def weights_digest(model: keras.Model) -> str:
    """sha256 of every weight's bytes in order: equal iff the trained weights are equal."""
    digest = hashlib.sha256()
    for w in model.weights:
        arr = np.ascontiguousarray(keras.ops.convert_to_numpy(w))
        digest.update(w.path.encode())
        digest.update(str(arr.dtype).encode() + str(arr.shape).encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def fingerprint(params: Params, data_files: list[Path]) -> str:
    """Identify one training job: model and train params plus the exact input data."""
    payload = {
        "model": asdict(params.model),
        "train": asdict(params.train),
        "data": {p.name: file_sha256(p) for p in data_files},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass
class Checkpoint:
    """Resume state, saved after every epoch."""

    directory: Path
    fingerprint: str
    epochs_done: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    run_id: str | None = None

    @property
    def model_path(self) -> Path:
        return self.directory / "model.keras"

    @property
    def state_path(self) -> Path:
        return self.directory / "state.json"

    @classmethod
    def load(cls, directory: Path, fp: str) -> Checkpoint:
        """The saved state if it belongs to this job; else a fresh one (stale files removed)."""
        ckpt = cls(directory=directory, fingerprint=fp)
        if not ckpt.state_path.is_file():
            return ckpt
        try:
            state = json.loads(ckpt.state_path.read_text())
        except (OSError, json.JSONDecodeError):
            state = {}
        if state.get("fingerprint") != fp or not ckpt.model_path.is_file():
            log.info("checkpoint in %s is from other params or data: starting fresh", directory)
            shutil.rmtree(directory, ignore_errors=True)
            return ckpt
        ckpt.epochs_done = int(state["epochs_done"])
        ckpt.history = list(state["history"])
        ckpt.run_id = state.get("run_id")
        return ckpt

    def save(self, model: keras.Model) -> None:
        """Write model then state, each atomically, so a kill leaves the last whole pair."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.model_path) as tmp:
            model.save(tmp)
        state = {
            "fingerprint": self.fingerprint,
            "epochs_done": self.epochs_done,
            "history": self.history,
            "run_id": self.run_id,
        }
        write_json(self.state_path, state)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def shift_batch(images: Any, max_shift: int, seed: Any) -> Any:
    """Translate each image of a batch by its own random (dy, dx) in [-max_shift, max_shift].

    Zero-filled, with stateless random ops: the same ``seed`` (int64 pair) gives the same shifts.
    """
    import tensorflow as tf

    n, h, w = tf.shape(images)[0], images.shape[1], images.shape[2]
    span = 2 * max_shift + 1
    offsets = tf.random.stateless_uniform([2, n], seed=seed, maxval=span, dtype=tf.int32)
    padded = tf.pad(images, [[0, 0], [max_shift, max_shift], [max_shift, max_shift]])
    rows = offsets[0][:, None] + tf.range(h)[None, :]
    cols = offsets[1][:, None] + tf.range(w)[None, :]
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(out, cols, axis=2, batch_dims=1)


def augmented_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    max_shift: int,
    seed: int,
    start_epoch: int,
    epochs: int,
) -> Any:
    """A tf.data stream of shuffled, randomly shifted batches for epochs start_epoch..epochs-1.

    Epoch e's order is a stateless shuffle seeded by (seed, e) and batch i's shifts are seeded by
    (seed, e, i): runs repeat exactly and a resumed run sees what an uninterrupted one would.
    The work runs in tf.data's threads, prefetched, off the training step's critical path.
    """
    import tensorflow as tf

    xs, ys, n = tf.constant(x), tf.constant(y), len(y)

    def one_epoch(epoch: Any) -> Any:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch])
        )

        def make(i: Any, idx: Any) -> Any:
            batch_seed = tf.stack([tf.constant(seed, tf.int64), epoch * 1_000_003 + i])
            return shift_batch(tf.gather(xs, idx), max_shift, batch_seed), tf.gather(ys, idx)

        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size).enumerate().map(make)

    epochs_ds = tf.data.Dataset.range(start_epoch, epochs)
    return epochs_ds.flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)


class CheckpointCallback(keras.callbacks.Callback):
    """Append each epoch's logs to the history and save a resumable checkpoint."""

    def __init__(self, ckpt: Checkpoint) -> None:
        super().__init__()
        self.ckpt = ckpt

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        row = {"epoch": epoch + 1, **{k: float(logs[k]) for k in HISTORY_COLUMNS[1:] if k in logs}}
        self.ckpt.history.append(row)
        self.ckpt.epochs_done = epoch + 1
        self.ckpt.save(self.model)


def callbacks_for(cfg: TrainConfig, ckpt: Checkpoint, extra: list[Any]) -> list[Any]:
    """Learning-rate schedule, optional early stopping, checkpointing and extra callbacks."""
    cbs: list[Any] = [
        keras.callbacks.LearningRateScheduler(lambda epoch, _lr: learning_rate_at(cfg, epoch))
    ]
    if cfg.early_stopping_patience is not None:
        cbs.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=cfg.early_stopping_patience,
                restore_best_weights=True,
            )
        )
    # The checkpoint is saved before extra (MLflow) logging: a kill in between leaves an epoch
    # checkpointed but not logged, which the resume back-fills; never one logged twice.
    return [*cbs, CheckpointCallback(ckpt), *extra]


def fit(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    cfg: TrainConfig,
    callbacks: list[Any],
    initial_epoch: int = 0,
    verbose: int | str = "auto",
) -> float:
    """Run ``model.fit``; return the wall time in seconds."""
    if cfg.augment_shift:
        # One stream over all remaining epochs; with steps_per_epoch set, Keras keeps reading
        # the same iterator from epoch to epoch.
        stream = augmented_batches(
            *train, cfg.batch_size, cfg.augment_shift, cfg.seed, initial_epoch, cfg.epochs
        )
        steps = math.ceil(len(train[1]) / cfg.batch_size)
        inputs = {"x": stream, "steps_per_epoch": steps, "shuffle": False}
    else:
        inputs = {"x": train[0], "y": train[1], "batch_size": cfg.batch_size, "shuffle": True}
    start = time.perf_counter()
    model.fit(
        **inputs,
        epochs=cfg.epochs,
        initial_epoch=initial_epoch,
        validation_data=val,
        callbacks=callbacks,
        verbose=verbose,
    )
    return time.perf_counter() - start


def compile_model(model: keras.Model, cfg: TrainConfig) -> None:
    """Attach optimizer, loss and accuracy metric."""
    model.compile(
        optimizer=make_optimizer(cfg),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def write_outputs(
    model: keras.Model,
    ckpt: Checkpoint,
    summary: str,
    n_train: int,
    n_val: int,
    initial_epoch: int,
    seconds: float,
) -> dict[str, Any]:
    """Model, history, summary and ``train.json``, each written atomically."""
    epochs = len(ckpt.history)
    remove_stale_temps(paths.MODELS_DIR, paths.REPORTS_DIR)
    # Throughput of this process only: a resumed run trained fewer epochs here.
    trained = n_train * (epochs - initial_epoch)
    with atomic_path(paths.MODEL_FILE) as tmp:
        model.save(tmp)
    write_csv(
        paths.HISTORY_CSV,
        HISTORY_COLUMNS,
        [[row.get(c, "") for c in HISTORY_COLUMNS] for row in ckpt.history],
    )
    write_text(paths.MODEL_SUMMARY, summary)
    info = {
        "mlflow_run_id": ckpt.run_id,
        "weights_sha256": weights_digest(model),
        "epochs": epochs,
        "train_samples": n_train,
        "val_samples": n_val,
        "train_wall_time_s": round(seconds, 3),
        "samples_per_s": round(trained / seconds, 1) if seconds > 0 else 0.0,
    }
    write_json(paths.TRAIN_JSON, info)
    return info


def main() -> None:
    """``python -m birnn.train``"""

    def stage() -> None:
        from birnn import tracking

        params = load_params(paths.PARAMS)
        cfg = params.train
        client = tracking.connect(params)  # fails fast, before any data or training
        data_files = [paths.PROCESSED_DIR / "train.npz", paths.PROCESSED_DIR / "val.npz"]
        train = load_split(paths.PROCESSED_DIR, "train")
        val = load_split(paths.PROCESSED_DIR, "val")

        ckpt = Checkpoint.load(paths.CHECKPOINT_DIR, fingerprint(params, data_files))
        seed_everything(cfg.seed)
        if ckpt.epochs_done and tracking.run_exists(client, ckpt.run_id):
            log.info("resuming from checkpoint after epoch %d", ckpt.epochs_done)
            model = keras.saving.load_model(ckpt.model_path, safe_mode=True)
        else:
            ckpt = Checkpoint(directory=paths.CHECKPOINT_DIR, fingerprint=ckpt.fingerprint)
            model = build_model(params.model)
            compile_model(model, cfg)

        summary = summary_text(model)
        log.info("model:\n%s", summary)
        sizes = {"data.train_samples": len(train[1]), "data.val_samples": len(val[1])}
        ckpt.run_id = tracking.start_run(params, run_id=ckpt.run_id, extra_params=sizes)
        if ckpt.history:
            tracking.backfill_epochs(ckpt.history)

        initial_epoch = ckpt.epochs_done
        with tracking.closing_run():
            tracking.log_text(summary, "model_summary.txt")
            seconds = fit(
                model,
                train,
                val,
                cfg,
                callbacks_for(cfg, ckpt, [tracking.EpochLogger()]),
                initial_epoch=initial_epoch,
            )
            info = write_outputs(
                model, ckpt, summary, len(train[1]), len(val[1]), initial_epoch, seconds
            )
            tracking.log_metrics(
                {"train_wall_time_s": seconds, "train_samples_per_s": info["samples_per_s"]}
            )
            tracking.log_artifacts([paths.HISTORY_CSV, paths.PARAMS])
            tracking.set_tags({"weights_sha256": info["weights_sha256"]})
        ckpt.clear()
        log.info(
            "trained %d epochs in %.1f s (%.0f samples/s)",
            info["epochs"],
            seconds,
            info["samples_per_s"],
        )

    run_stage("train", stage)


if __name__ == "__main__":
    main()
