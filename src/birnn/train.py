"""Stage 3, train: fit the network on the train split, validating on the validation split.

The test set is never read here. After every epoch a checkpoint (model, optimizer state,
history, MLflow run id) is written to ``.checkpoints/train``; if the stage is killed, the next
``dvc repro`` resumes at the following epoch in the same MLflow run, provided params and data
are unchanged (a fingerprint guards against mixing checkpoints of different runs).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Any

import keras
import numpy as np

from birnn import paths
from birnn.augment import augmented_batches
from birnn.checkpoint import (
    HISTORY_COLUMNS,
    Checkpoint,
    CheckpointCallback,
    ResumableEarlyStopping,
    fingerprint,
)
from birnn.config import Params, TrainConfig, load_params
from birnn.data import load_split
from birnn.files import atomic_path, remove_stale_temps, write_csv, write_json, write_text
from birnn.model import build_model, summary_text
from birnn.stage import run_stage, set_op_threads

log = logging.getLogger(__name__)

TRAIN_FILES = (paths.PROCESSED_DIR / "train.npz", paths.PROCESSED_DIR / "val.npz")


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
    """sha256 of every weight's bytes in order: equal iff the trained weights are equal.

    Variable paths are left out: Keras names them differently in a model loaded from a file
    (a resumed training), though the weights are the same.
    """
    digest = hashlib.sha256()
    for w in model.weights:
        arr = np.ascontiguousarray(keras.ops.convert_to_numpy(w))
        digest.update(str(arr.dtype).encode() + str(arr.shape).encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def callbacks_for(cfg: TrainConfig, ckpt: Checkpoint, extra: list[Any]) -> list[Any]:
    """Learning-rate schedule, optional early stopping, checkpointing and extra callbacks."""
    cbs: list[Any] = [
        keras.callbacks.LearningRateScheduler(lambda epoch, _lr: learning_rate_at(cfg, epoch))
    ]
    stopper = None
    if cfg.early_stopping_patience is not None:
        stopper = ResumableEarlyStopping(cfg.early_stopping_patience, ckpt.early_stopping)
        cbs.append(stopper)
    # The checkpoint is saved before extra (MLflow) logging: a kill in between leaves an epoch
    # checkpointed but not logged, which the resume back-fills; never one logged twice.
    return [*cbs, CheckpointCallback(ckpt, stopper), *extra]


def fit(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    cfg: TrainConfig,
    callbacks: list[Any],
    initial_epoch: int = 0,
    verbose: int | str = "auto",
    epochs: int | None = None,
) -> float:
    """Run ``model.fit``; return the wall time in seconds.

    The input is one seeded stream over all remaining epochs (with ``augment_shift: 0`` too):
    Keras' own shuffling draws from the global RNG, so a resumed run would see other batches.
    With steps_per_epoch set, Keras keeps reading the same iterator from epoch to epoch.
    """
    epochs = cfg.epochs if epochs is None else epochs
    stream = augmented_batches(
        *train, cfg.batch_size, cfg.augment_shift, cfg.seed, initial_epoch, epochs
    )
    start = time.perf_counter()
    model.fit(
        stream,
        steps_per_epoch=math.ceil(len(train[1]) / cfg.batch_size),
        shuffle=False,
        epochs=epochs,
        initial_epoch=initial_epoch,
        validation_data=val,
        callbacks=callbacks,
        verbose=verbose,
    )
    return time.perf_counter() - start


def compile_model(model: keras.Model, cfg: TrainConfig) -> None:
    """Attach optimizer, loss and accuracy metric, their variables made here.

    A ``tf.function`` that creates variables on its first call is traced twice; Keras would
    otherwise create the optimizer's slots and the metric's totals inside the first training
    step. Made here, the step is traced once (measured: ~2 s of CPU less per train process).
    """
    model.compile(
        optimizer=make_optimizer(cfg),
        loss="sparse_categorical_crossentropy",
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    model.optimizer.build(model.trainable_variables)


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


def restore_or_build(params: Params, ckpt: Checkpoint) -> keras.Model:
    """The checkpoint's model (optimizer state included) to resume, or a new compiled one."""
    seed_everything(params.train.seed)
    if ckpt.epochs_done:
        log.info("resuming from checkpoint after epoch %d", ckpt.epochs_done)
        return ckpt.load_model()
    model = build_model(params.model)
    compile_model(model, params.train)
    return model


def train_and_log(params: Params, model: keras.Model, ckpt: Checkpoint, data: tuple) -> dict:
    """Fit in the active MLflow run (per-epoch metrics), write the outputs, log the results."""
    from birnn import lineage, tracking

    (train, val), summary = data, summary_text(model)
    log.info("model:\n%s", summary)
    tracking.log_text(summary, "model_summary.txt")
    tracking.log_datasets({"train": (train, TRAIN_FILES[0]), "validation": (val, TRAIN_FILES[1])})
    initial_epoch = ckpt.epochs_done
    callbacks = callbacks_for(params.train, ckpt, [tracking.epoch_logger()])
    # Early stopping had ended the run before a kill: no more epochs, only its end (the best
    # weights restored), as the uninterrupted run had.
    epochs = initial_epoch if ckpt.stopped_early else params.train.epochs
    seconds = fit(model, train, val, params.train, callbacks, initial_epoch, epochs=epochs)
    info = write_outputs(model, ckpt, summary, len(train[1]), len(val[1]), initial_epoch, seconds)
    tracking.log_metrics(
        {"train_wall_time_s": seconds, "train_samples_per_s": info["samples_per_s"]}
    )
    tracking.log_artifacts([paths.HISTORY_CSV, paths.PARAMS])
    tracking.set_tags(
        {"weights_sha256": info["weights_sha256"], **lineage.stage_data_hashes("train")}
    )
    return info


def main() -> None:
    """``python -m birnn.train``"""

    def stage() -> None:
        set_op_threads()  # before TensorFlow's first op
        from birnn import tracking

        params = load_params(paths.PARAMS)
        client = tracking.connect(params)  # fails fast, before any data or training
        train, val = (load_split(paths.PROCESSED_DIR, name) for name in ("train", "val"))
        ckpt = Checkpoint.load(paths.CHECKPOINT_DIR, fingerprint(params, list(TRAIN_FILES)))
        model = restore_or_build(params, ckpt)
        sizes = {"data.train_samples": len(train[1]), "data.val_samples": len(val[1])}
        ckpt.run_id = tracking.resume_or_start_run(client, params, ckpt.run_id, ckpt.history, sizes)
        with tracking.closing_run():
            info = train_and_log(params, model, ckpt, (train, val))
        ckpt.clear()
        log.info("trained %d epochs in %.1f s (%.0f samples/s)", info["epochs"],
                 info["train_wall_time_s"], info["samples_per_s"])  # fmt: skip

    run_stage("train", stage)


if __name__ == "__main__":
    main()
