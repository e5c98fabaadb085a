"""Stage 4, evaluate: score the trained model on the untouched test set and report.

Writes DVC metrics and plots data under ``reports/``, matplotlib figures under
``reports/figures/``, and adds all of it, plus the model, to the training run in MLflow (or to a
new run linked to it, when that run was evaluated before), where the model becomes a new
registry version. Evaluate never moves the ``champion`` alias: ``birnn promote`` does
(:mod:`birnn.promote`).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

import keras
import numpy as np

from birnn import paths, plots
from birnn.config import Params, load_params
from birnn.data import load_split
from birnn.errors import DataError
from birnn.files import file_sha256, remove_stale_temps, write_csv, write_json
from birnn.metrics import confusion_matrix, per_class_scores
from birnn.stage import run_stage, set_op_threads

log = logging.getLogger(__name__)

TEST_FILE = paths.PROCESSED_DIR / "test.npz"
EXAMPLE_SIZE = 5  # real test images stored with the MLflow model as its input example


def evaluate_predictions(y_true: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Loss, accuracy, macro F1, per-class scores and confusion matrix from probabilities."""
    y_pred = probs.argmax(axis=1)
    picked = np.clip(probs[np.arange(len(y_true)), y_true], 1e-7, 1.0)
    cm = confusion_matrix(y_true, y_pred, probs.shape[1])
    scores = per_class_scores(cm)
    return {
        "y_true": y_true,
        "y_pred": y_pred,
        "confusion": cm,
        "per_class": {
            str(c): {k: float(v[c]) for k, v in scores.items()} for c in range(probs.shape[1])
        },
        "metrics": {
            "test_loss": float(-np.log(picked).mean()),
            "test_accuracy": float((y_pred == y_true).mean()),
            "macro_f1": float(scores["f1"].mean()),
            "test_samples": len(y_true),
        },
    }


def read_history(path: Path) -> dict[str, list[float]]:
    """``reports/history.csv`` as columns."""
    if not path.is_file():
        raise DataError(f"{path} not found: run `dvc repro train` first")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {k: [float(r[k]) for r in rows] for k in (rows[0].keys() if rows else [])}


def load_trained_model(path: Path) -> keras.Model:
    """Load the trained model in Keras safe mode (no code from the file is executed)."""
    if not path.is_file():
        raise DataError(f"{path} not found: run `dvc repro train` first")
    import birnn.model  # noqa: F401  (registers the custom TiedBidirectional layer)

    return keras.saving.load_model(path, safe_mode=True)


def write_reports(result: dict[str, Any], y_true: np.ndarray) -> None:
    """DVC metrics, per-class scores, confusion matrix and per-sample predictions."""
    remove_stale_temps(paths.REPORTS_DIR, paths.FIGURES_DIR)
    write_json(paths.METRICS_JSON, result["metrics"])
    write_json(paths.PER_CLASS_JSON, result["per_class"])
    cm = result["confusion"]
    write_csv(
        paths.CONFUSION_CSV,
        ["true", *[str(c) for c in range(cm.shape[1])]],
        [[i, *row.tolist()] for i, row in enumerate(cm)],
    )
    write_csv(
        paths.PREDICTIONS_CSV,
        ["actual", "predicted"],
        list(zip(y_true.tolist(), result["y_pred"].tolist(), strict=True)),
    )


def write_figures(
    history: dict[str, list[float]], result: dict, x: np.ndarray, y: np.ndarray, grid: int
) -> list[Path]:
    """The four PNGs under ``reports/figures``."""
    out = [
        paths.FIGURES_DIR / "loss.png",
        paths.FIGURES_DIR / "accuracy.png",
        paths.FIGURES_DIR / "confusion_matrix.png",
        paths.FIGURES_DIR / "misclassified.png",
    ]
    plots.learning_curve(history, "loss", "Model loss", out[0])
    plots.learning_curve(history, "accuracy", "Model accuracy", out[1])
    plots.confusion(result["confusion"], out[2])
    plots.misclassified(x, y, result["y_pred"], grid, out[3])
    return out


