"""Pure data functions: IDX parsing, scaling, stratified splits, loading processed arrays."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from birnn.errors import DataError
from birnn.files import load_npz

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)


def parse_idx(raw: bytes, expect_magic: int, name: str = "IDX data") -> np.ndarray:
    """Parse an uncompressed IDX (ubyte) buffer, checking magic, dimensions and payload size."""
    if len(raw) < 4:
        raise DataError(f"{name}: file is {len(raw)} bytes, too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expect_magic:
        raise DataError(
            f"{name}: bad magic number 0x{magic:08x}, expected 0x{expect_magic:08x} "
            "(is it the right file, and not corrupted?)"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name}: truncated header ({len(raw)} bytes, need {header})")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if expect_magic == IMAGES_MAGIC and dims[1:] != IMAGE_SHAPE:
        raise DataError(f"{name}: images are {dims[1:]}, expected {IMAGE_SHAPE}")
    expected = int(np.prod(dims))
    payload = len(raw) - header
    if payload != expected:
        raise DataError(
            f"{name}: payload is {payload} bytes but dimensions {dims} need {expected} "
            "(truncated or corrupted file; run the download stage again)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_gz(path: Path, expect_magic: int) -> np.ndarray:
    """Read and parse a gzip-compressed IDX file."""
    if not path.is_file():
        raise DataError(f"{path} not found: run `dvc repro download` first")
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{path}: not a valid gzip file ({exc}); run the download stage again"
        ) from None
    return parse_idx(raw, expect_magic, name=str(path))


def load_raw(raw_dir: Path) -> dict[str, np.ndarray]:
    """Load the four IDX files into uint8 arrays, checking images and labels agree."""
    out = {
        "x_train": read_idx_gz(raw_dir / "train-images-idx3-ubyte.gz", IMAGES_MAGIC),
        "y_train": read_idx_gz(raw_dir / "train-labels-idx1-ubyte.gz", LABELS_MAGIC),
        "x_test": read_idx_gz(raw_dir / "t10k-images-idx3-ubyte.gz", IMAGES_MAGIC),
        "y_test": read_idx_gz(raw_dir / "t10k-labels-idx1-ubyte.gz", LABELS_MAGIC),
    }
    for split in ("train", "test"):
        nx, ny = len(out[f"x_{split}"]), len(out[f"y_{split}"])
        if nx != ny:
            raise DataError(f"{split} set has {nx} images but {ny} labels")
        if ny and out[f"y_{split}"].max() >= NUM_CLASSES:
            raise DataError(f"{split} labels must be 0-9, found {out[f'y_{split}'].max()}")
    return out


def scale(images: np.ndarray) -> np.ndarray:
    """uint8 pixels to float32 in [0, 1]."""
    return images.astype(np.float32) / np.float32(255.0)


def stratified_indices(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices so each class keeps its share; returns (kept, taken), both sorted.

    ``taken`` holds round(fraction * n_c) indices of each class c (at least one where the class
    has two or more samples).
    """
    kept, taken = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n = round(fraction * len(idx))
        if len(idx) >= 2:
            n = min(max(n, 1), len(idx) - 1)
        taken.append(idx[:n])
        kept.append(idx[n:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(taken))


def subsample(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a stratified subsample of ``n`` items (all, if ``n`` >= len)."""
    if n >= len(labels):
        return np.arange(len(labels))
    _, taken = stratified_indices(labels, n / len(labels), rng)
    return taken


def split(
    x: np.ndarray,
    y: np.ndarray,
    val_fraction: float,
    seed: int,
    train_samples: int | None = None,
) -> dict[str, np.ndarray]:
    """Stratified train/validation split, then an optional stratified train subsample."""
    rng = np.random.default_rng(seed)
    train_idx, val_idx = stratified_indices(y, val_fraction, rng)
    if train_samples is not None:
        train_idx = train_idx[subsample(y[train_idx], train_samples, rng)]
    return {
        "x_train": x[train_idx],
        "y_train": y[train_idx],
        "x_val": x[val_idx],
        "y_val": y[val_idx],
    }


def load_split(processed_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Load ``train``, ``val`` or ``test`` arrays written by the preprocess stage."""
    path = processed_dir / f"{name}.npz"
    if not path.is_file():
        raise DataError(f"{path} not found: run `dvc repro preprocess` first")
    arrays = load_npz(path)
    return arrays["x"], arrays["y"]
