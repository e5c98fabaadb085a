"""Load ``params.yaml`` once, strictly, into frozen dataclasses.

Every stage calls :func:`load_params` first, so a bad value stops the stage with a one-line
error naming the key before any data is read or any model is built. Nothing happens at import.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from birnn.errors import ConfigError

DATASETS = ("mnist", "fashion_mnist")
CELLS = ("lstm", "gru", "simple_rnn")
MERGE_MODES = ("concat", "sum", "mul", "ave")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
LR_SCHEDULES = ("constant", "cosine")
# Metrics the registry may rank models by, and whether higher is better.
SELECTION_METRICS = {"test_accuracy": True, "macro_f1": True, "test_loss": False}
# Keys that existed once: what to do instead, in the one-line error.
REMOVED_KEYS = {
    "registry.promote": "evaluate only registers versions now; `birnn promote` moves the "
    "champion to the model of the committed dvc.lock (delete this key)",
}


@dataclass(frozen=True)
class DataConfig:
    """Which dataset the download stage fetches."""

    dataset: str = "mnist"

    def validate(self) -> None:
        _choice("data.dataset", self.dataset, DATASETS)


@dataclass(frozen=True)
class PreprocessConfig:
    """How the training set is split and optionally subsampled."""

    val_fraction: float = 0.1
    seed: int = 42
    train_samples: int | None = None

    def validate(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(
                f"preprocess.val_fraction must be > 0 and < 1, got {self.val_fraction}"
            )
        _at_least("preprocess.seed", self.seed, 0)
        if self.train_samples is not None:
            _at_least("preprocess.train_samples", self.train_samples, 10)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the (stacked, optionally bidirectional) recurrent network."""

    cell: str = "lstm"
    units: tuple[int, ...] = (50, 50)
    bidirectional: bool = True
    tie_directions: bool = False
    merge_mode: str = "concat"
    dropout: float = 0.2
    unroll: bool = True

    def validate(self) -> None:
        _choice("model.cell", self.cell, CELLS)
        _choice("model.merge_mode", self.merge_mode, MERGE_MODES)
        if not self.units:
            raise ConfigError("model.units must list at least one layer size, got []")
        for i, u in enumerate(self.units):
            _at_least(f"model.units[{i}]", u, 1)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be >= 0 and < 1, got {self.dropout}")
        if self.tie_directions and not self.bidirectional:
            raise ConfigError("model.tie_directions: true needs model.bidirectional: true")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings."""

    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 0.001
    optimizer: str = "adam"
    lr_schedule: str = "constant"
    early_stopping_patience: int | None = None
    augment_shift: int = 0
    seed: int = 42

    def validate(self) -> None:
        _at_least("train.epochs", self.epochs, 1)
        _at_least("train.batch_size", self.batch_size, 1)
        if not 0.0 < self.learning_rate <= 10.0:
            raise ConfigError(
                f"train.learning_rate must be > 0 and <= 10, got {self.learning_rate}"
            )
        _choice("train.optimizer", self.optimizer, OPTIMIZERS)
        _choice("train.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if self.early_stopping_patience is not None:
            _at_least("train.early_stopping_patience", self.early_stopping_patience, 1)
        if not 0 <= self.augment_shift <= 8:
            raise ConfigError(
                f"train.augment_shift must be within [0, 8], got {self.augment_shift}"
            )
        _at_least("train.seed", self.seed, 0)


@dataclass(frozen=True)
class EvaluateConfig:
    """Test-set evaluation and reporting."""

    batch_size: int = 1000
    misclassified_grid: int = 5
    min_test_accuracy: float = 0.97

    def validate(self) -> None:
        _at_least("evaluate.batch_size", self.batch_size, 1)
        _at_least("evaluate.misclassified_grid", self.misclassified_grid, 1)
        if not 0.0 <= self.min_test_accuracy <= 1.0:
            raise ConfigError(
                f"evaluate.min_test_accuracy must be within [0, 1], got {self.min_test_accuracy}"
            )


@dataclass(frozen=True)
class TrackingConfig:
    """Where MLflow runs go."""

    experiment_name: str = "birnn-mnist"

    def validate(self) -> None:
        if not self.experiment_name.strip():
            raise ConfigError("tracking.experiment_name must be a non-empty string")


@dataclass(frozen=True)
class RegistryConfig:
    """Which registered model evaluated models join, and what ``birnn promote`` compares."""

    model_name: str | None = None
    metric: str = "test_accuracy"
    min_improvement: float = 0.0

    def validate(self) -> None:
        if self.model_name is not None and not self.model_name.strip():
            raise ConfigError("registry.model_name must be null or a non-empty string")
        _choice("registry.metric", self.metric, tuple(SELECTION_METRICS))
        if not 0.0 <= self.min_improvement < 1.0:
            raise ConfigError(
                f"registry.min_improvement must be >= 0 and < 1, got {self.min_improvement}"
            )


@dataclass(frozen=True)
class Params:
    """All of ``params.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)

    @property
    def registered_model_name(self) -> str:
        """``registry.model_name``, or ``birnn-<dataset>`` so datasets never compete."""
        return self.registry.model_name or f"birnn-{self.data.dataset.replace('_', '-')}"

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (tuples as lists), the shape of ``params.yaml``."""
        out = dataclasses.asdict(self)
        for section in out.values():
            for k, v in section.items():
                if isinstance(v, tuple):
                    section[k] = list(v)
        return out


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        hint = difflib.get_close_matches(str(value), allowed, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}{extra}")


def _at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{key} must be >= {low}, got {value}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; return it in the dataclass' form."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list of {_type_name(item_tp)}, got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value))
    # bool is a subclass of int: reject `epochs: true` and `bidirectional: 1` alike.
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # programming error


def _unknown(key: str, allowed: list[str]) -> ConfigError:
    hint = difflib.get_close_matches(key.rsplit(".", 1)[-1], allowed, n=1)
    extra = f" (did you mean {hint[0]!r}?)" if hint else ""
    return ConfigError(f"unknown key {key!r}{extra}; allowed: {', '.join(allowed)}")


def _section(cls: type, name: str, raw: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{name} must be a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if f"{name}.{key}" in REMOVED_KEYS:
            raise ConfigError(f"{name}.{key} was removed: {REMOVED_KEYS[f'{name}.{key}']}")
        if key not in names:
            raise _unknown(f"{name}.{key}", names)
        kwargs[key] = _coerce(f"{name}.{key}", value, hints[key])
    obj = cls(**kwargs)
    obj.validate()
    return obj


def params_from_dict(raw: Any) -> Params:
    """Build and validate :class:`Params` from the parsed YAML mapping."""
    if not isinstance(raw, Mapping):
        raise ConfigError("params.yaml must be a mapping of sections")
    hints = typing.get_type_hints(Params)
    names = [f.name for f in dataclasses.fields(Params)]
    sections = {}
    for key, value in raw.items():
        if key not in names:
            raise _unknown(str(key), names)
        sections[key] = _section(hints[key], key, value)
    return Params(**sections)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; raise :class:`ConfigError` with a one-line message."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: run from the project root") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: YAML syntax error{where}: {exc.problem}") from None
    if raw is None:
        # An empty file would silently train with the code's defaults, not the project's.
        raise ConfigError(f"{path} is empty: restore it (git checkout {path.name})")
    return params_from_dict(raw)


def flatten(params: Params) -> dict[str, Any]:
    """Dotted names to values (``train.learning_rate``), for MLflow params."""
    flat: dict[str, Any] = {}
    for section, values in params.as_dict().items():
        for key, value in values.items():
            flat[f"{section}.{key}"] = value
    return flat
