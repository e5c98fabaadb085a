"""sweep.yaml validation, trial values and their -S arguments, on tiny inline inputs."""

from __future__ import annotations

import optuna
import pytest
import yaml

from birnn.errors import ConfigError
from birnn.sweep.space import (
    apply_overrides,
    broadcast,
    set_args,
    suggest,
    sweep_from_dict,
)
from tests.conftest import REPO
from tests.helpers.sweep import PARAMS, SPACE, cfg


def test_the_committed_sweep_file_is_valid() -> None:
    raw = yaml.safe_load((REPO / "sweep.yaml").read_text())
    c = sweep_from_dict(raw, PARAMS)
    assert c.metric == "val_accuracy" and c.direction == "maximize"
    assert {d.key for d in c.space} == {
        "train.learning_rate", "train.batch_size", "model.cell", "model.units"
    }  # fmt: skip


def test_defaults_and_kinds() -> None:
    c = cfg()
    kinds = {d.key: d.kind for d in c.space}
    assert kinds == {"train.learning_rate": "float", "train.batch_size": "choice",
                     "model.cell": "choice", "model.units": "int"}  # fmt: skip
    assert (c.study, c.trials, c.seed, c.direction) == ("sweep", 12, 0, "maximize")
    assert cfg(objective={"metric": "val_loss"}).direction == "minimize"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"epochs": 3}, "unknown key 'epochs'"),
        ({"space": {"train.epoch": [1, 2]}}, "'train.epoch' is not in params.yaml"),
        ({"space": {"learning_rate": [1]}}, "is not a params.yaml key"),
        ({"space": {"train.learning_rate": {"low": 0.01, "high": 0.01}}}, "empty range"),
        ({"space": {"train.batch_size": []}}, "empty list of choices"),
        ({"space": {"train.learning_rate": {"low": 0, "high": 1, "log": True}}}, "low > 0"),
        ({"space": {"train.epochs": {"low": 1, "high": 2.5}}}, "must be integers"),
        ({"space": {"train.learning_rate": {"low": 1e-3, "hi": 1}}}, "unknown key 'hi'"),
        ({"space": {"model.cell": ["lstm", "transformer"]}}, "value 'transformer'"),
        ({"space": {"model.dropout": {"low": 0.1, "high": 1.5}}}, "value 1.5"),
        ({"objective": {"metric": "test_accuracy"}}, "must be a validation metric"),
        ({"objective": {"direction": "up"}}, "maximize or minimize"),
        ({"trials": 0}, "trials must be an integer >= 1"),
        ({"study": "my study"}, "study must be a name"),
        ({"fixed": {"train.batch_size": 64}}, "both fixed and searched"),
        ({"fixed": {"train.nope": 1}}, "'train.nope' is not in params.yaml"),
    ],
)
def test_a_bad_sweep_file_is_one_line_naming_the_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^sweep\.yaml: ") as err:
        sweep_from_dict({"space": SPACE, **raw}, PARAMS)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_scalar_for_a_list_key_sets_every_layer() -> None:
    assert broadcast(PARAMS, {"model.units": 64}) == {"model.units": [64, 64]}
    out = apply_overrides(PARAMS, {"model.units": 64, "train.epochs": 2})
    assert out["model"]["units"] == [64] * len(PARAMS["model"]["units"])
    assert out["train"]["epochs"] == 2
    assert PARAMS["model"]["units"] == [50, 50]  # the input is left as it was


def test_suggested_values_stay_in_the_space_and_lists_travel_as_text() -> None:
    c = sweep_from_dict({"space": {**SPACE, "model.units": [[32, 32], [64]]}}, PARAMS)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(10):
        trial = study.ask()
        values = {d.key: suggest(trial, d) for d in c.space}
        assert 1e-4 <= values["train.learning_rate"] <= 1e-2
        assert values["train.batch_size"] in (64, 128)
        assert values["model.units"] in ([32, 32], [64])
        assert trial.params["model.units"] in ("[32, 32]", "[64]")
        study.tell(trial, 0.5)


def test_set_args_are_yaml_values() -> None:
    overrides = {"train.learning_rate": 0.001, "model.units": [64, 64], "model.cell": "gru"}
    assert set_args(overrides) == [
        "-S", "train.learning_rate=0.001", "-S", "model.units=[64, 64]", "-S", "model.cell=gru"
    ]  # fmt: skip
