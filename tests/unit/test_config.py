"""params.yaml is validated strictly: every kind of bad value gets a one-line error naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from birnn.config import Params, flatten, load_params, params_from_dict
from birnn.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_repo_params_match_seed_network() -> None:
    p = load_params(REPO / "params.yaml")
    assert p.model.cell == "lstm"
    assert p.model.units == (50, 50)
    assert p.model.bidirectional and not p.model.tie_directions
    assert p.model.dropout == pytest.approx(0.2)
    assert p.train.optimizer == "adam"


def test_every_dataclass_field_is_in_params_yaml() -> None:
    # A knob that exists in code but not in params.yaml is undocumented and untracked by DVC.
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(raw) == set(Params().as_dict())
    for section, values in Params().as_dict().items():
        assert set(raw[section]) == set(values), section


def test_defaults_and_flatten() -> None:
    p = params_from_dict({"train": {"epochs": 3}})
    assert p.train.epochs == 3
    flat = flatten(p)
    assert flat["train.epochs"] == 3
    assert flat["model.units"] == [50, 50]


def test_int_accepted_for_float() -> None:
    p = params_from_dict({"train": {"learning_rate": 1}})
    assert isinstance(p.train.learning_rate, float)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # unknown keys, with a suggestion
        ({"trian": {}}, "unknown key 'trian' (did you mean 'train'?)"),
        ({"train": {"epoch": 3}}, "unknown key 'train.epoch' (did you mean 'epochs'?)"),
        # wrong types
        ({"train": {"epochs": "ten"}}, "train.epochs must be an integer, got 'ten'"),
        ({"train": {"epochs": 2.5}}, "train.epochs must be an integer"),
        ({"train": {"epochs": True}}, "train.epochs must be an integer"),
        ({"model": {"bidirectional": "yes"}}, "model.bidirectional must be true or false"),
        ({"model": {"units": 50}}, "model.units must be a list of int"),
        ({"model": {"units": [50, "x"]}}, "model.units[1] must be an integer"),
        ({"train": {"learning_rate": "fast"}}, "train.learning_rate must be a number"),
        ({"model": {"cell": 3}}, "model.cell must be a string"),
        ({"train": []}, "train must be a mapping"),
        # out of range
        ({"train": {"epochs": 0}}, "train.epochs must be >= 1, got 0"),
        ({"train": {"batch_size": 0}}, "train.batch_size must be >= 1, got 0"),
        ({"train": {"learning_rate": 0}}, "train.learning_rate must be > 0"),
        ({"preprocess": {"val_fraction": 1.0}}, "preprocess.val_fraction must be > 0 and < 1"),
        ({"preprocess": {"val_fraction": 0}}, "preprocess.val_fraction must be > 0 and < 1"),
        ({"preprocess": {"train_samples": 0}}, "preprocess.train_samples must be >= 10"),
        ({"model": {"units": []}}, "model.units must list at least one layer size"),
        ({"model": {"units": [50, 0]}}, "model.units[1] must be >= 1"),
        ({"model": {"cell": "lstn"}}, "model.cell must be one of lstm, gru, simple_rnn"),
        ({"model": {"merge_mode": "avg"}}, "did you mean 'ave'?"),
        ({"model": {"dropout": 1.0}}, "model.dropout must be >= 0 and < 1"),
        ({"model": {"bidirectional": False, "tie_directions": True}}, "model.tie_directions"),
        ({"data": {"dataset": "cifar"}}, "data.dataset must be one of mnist, fashion_mnist"),
        ({"evaluate": {"min_test_accuracy": 1.5}}, "evaluate.min_test_accuracy"),
        ({"tracking": {"experiment_name": " "}}, "tracking.experiment_name must be a non-empty"),
    ],
)
def test_bad_values_name_the_key(raw: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        params_from_dict(raw)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    f = tmp_path / "params.yaml"
    f.write_text("train:\n  epochs: 3\n  batch_size: [64\n")
    with pytest.raises(ConfigError, match=r"YAML syntax error at line \d+"):
        load_params(f)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")


def test_params_are_frozen() -> None:
    p = Params()
    with pytest.raises(AttributeError):
        p.train.epochs = 5  # type: ignore[misc]


@pytest.mark.parametrize("text", ["", "# nothing but a comment\n", "\n\n"])
def test_empty_params_file_is_an_error_not_the_code_defaults(tmp_path: Path, text: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"params\.yaml is empty"):
        load_params(path)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"registry": {"metric": "val_loss"}}, "registry.metric must be one of test_accuracy"),
        ({"registry": {"promote": "auto"}}, r"registry.promote was removed: .*`birnn promote`"),
        ({"registry": {"min_improvement": -0.1}}, "registry.min_improvement must be >= 0"),
        ({"registry": {"model_name": " "}}, "registry.model_name must be null or a non-empty"),
    ],
)
def test_registry_policy_is_validated(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        params_from_dict(raw)
