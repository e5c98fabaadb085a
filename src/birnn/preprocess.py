"""Stage 2, preprocess: IDX -> scaled float32 arrays with a stratified validation split.

The test set is written untouched (only scaled) for the evaluate stage; training and model
selection see only the train and validation splits.
"""

from __future__ import annotations

import logging

import numpy as np

from birnn import paths
from birnn.config import PreprocessConfig, load_params
from birnn.data import load_raw, scale, split
from birnn.files import remove_stale_temps, save_npz, write_json
from birnn.stage import run_stage

log = logging.getLogger(__name__)


def preprocess(raw: dict[str, np.ndarray], cfg: PreprocessConfig) -> dict[str, dict]:
    """Return ``{"train"|"val"|"test": {"x", "y"}}`` ready to save."""
    parts = split(raw["x_train"], raw["y_train"], cfg.val_fraction, cfg.seed, cfg.train_samples)
    return {
        "train": {"x": scale(parts["x_train"]), "y": parts["y_train"]},
        "val": {"x": scale(parts["x_val"]), "y": parts["y_val"]},
        "test": {"x": scale(raw["x_test"]), "y": raw["y_test"]},
    }


def main() -> None:
    """``python -m birnn.preprocess``"""

    def stage() -> None:
        params = load_params(paths.PARAMS)
        raw = load_raw(paths.RAW_DIR)
        remove_stale_temps(paths.PROCESSED_DIR)
        out = preprocess(raw, params.preprocess)
        sizes = {}
        for name, arrays in out.items():
            save_npz(paths.PROCESSED_DIR / f"{name}.npz", **arrays)
            sizes[name] = {
                "samples": len(arrays["y"]),
                "class_counts": np.bincount(arrays["y"], minlength=10).tolist(),
            }
            log.info("%s: %d samples", name, len(arrays["y"]))
        write_json(paths.PROCESSED_DIR / "summary.json", sizes)

    run_stage("preprocess", stage)


if __name__ == "__main__":
    main()
