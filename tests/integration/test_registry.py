"""The registry against a real MLflow store: registration never moves an alias, versions are
found by the model's digests, a move writes its audit record before any alias, scores fall back
to the run's metric, and every move is kept for the history."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from birnn import registry
from birnn.config import params_from_dict
from tests.helpers.registry import NAME, evaluated_version

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture()
def client(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    yield MlflowClient(uri)
    mlflow.set_tracking_uri(None)


def move(version: str, previous: str | None, action: str = "promote", at: int = 0) -> registry.Move:
    return registry.Move(
        action, version, previous, "c0ffee", "why", "tester", f"2026-11-30T00:00:{at:02d}Z"
    )


def test_registering_carries_its_tags_and_moves_no_alias(client) -> None:
    v = evaluated_version(client, 0.9, "w1")
    assert v.tags["test_accuracy"] == "0.900000" and v.tags[registry.WEIGHTS] == "w1"
    assert registry.alias(client, NAME, registry.CHAMPION) is None
    assert mlflow.get_run(v.run_id).data.tags["registry.version"] == "1"


def test_a_move_writes_its_record_before_any_alias(client, monkeypatch) -> None:
    evaluated_version(client, 0.9, "w1")
    evaluated_version(client, 0.95, "w2")
    registry.move_champion(client, NAME, move("1", None))
    seen = []
    real = MlflowClient.set_registered_model_alias

    def spy(self, name, alias, version):
        seen.append((alias, dict(self.get_model_version(name, version).tags)))
        return real(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", spy)
    registry.move_champion(client, NAME, move("2", "1"))
    # previous first, then champion; the new champion's record was there before either.
    assert [alias for alias, _ in seen] == ["previous", "champion"]
    assert seen[1][1]["promoted_previous"] == "1" and seen[1][1]["promoted_commit"] == "c0ffee"
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"
    assert str(client.get_model_version_by_alias(NAME, "previous").version) == "1"


def test_history_keeps_every_move_even_to_the_same_version(client) -> None:
    evaluated_version(client, 0.9, "w1")
    evaluated_version(client, 0.95, "w2")
    moves = [move("1", None), move("2", "1", at=1), move("1", "2", "rollback", 2)]
    for m in [*moves, move("2", "1", at=3)]:
        registry.move_champion(client, NAME, m)
    moves = registry.history(client, NAME)
    assert [(m["action"], m["version"], m["previous"]) for m in moves] == [
        ("promote", "1", None),
        ("promote", "2", "1"),
        ("rollback", "1", "2"),
        ("promote", "2", "1"),
    ]


def test_a_block_is_cleared_when_the_version_is_chosen_again(client) -> None:
    evaluated_version(client, 0.9, "w1")
    registry.block(client, NAME, "1", "rolled back")
    assert client.get_model_version(NAME, "1").tags[registry.BLOCKED] == "rolled back"
    registry.move_champion(client, NAME, move("1", None))
    assert registry.BLOCKED not in client.get_model_version(NAME, "1").tags


def test_score_falls_back_to_the_runs_metric(client) -> None:
    v = evaluated_version(client, 0.9, "w1")
    client.delete_model_version_tag(NAME, "1", "test_accuracy")  # set by hand, or older code
    assert registry.score_of(client, client.get_model_version(NAME, "1"), "test_accuracy") == 0.9
    bare = evaluated_version(client, None, "w2", log_metric=False)
    assert registry.score_of(client, bare, "test_accuracy") is None
    assert str(v.version) == "1"


def test_versions_are_found_by_md5_or_weights_and_the_lowest_is_canonical(client) -> None:
    evaluated_version(client, 0.9, "w1")
    evaluated_version(client, 0.9, "w1")  # as two promotes of one model at once would leave
    found = registry.versions_of_model(client, NAME, "w1", None)
    assert [str(v.version) for v in found] == ["1", "2"]
    assert str(registry.canonical(found, None).version) == "1"
    client.set_model_version_tag(NAME, "2", registry.MODEL_CODE, "c2")
    found_again = registry.versions_of_model(client, NAME, "none", "w1")
    assert str(registry.canonical(found_again, "c2").version) == "2"
    assert len(found_again) == 2
    assert registry.versions_of_model(client, NAME, "other", None) == []
    assert registry.versions(client, "no-such-model") == []
    assert str(registry.version_by_weights(client, NAME, "w1", "c2").version) == "2"


def test_policy_direction_and_margin() -> None:
    acc = registry.Policy.from_params(params_from_dict({"registry": {"min_improvement": 0.01}}))
    assert acc.beats(0.92, 0.90) and not acc.beats(0.905, 0.90)
    loss = registry.Policy("test_loss", False, 0.0)
    assert loss.beats(0.1, 0.2) and not loss.beats(0.2, 0.1)


def test_dataset_is_part_of_the_default_model_name() -> None:
    assert params_from_dict({}).registered_model_name == "birnn-mnist"
    fashion = params_from_dict({"data": {"dataset": "fashion_mnist"}})
    assert fashion.registered_model_name == "birnn-fashion-mnist"
    named = params_from_dict({"registry": {"model_name": "digits"}})
    assert named.registered_model_name == "digits"


def test_a_rollback_drops_previous(client) -> None:
    evaluated_version(client, 0.9, "w1")
    evaluated_version(client, 0.95, "w2")
    registry.move_champion(client, NAME, move("1", None))
    registry.move_champion(client, NAME, move("2", "1"))
    registry.move_champion(client, NAME, move("1", "2", "rollback"))
    assert str(registry.alias(client, NAME, registry.CHAMPION).version) == "1"
    assert registry.alias(client, NAME, registry.PREVIOUS) is None
    assert client.get_model_version(NAME, "1").tags["promoted_action"] == "rollback"


def test_a_move_killed_before_its_history_record_is_finished_later(client) -> None:
    evaluated_version(client, 0.9, "w1")
    m = move("1", None)
    # What a kill between the alias and the history record leaves: audit tags and the alias.
    for key, value in m.audit_tags().items():
        client.set_model_version_tag(NAME, "1", key, value)
    client.set_registered_model_alias(NAME, registry.CHAMPION, "1")
    champ = registry.alias(client, NAME, registry.CHAMPION)
    assert not registry.recorded(client, NAME, champ) and registry.history(client, NAME) == []
    registry.record_move(client, NAME, registry.Move.from_tags("1", champ.tags))
    assert registry.recorded(client, NAME, registry.alias(client, NAME, registry.CHAMPION))
    (entry,) = registry.history(client, NAME)
    assert (entry["version"], entry["at"], entry["commit"]) == ("1", m.at, "c0ffee")


def test_the_very_file_is_preferred_to_the_same_weights(client) -> None:
    # Two trainings of one config give the same weights in files with other timestamps.
    for md5 in ("m1", "m2"):
        v = evaluated_version(client, 0.9, "w")
        client.set_model_version_tag(NAME, v.version, registry.MODEL_MD5, md5)
    found = registry.versions_of_model(client, NAME, "m2", "w")
    assert [v.tags[registry.MODEL_MD5] for v in found] == ["m2"]
    assert len(registry.versions_of_model(client, NAME, "m3", "w")) == 2


def test_the_same_move_is_recorded_once(client) -> None:
    # Two promotes of one revision may both find the move unrecorded and both write it.
    evaluated_version(client, 0.9, "w1")
    registry.move_champion(client, NAME, move("1", None))
    registry.record_move(client, NAME, move("1", None))
    assert len(registry.history(client, NAME)) == 1
