"""``birnn predict IMAGE...``: ask the champion (or any model) which digits images show.

Each image (PNG, JPEG, ... of any size and colour) is converted the way MNIST digits were made:
grayscale, inverted if it is dark ink on light paper, cropped to the digit, scaled to fit a
20x20 box and placed in a 28x28 image so that its centre of mass is at the centre. Files are
predicted in batches; a folder or a glob writes a CSV.

    birnn predict digit.png                      # "digit.png: 7 (0.998)"
    birnn predict a.png b.jpg --top 3 --json     # machine output
    birnn predict scans/ --output preds.csv      # a folder (or 'scans/*.png')
    birnn predict x.png --model models:/birnn-mnist/3   # a version, runs:/ID/model, model.keras
    birnn predict scans/ --server http://127.0.0.1:8000  # a running `birnn serve` (Parquet)
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from birnn.errors import DataError, TrackingError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
BATCH = 256


def to_mnist(image: Any) -> np.ndarray:
    """A PIL image -> ``(28, 28)`` uint8, white digit on black, as MNIST's digits were made."""
    from PIL import Image

    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent background: lay it on white paper first.
        paper = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, image.convert("RGBA"))
    gray = np.asarray(image.convert("L"), dtype=np.float32)
    if gray.size == 0:
        raise DataError("the image has no pixels")
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    # Dark ink on light paper (most photos and scans) becomes light ink on black, like MNIST.
    ink = 255.0 - gray if np.median(border) > 127 else gray
    edge = np.concatenate([ink[0], ink[-1], ink[:, 0], ink[:, -1]])
    ink = np.clip(ink - np.median(edge), 0, None)  # the paper's own tone is background
    if ink.max() < 32:
        raise DataError("the image is empty: no digit stands out from the background")
    ink *= 255.0 / ink.max()
    rows, cols = np.nonzero(ink > 0.2 * 255)
    digit = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    # The digit's longer side becomes 20 pixels, keeping its proportions (MNIST's 20x20 box).
    h, w = digit.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(
        Image.fromarray(digit.astype(np.uint8)).resize(size, Image.Resampling.LANCZOS),
        dtype=np.float32,
    )
    # Centre of mass at the centre of the 28x28 field.
    total = small.sum()
    cy = (small.sum(axis=1) * np.arange(small.shape[0])).sum() / total
    cx = (small.sum(axis=0) * np.arange(small.shape[1])).sum() / total
    top = int(np.clip(round(13.5 - cy), 0, 28 - small.shape[0]))
    left = int(np.clip(round(13.5 - cx), 0, 28 - small.shape[1]))
    out = np.zeros((28, 28), dtype=np.float32)
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def load_image(path: Path) -> np.ndarray:
    """Read ``path`` and convert it with :func:`to_mnist`; one-line errors for bad files."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataError("no such file")
    try:
        with Image.open(path) as img:
            img.load()
            return to_mnist(img)
    except UnidentifiedImageError:
        raise DataError("not an image (or a format Pillow cannot read)") from None
    except OSError as exc:
        raise DataError(f"cannot read the image: {exc}") from None


def expand(inputs: Sequence[str]) -> tuple[list[Path], bool]:
    """Files named, found in folders or matched by globs; and whether a folder/glob was given."""
    files: list[Path] = []
    many = False
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            many = True
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif any(ch in item for ch in "*?[") and not path.exists():
            many = True
            files += sorted(Path(p) for p in glob.glob(item) if Path(p).is_file())
        else:
            files.append(path)
    return files, many


class Predictor:
    """Pixels 0-255 -> probabilities, from a models:/ or runs:/ URI or a ``.keras`` file."""

    def __init__(self, model: str | None) -> None:
        from birnn import tracking

        self.uri = model or default_model_uri()
        if self.uri.endswith(".keras"):
            self._load_keras(Path(self.uri))
            return
        import mlflow
        from mlflow.exceptions import MlflowException

        self._check_store(tracking.tracking_uri())
        mlflow.set_tracking_uri(tracking.tracking_uri())
        if model is None:
            self._require_champion(self.uri)
        try:
            self.model = mlflow.pyfunc.load_model(self.uri)
        except MlflowException as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise TrackingError(f"cannot load model {self.uri}: {first}") from None
        self.kind = "pyfunc"

    @staticmethod
    def _check_store(uri: str) -> None:
        import requests

        if uri.startswith(("http://", "https://")):
            try:
                requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
            except requests.RequestException as exc:
                raise TrackingError(
                    f"MLflow tracking server {uri} is unreachable ({type(exc).__name__})"
                ) from None

    @staticmethod
    def _require_champion(uri: str) -> None:
        """One line, not MLflow's traceback, when nothing was promoted yet."""
        from mlflow.tracking import MlflowClient

        from birnn import registry

        name = uri.removeprefix("models:/").split("@", 1)[0]
        if registry.alias(MlflowClient(), name, registry.CHAMPION) is None:
            raise TrackingError(
                f"{name} has no champion yet: run `birnn promote` (it makes the model of the "
                "committed dvc.lock champion), or name a model with --model"
            )

    def _load_keras(self, path: Path) -> None:
        import keras

        import birnn.layers  # noqa: F401  (registers TiedBidirectional)

        if not path.is_file():
            raise DataError(f"{path} not found")
        self.model = keras.saving.load_model(path, safe_mode=True)
        self.kind = "keras"

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        x = np.asarray(pixels, dtype=np.float32)
        if self.kind == "keras":
            return np.asarray(self.model.predict(x / 255.0, verbose=0))
        return np.asarray(self.model.predict(x))


