"""Resume state of the train stage, saved after every epoch in ``.checkpoints/train``.

What is saved: the model with its optimizer state, the state of every random seed generator in
the model (the dropout masks; Keras' model file does not keep them), the history, the MLflow run
id, and the early-stopping state (epochs waited, best ``val_loss``, best weights). The data
order and augmentation are seeded by epoch. So a resumed run ends with the same weights and
history as one that was never interrupted (``tests/integration/test_reliability.py``).

Each epoch's files go into their own folder (``epoch-0003/``) and ``state.json``, written
last and atomically, names the folder: the state is the commit point, so a kill at any moment
(the kill points ``checkpoint.files`` and ``checkpoint.state`` of :mod:`birnn.crash`) leaves a
state whose files are all there and all of that one epoch. The previous folder goes only after.

A fingerprint guards the checkpoint: the ``model`` and ``train`` params, the exact training
data, the source of every module the train stage runs, and the TensorFlow/Keras versions.
Change any of them and the next run starts fresh instead of resuming old weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from birnn import crash
from birnn.config import Params
from birnn.files import file_sha256, load_npz, save_npz, write_json
from birnn.lineage import code_digest, stage_modules

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")


def fingerprint(
    params: Params, data_files: list[Path], code_files: list[Path] | None = None
) -> str:
    """Identify one training job: params, data, the train stage's code and library versions."""
    import tensorflow as tf

    code = code_files if code_files is not None else stage_modules("train")
    payload = {
        "model": asdict(params.model),
        "train": asdict(params.train),
        "data": {p.name: file_sha256(p) for p in data_files},
        "code": code_digest(code),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def seed_state_variables(model: keras.Model) -> list:
    """The state variables of the model's random seed generators, in layer order.

    They decide the dropout masks of the coming steps; Keras does not save them with the model.
    """
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' EarlyStopping on ``val_loss`` whose state survives a resume."""

    def __init__(self, patience: int, state: dict[str, Any] | None = None) -> None:
        super().__init__(monitor="val_loss", patience=patience, restore_best_weights=True)
        self._saved = state

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self._saved:
            self.wait = self._saved["wait"]
            self.best = self._saved["best"]
            self.best_epoch = self._saved["best_epoch"]
            self.best_weights = self._saved.get("best_weights")

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps (best weights separately, as arrays)."""
        best = None if self.best is None else float(self.best)
        # Whether it has stopped the run: a resume after that trains no more epochs.
        stopped = bool(self.model is not None and self.model.stop_training)
        return {"wait": self.wait, "best": best, "best_epoch": self.best_epoch, "stopped": stopped}


@dataclass
class Checkpoint:
    """Resume state, saved after every epoch."""

    directory: Path
    fingerprint: str
    epochs_done: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    run_id: str | None = None
    early_stopping: dict[str, Any] | None = None

    @property
    def stopped_early(self) -> bool:
        """Early stopping ended the run at the saved epoch."""
        return bool(self.early_stopping and self.early_stopping.get("stopped"))

    @property
    def state_path(self) -> Path:
        return self.directory / "state.json"

    @property
    def files_dir(self) -> Path:
        """The folder of the saved epoch's files (named by the state)."""
        return self.directory / f"epoch-{self.epochs_done:04d}"

    @property
    def model_path(self) -> Path:
        return self.files_dir / "model.keras"

    @property
    def best_weights_path(self) -> Path:
        return self.files_dir / "best_weights.npz"

    @property
    def seeds_path(self) -> Path:
        return self.files_dir / "seed_states.npz"

    def load_model(self) -> keras.Model:
        """The checkpointed model, optimizer and seed-generator states included."""
        model = keras.saving.load_model(self.model_path, safe_mode=True)
        states = seed_state_variables(model)
        if self.seeds_path.is_file():
            saved = load_npz(self.seeds_path)
            for i, var in enumerate(states):
                var.assign(saved[f"s{i}"])
        return model

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
        ckpt.epochs_done = int(state.get("epochs_done", 0))
        if state.get("fingerprint") != fp or not ckpt.model_path.is_file():
            log.info(
                "checkpoint in %s is from other params, data, code or library versions: "
                "starting fresh",
                directory,
            )
            shutil.rmtree(directory, ignore_errors=True)
            return cls(directory=directory, fingerprint=fp)
        ckpt.history = list(state["history"])
        ckpt.run_id = state.get("run_id")
        ckpt.early_stopping = state.get("early_stopping")
        if ckpt.early_stopping and ckpt.best_weights_path.is_file():
            arrays = load_npz(ckpt.best_weights_path)
            ckpt.early_stopping["best_weights"] = [arrays[f"w{i}"] for i in range(len(arrays))]
        return ckpt

    def save(self, model: keras.Model, early_stopping: ResumableEarlyStopping | None) -> None:
        """The epoch's files into their own folder, then the state that names it (atomically,
        the commit point), then the previous epoch's folder removed."""
        folder = self.files_dir
        if folder.exists():
            shutil.rmtree(folder)  # left by a save that was killed before its state
        folder.mkdir(parents=True)
        model.save(self.model_path)
        seeds = {f"s{i}": np.asarray(v) for i, v in enumerate(seed_state_variables(model))}
        save_npz(self.seeds_path, **seeds)
        if early_stopping is not None:
            self.early_stopping = early_stopping.state()
            if early_stopping.best_weights is not None:
                weights = {
                    f"w{i}": np.asarray(w) for i, w in enumerate(early_stopping.best_weights)
                }
                save_npz(self.best_weights_path, **weights)
        crash.point("checkpoint.files")
        state = {
            "fingerprint": self.fingerprint,
            "epochs_done": self.epochs_done,
            "history": self.history,
            "run_id": self.run_id,
            "early_stopping": self.early_stopping,
        }
        write_json(self.state_path, state)
        crash.point("checkpoint.state")
        for old in self.directory.glob("epoch-*"):
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class CheckpointCallback(keras.callbacks.Callback):
    """Append each epoch's logs to the history and save a resumable checkpoint."""

    def __init__(self, ckpt: Checkpoint, early_stopping: ResumableEarlyStopping | None) -> None:
        super().__init__()
        self.ckpt = ckpt
        self.early_stopping = early_stopping

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        row = {"epoch": epoch + 1, **{k: float(logs[k]) for k in HISTORY_COLUMNS[1:] if k in logs}}
        self.ckpt.history.append(row)
        self.ckpt.epochs_done = epoch + 1
        self.ckpt.save(self.model, self.early_stopping)
