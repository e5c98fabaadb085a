"""IDX parsing, scaling and stratified splitting on tiny inline arrays."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from birnn.data import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    load_raw,
    parse_idx,
    read_idx_gz,
    scale,
    split,
    stratified_indices,
)
from birnn.errors import DataError


def idx_images(images: np.ndarray) -> bytes:
    return struct.pack(">IIII", IMAGES_MAGIC, *images.shape) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", LABELS_MAGIC, len(labels)) + labels.astype(np.uint8).tobytes()


def test_parse_images_roundtrip() -> None:
    imgs = np.arange(3 * 28 * 28, dtype=np.uint32).reshape(3, 28, 28) % 256
    out = parse_idx(idx_images(imgs), IMAGES_MAGIC)
    assert out.shape == (3, 28, 28)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, imgs)


def test_parse_labels_roundtrip() -> None:
    labels = np.array([5, 0, 4, 1, 9])
    np.testing.assert_array_equal(parse_idx(idx_labels(labels), LABELS_MAGIC), labels)


def test_wrong_magic() -> None:
    raw = idx_labels(np.array([1, 2]))
    with pytest.raises(DataError, match="bad magic number 0x00000801, expected 0x00000803"):
        parse_idx(raw, IMAGES_MAGIC, "x.idx")


def test_wrong_dimensions() -> None:
    raw = struct.pack(">IIII", IMAGES_MAGIC, 1, 32, 32) + bytes(32 * 32)
    with pytest.raises(DataError, match=r"images are \(32, 32\), expected \(28, 28\)"):
        parse_idx(raw, IMAGES_MAGIC)


def test_short_payload() -> None:
    raw = idx_images(np.zeros((2, 28, 28)))[:-10]
    with pytest.raises(DataError, match="payload is 1558 bytes but dimensions"):
        parse_idx(raw, IMAGES_MAGIC)


def test_too_short_header() -> None:
    with pytest.raises(DataError, match="too short"):
        parse_idx(b"\x00\x00", LABELS_MAGIC)


def test_not_gzip(tmp_path: Path) -> None:
    f = tmp_path / "x.gz"
    f.write_bytes(b"this is not gzip")
    with pytest.raises(DataError, match="not a valid gzip file"):
        read_idx_gz(f, LABELS_MAGIC)


def test_missing_raw_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="run `dvc repro download` first"):
        load_raw(tmp_path)


def test_load_raw_checks_counts(tmp_path: Path) -> None:
    for prefix, n in (("train", 4), ("t10k", 2)):
        (tmp_path / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(idx_images(np.zeros((n, 28, 28))))
        )
        (tmp_path / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(idx_labels(np.arange(n + (prefix == "train"))))
        )
    with pytest.raises(DataError, match="train set has 4 images but 5 labels"):
        load_raw(tmp_path)


def test_scale_range_and_dtype() -> None:
    x = scale(np.array([[0, 128, 255]], dtype=np.uint8))
    assert x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0


def test_stratified_split_keeps_class_shares() -> None:
    y = np.repeat(np.arange(10), [100, 200, 50, 80, 120, 90, 60, 70, 110, 120])
    kept, taken = stratified_indices(y, 0.1, np.random.default_rng(0))
    assert len(np.intersect1d(kept, taken)) == 0
    assert len(kept) + len(taken) == len(y)
    np.testing.assert_array_equal(np.bincount(y[taken]), np.round(np.bincount(y) * 0.1))


def test_split_is_seeded_and_subsamples() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, size=1000)
    x = np.arange(1000)
    a = split(x, y, 0.2, seed=7, train_samples=300)
    b = split(x, y, 0.2, seed=7, train_samples=300)
    c = split(x, y, 0.2, seed=8, train_samples=300)
    np.testing.assert_array_equal(a["x_train"], b["x_train"])
    assert not np.array_equal(a["x_train"], c["x_train"])
    assert abs(len(a["y_train"]) - 300) <= 10
    assert len(np.intersect1d(a["x_train"], a["x_val"])) == 0
    assert set(np.unique(a["y_train"])) == set(range(10))