def default_model_uri() -> str:
    """``models:/<registered model>@champion`` of the project's ``params.yaml``."""
    from birnn.config import load_params, params_from_dict

    params = load_params("params.yaml") if Path("params.yaml").is_file() else params_from_dict({})
    return f"models:/{params.registered_model_name}@champion"


def predict_files(predictor: Predictor, files: list[Path]) -> tuple[list[dict], list[str]]:
    """Rows of results for the files that could be read; error lines for the others."""
    rows, errors, good, pixels = [], [], [], []
    for path in files:
        try:
            pixels.append(load_image(path))
            good.append(path)
        except DataError as exc:
            errors.append(f"{path}: {exc}")
    for start in range(0, len(good), BATCH):
        probs = predictor.probabilities(np.stack(pixels[start : start + BATCH]))
        for path, p in zip(good[start : start + BATCH], probs, strict=True):
            order = np.argsort(-p)
            rows.append(
                {
                    "file": str(path),
                    "digit": int(order[0]),
                    "probability": float(p[order[0]]),
                    "top": [{"digit": int(d), "probability": float(p[d])} for d in order],
                }
            )
    return rows, errors


def write_csv(rows: list[dict], out: Path, top: int) -> None:
    from birnn.files import atomic_path

    with atomic_path(out) as tmp, tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "digit", "probability", *[f"top{i + 1}" for i in range(top)]])
        for r in rows:
            tops = [f"{t['digit']}:{t['probability']:.4f}" for t in r["top"][:top]]
            w.writerow([r["file"], r["digit"], f"{r['probability']:.6f}", *tops])


def run(args: argparse.Namespace) -> int:
    """The command; returns the exit code (1 if any file failed)."""
    files, many = expand(args.images)
    if not files:
        raise DataError("no image files found in " + ", ".join(args.images))
    if args.server:
        from birnn.serve.client import ServerPredictor

        predictor: Any = ServerPredictor(args.server)
    else:
        predictor = Predictor(args.model)
    rows, errors = predict_files(predictor, files)
    for line in errors:
        print(f"birnn predict: error: {line}", file=sys.stderr)
    if args.json:
        for r in rows:
            r["top"] = r["top"][: args.top]
        model = predictor.uri
        if getattr(predictor, "version", None):
            model = f"{model} (version {predictor.version})"
        print(json.dumps({"model": model, "predictions": rows}, indent=2))
    else:
        for r in rows:
            tops = ", ".join(f"{t['digit']} ({t['probability']:.3f})" for t in r["top"][: args.top])
            print(f"{r['file']}: {tops}")
    if many or args.output:
        out = Path(args.output or "predictions.csv")
        write_csv(rows, out, args.top)
        log.info("wrote %d predictions to %s", len(rows), out)
    return 1 if errors else 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="birnn predict", description="Which digit does each image show?"
    )
    ap.add_argument("images", nargs="+", help="image files, folders or globs")
    ap.add_argument(
        "--model",
        help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model or a .keras file "
        "(default: the champion of params.yaml's registry)",
    )
    ap.add_argument("--server", metavar="URL", help="ask a running `birnn serve` (or `mlflow "
                    "models serve`) at URL instead of loading a model here")  # fmt: skip
    ap.add_argument("--top", type=int, default=1, choices=range(1, 11), metavar="K",
                    help="show the K most likely digits (1-10)")  # fmt: skip
    ap.add_argument("--json", action="store_true", help="JSON output")
    ap.add_argument("--output", help="CSV file (written for folders and globs; default "
                    "predictions.csv)")  # fmt: skip
    ap.add_argument("--verbose", action="store_true",
                    help="show TensorFlow's start-up lines and library warnings")  # fmt: skip
    return ap


def quiet_libraries() -> None:
    """No TensorFlow/absl start-up lines, library warnings or download progress bars on a
    normal run: stdout holds the predictions, stderr only this command's own lines. Called
    before TensorFlow is imported (its C++ logging reads the variable once); values the user
    set are kept."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow sets its loggers' level from this when imported (a level set before is lost).
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    # Warnings become log records of "py.warnings", which is quieted like the libraries'
    # loggers: a filter would not do, MLflow's model loading sets its own ("once").
    logging.captureWarnings(True)
    # urllib3: a retried request to a server that is down (serve's registry lookups).
    for name in ("py.warnings", "tensorflow", "absl", "keras", "mlflow", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m birnn.predict IMAGE...``"""
    from birnn.stage import one_line_errors, setup_logging

    ap = parser()
    args = ap.parse_args(argv)
    if args.server and args.model:
        ap.error("--server and --model are exclusive: the server serves its own model")
    if not args.verbose:
        quiet_libraries()
    setup_logging()
    with one_line_errors("birnn predict"):
        code = run(args)
    sys.exit(code)


if __name__ == "__main__":
    main()
