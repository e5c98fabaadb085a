"""Register stand-in models in a real MLflow store, as evaluate would, for registry tests.

Run as a script it is one evaluating process of the concurrency test:
``python -m tests.integration.registry_helpers URI ACCURACY WEIGHTS [--wait-before-alias DIR]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from birnn import registry
from birnn.config import Params, params_from_dict


class Identity(mlflow.pyfunc.PythonModel):
    """A model that needs nothing: registry tests are about versions, not predictions."""

    def predict(self, context, model_input, params=None):
        return model_input


def always(**registry_params: object) -> Params:
    return params_from_dict({"registry": {"promote": "always", **registry_params}})


def evaluated_version(
    client: MlflowClient,
    params: Params,
    accuracy: float | None,
    weights: str,
    log_metric: bool = True,
) -> dict:
    """One run with its test metric and a logged model, registered by :func:`registry.register`."""
    mlflow.set_experiment("registry-test")
    with mlflow.start_run() as run:
        if log_metric and accuracy is not None:
            mlflow.log_metric("test_accuracy", accuracy)
        info = mlflow.pyfunc.log_model(name="model", python_model=Identity(), pip_requirements=[])
        metrics = {"test_accuracy": accuracy if accuracy is not None else 0.0}
        return registry.register(client, params, info.model_uri, metrics, run.info.run_id, weights)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("uri")
    ap.add_argument("accuracy", type=float)
    ap.add_argument("weights")
    ap.add_argument("--wait-before-alias", type=Path, default=None)
    args = ap.parse_args()
    mlflow.set_tracking_uri(args.uri)
    client = MlflowClient(args.uri)
    if args.wait_before_alias is not None:
        # Force the interleaving that loses a race: this process has read the champion and
        # decided, then stalls before moving the alias until the other process is done.
        flags = args.wait_before_alias
        real = MlflowClient.set_registered_model_alias
        calls = []

        def stalled(self, name, alias, version):
            if not calls:
                (flags / "waiting").touch()
                deadline = time.monotonic() + 120
                while not (flags / "other-done").exists() and time.monotonic() < deadline:
                    time.sleep(0.1)
            calls.append(version)
            return real(self, name, alias, version)

        MlflowClient.set_registered_model_alias = stalled
    result = evaluated_version(client, always(), args.accuracy, args.weights)
    print(result["decision"])


if __name__ == "__main__":
    main()