def log_to_mlflow(
    client: Any,
    params: Params,
    result: dict[str, Any],
    figures: list[Path],
    x_test: np.ndarray,
    run_id: str,
    weights_sha: str,
) -> None:
    """Test metrics, data, reports, figures and the model into the active run; register it.

    Weights already in the registry (the same training evaluated again) are linked to their
    version, not logged or registered a second time.
    """
    from birnn import lineage, registry, tracking

    m = result["metrics"]
    per_class_f1 = {f"test_f1_class_{c}": s["f1"] for c, s in result["per_class"].items()}
    tracking.log_metrics({k: v for k, v in m.items() if k != "test_samples"} | per_class_f1)
    tracking.log_datasets({"testing": ((x_test, result["y_true"]), TEST_FILE)})
    tracking.log_artifacts(figures, artifact_path="figures")
    tracking.log_artifacts(
        [
            paths.METRICS_JSON,
            paths.PER_CLASS_JSON,
            paths.CONFUSION_CSV,
            paths.HISTORY_CSV,
            paths.TRAIN_JSON,
            paths.PARAMS,
        ],
        artifact_path="reports",
    )
    tracking.set_tags(lineage.stage_data_hashes("evaluate"))
    name = params.registered_model_name
    code_sha = tracking.model_code_digest()
    existing = (
        registry.version_by_weights(client, name, weights_sha, code_sha) if weights_sha else None
    )
    if existing is not None:
        registry.link_existing(existing)
        return
    # The logged model takes what users have: pixel values 0-255 (preprocess scaled them).
    example = np.rint(x_test[:EXAMPLE_SIZE] * 255.0).astype(np.uint8)
    model_uri = tracking.log_model(paths.MODEL_FILE, example)
    if not registry.registry_enabled():
        log.info("%s=off: the model is logged, not registered", registry.REGISTRY_ENV)
        return
    version = registry.register(
        client, name, model_uri, m, registration_tags(run_id, weights_sha, code_sha)
    )
    # Registering never moves the champion: promotion is its own, explicit step.
    log.info(
        "registered %s version %s; `birnn promote` makes the model of the committed "
        "dvc.lock champion",
        name,
        version.version,
    )


def registration_tags(run_id: str, weights_sha: str, code_sha: str) -> dict[str, str]:
    """What a version carries besides its scores: the run, the model's digests, its lineage."""
    from birnn import lineage, registry

    dirty = lineage.uncommitted_changes()
    tags = {
        "run_id": run_id,
        registry.WEIGHTS: weights_sha,
        registry.MODEL_MD5: lineage.dvc_md5(paths.MODEL_FILE),
        registry.MODEL_CODE: code_sha,
        "git.commit": lineage.git("rev-parse", "HEAD") or "unknown",
        "git.dirty": "unknown" if dirty is None else str(bool(dirty)).lower(),
    }
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


def main() -> None:
    """``python -m birnn.evaluate``"""

    def stage() -> None:
        set_op_threads()  # before TensorFlow's first op
        from birnn import tracking

        params = load_params(paths.PARAMS)
        client = tracking.connect(params)  # fails fast, before any data is read
        x_test, y_test = load_split(paths.PROCESSED_DIR, "test")
        history = read_history(paths.HISTORY_CSV)
        if not paths.TRAIN_JSON.is_file():
            raise DataError(f"{paths.TRAIN_JSON} not found: run `dvc repro train` first")
        train_info = json.loads(paths.TRAIN_JSON.read_text())
        model = load_trained_model(paths.MODEL_FILE)

        probs = model.predict(x_test, batch_size=params.evaluate.batch_size, verbose=0)
        result = evaluate_predictions(y_test, probs)
        write_reports(result, y_test)
        figures = write_figures(history, result, x_test, y_test, params.evaluate.misclassified_grid)
        m = result["metrics"]
        log.info(
            "test accuracy %.4f, loss %.4f, macro F1 %.4f",
            m["test_accuracy"],
            m["test_loss"],
            m["macro_f1"],
        )

        # The training run, unless it was evaluated before or is not in this store (a fresh
        # clone with a pulled cache): then a new run linked to it.
        model_sha = file_sha256(paths.MODEL_FILE)
        weights_sha = train_info.get("weights_sha256", "")
        run_id = tracking.open_evaluation_run(
            client, params, train_info.get("mlflow_run_id"), model_sha
        )
        with tracking.closing_run():
            tracking.set_tags({"model.sha256": model_sha, "weights_sha256": weights_sha})
            log_to_mlflow(client, params, result, figures, x_test, run_id, weights_sha)

    run_stage("evaluate", stage)


if __name__ == "__main__":
    main()
