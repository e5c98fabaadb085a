"""Where each stage reads and writes, relative to the project root (DVC runs stages there)."""

from pathlib import Path

PARAMS = Path("params.yaml")
RAW_DIR = Path("data/raw")
PROCESSED_DIR = Path("data/processed")
MODELS_DIR = Path("models")
MODEL_FILE = MODELS_DIR / "model.keras"
REPORTS_DIR = Path("reports")
FIGURES_DIR = REPORTS_DIR / "figures"
HISTORY_CSV = REPORTS_DIR / "history.csv"
TRAIN_JSON = REPORTS_DIR / "train.json"
MODEL_SUMMARY = REPORTS_DIR / "model_summary.txt"
METRICS_JSON = REPORTS_DIR / "metrics.json"
PER_CLASS_JSON = REPORTS_DIR / "per_class.json"
CONFUSION_CSV = REPORTS_DIR / "confusion.csv"
PREDICTIONS_CSV = REPORTS_DIR / "predictions.csv"
# Resume state lives outside DVC outputs, which DVC deletes before a stage runs.
CHECKPOINT_DIR = Path(".checkpoints/train")
