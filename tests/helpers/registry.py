"""Register stand-in models in a real MLflow store, as evaluate would, for registry tests."""

from __future__ import annotations

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from birnn import registry

NAME = "birnn-mnist"


class Identity(mlflow.pyfunc.PythonModel):
    """A model that needs nothing: registry tests are about versions, not predictions."""

    def predict(self, context, model_input, params=None):
        return model_input


def evaluated_version(
    client: MlflowClient, accuracy: float | None, weights: str, log_metric: bool = True
) -> ModelVersion:
    """One run with its test metric and a logged model, registered by :func:`registry.register`."""
    mlflow.set_experiment("registry-test")
    with mlflow.start_run() as run:
        if log_metric and accuracy is not None:
            mlflow.log_metric("test_accuracy", accuracy)
        info = mlflow.pyfunc.log_model(name="model", python_model=Identity(), pip_requirements=[])
        metrics = {} if accuracy is None else {"test_accuracy": accuracy}
        tags = {"run_id": run.info.run_id, registry.WEIGHTS: weights, registry.MODEL_MD5: weights}
        return registry.register(client, NAME, info.model_uri, metrics, tags)
