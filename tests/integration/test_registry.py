"""The registry against real MLflow stores: tag order, champions without scores, the
promotion policy, and two evaluations promoting at once against a real `mlflow server`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from birnn import registry
from birnn.config import params_from_dict
from tests.conftest import REPO
from tests.integration.mlflow_server import mlflow_server
from tests.integration.pipeline import env_for, git
from tests.integration.registry_helpers import always, evaluated_version

pytestmark = pytest.mark.integration

NAME = "birnn-mnist"


@pytest.fixture()
def client(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    yield MlflowClient(uri)
    mlflow.set_tracking_uri(None)


def champion(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias(NAME, "champion").version)


def test_tags_are_written_before_the_alias_moves(client, monkeypatch) -> None:
    seen = []
    real = MlflowClient.set_registered_model_alias

    def spy(self, name, alias, version):
        seen.append(dict(self.get_model_version(name, version).tags))
        return real(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", spy)
    evaluated_version(client, always(), 0.9, "w1")
    assert seen and seen[0]["test_accuracy"] == "0.900000"
    assert seen[0]["weights_sha256"] == "w1" and seen[0]["champion_candidate"] == "true"


def test_champion_without_tag_is_compared_by_its_runs_metric(client) -> None:
    evaluated_version(client, always(), 0.9, "w1")
    # As a kill between alias and tags (old code) or a hand-set alias would leave it.
    client.delete_model_version_tag(NAME, "1", "test_accuracy")
    worse = evaluated_version(client, always(), 0.85, "w2")
    assert worse["decision"] == "kept version 1 as champion"
    assert client.get_model_version(NAME, "2").tags["champion_test_accuracy_before"] == "0.900000"
    better = evaluated_version(client, always(), 0.95, "w3")
    assert better["decision"] == "promoted over version 1"
    assert champion(client) == "3"


def test_champion_without_any_score_is_left_and_the_decision_says_so(client) -> None:
    evaluated_version(client, always(), None, "w1", log_metric=False)
    client.delete_model_version_tag(NAME, "1", "test_accuracy")
    result = evaluated_version(client, always(), 0.99, "w2")
    assert "champion version 1 has no test_accuracy" in result["decision"]
    assert champion(client) == "1"
    assert "has no test_accuracy" in client.get_model_version(NAME, "2").tags["champion_decision"]


def test_min_improvement_and_metric_direction(client) -> None:
    params = always(min_improvement=0.01)
    evaluated_version(client, params, 0.90, "w1")
    assert "kept version 1" in evaluated_version(client, params, 0.905, "w2")["decision"]
    assert "promoted over version 1" in evaluated_version(client, params, 0.92, "w3")["decision"]
    loss = registry.Policy("test_loss", False, 0.0, "always")
    assert loss.beats(0.1, 0.2) and not loss.beats(0.2, 0.1)


def test_never_registers_but_does_not_promote(client) -> None:
    evaluated_version(client, always(), 0.9, "w1")
    result = evaluated_version(client, always(promote="never"), 0.99, "w2")
    assert result["decision"] == "not a candidate: registry.promote=never"
    assert champion(client) == "1"
    assert client.get_model_version(NAME, "2").tags["champion_candidate"] == "false"


def test_same_weights_are_found(client) -> None:
    evaluated_version(client, always(), 0.9, "w1")
    assert str(registry.version_by_weights(client, NAME, "w1").version) == "1"
    assert registry.version_by_weights(client, NAME, "other") is None
    assert registry.version_by_weights(client, "no-such-model", "w1") is None
    # The same weights packaged by other model code (a new input contract) are a new version.
    client.set_model_version_tag(NAME, "1", "model_code_sha256", "c1")
    assert str(registry.version_by_weights(client, NAME, "w1", "c1").version) == "1"
    assert registry.version_by_weights(client, NAME, "w1", "c2") is None


def test_auto_policy_follows_branch_tree_and_experiment(tmp_path: Path, monkeypatch) -> None:
    env = env_for(tmp_path)
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        (repo / name).write_text((REPO / name).read_text())
    (repo / "reports").mkdir()
    (repo / "reports/metrics.json").write_text("{}\n")
    git("init", "-q", "-b", "main", cwd=repo, env=env)
    git("-c", "user.email=a@b", "-c", "user.name=a", "add", "-A", cwd=repo, env=env)
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "x", cwd=repo, env=env)
    monkeypatch.chdir(repo)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.delenv("GITHUB_REF_NAME", raising=False)
    policy = registry.Policy.from_params(params_from_dict({}))
    assert registry.may_promote(policy)[0]
    # Pipeline outputs and dvc.lock being rewritten do not make the tree dirty ...
    (repo / "reports/metrics.json").write_text('{"a": 1}\n')
    assert registry.may_promote(policy)[0]
    # ... a changed params.yaml does.
    (repo / "params.yaml").write_text((REPO / "params.yaml").read_text() + "\n# edit\n")
    allowed, why = registry.may_promote(policy)
    assert not allowed and "uncommitted changes: params.yaml" in why
    git("checkout", "-q", "params.yaml", cwd=repo, env=env)
    monkeypatch.setenv("DVC_EXP_NAME", "gru")
    allowed, why = registry.may_promote(policy)
    assert not allowed and "DVC experiment 'gru'" in why
    monkeypatch.delenv("DVC_EXP_NAME")
    git("checkout", "-q", "-b", "feature", cwd=repo, env=env)
    allowed, why = registry.may_promote(policy)
    assert not allowed and "'feature', not main" in why


def test_dataset_is_part_of_the_default_model_name() -> None:
    assert params_from_dict({}).registered_model_name == "birnn-mnist"
    fashion = params_from_dict({"data": {"dataset": "fashion_mnist"}})
    assert fashion.registered_model_name == "birnn-fashion-mnist"
    named = params_from_dict({"registry": {"model_name": "digits"}})
    assert named.registered_model_name == "digits"


def test_two_processes_promoting_at_once_leave_the_better_champion(tmp_path: Path) -> None:
    (tmp_path / "server").mkdir()
    with mlflow_server(tmp_path / "server") as uri:
        cmd = [sys.executable, "-m", "tests.integration.registry_helpers", uri]
        flags = tmp_path / "flags"
        flags.mkdir()
        env = env_for(tmp_path)
        # The worse model reads "no champion", decides to promote, and stalls before the
        # alias; the better one registers and promotes in between; then the worse one moves on.
        worse = subprocess.Popen(
            [*cmd, "0.90", "worse", "--wait-before-alias", str(flags)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while not (flags / "waiting").exists():
            assert worse.poll() is None, worse.communicate()
            assert time.monotonic() < deadline, "the worse process never reached the alias"
            time.sleep(0.1)
        better = subprocess.run(
            [*cmd, "0.95", "better"], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert better.returncode == 0, better.stderr[-3000:]
        (flags / "other-done").touch()
        _out, err = worse.communicate(timeout=120)
        assert worse.returncode == 0, err[-3000:]

        client = MlflowClient(uri)
        versions = {v.tags["weights_sha256"]: v for v in client.search_model_versions()}
        assert set(versions) == {"worse", "better"}
        assert champion(client) == str(versions["better"].version)
        assert "won a concurrent promotion" in versions["worse"].tags["champion_decision"]
