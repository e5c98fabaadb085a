"""Atomic writes and byte-deterministic npz files."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest

from birnn.files import atomic_path, load_npz, save_npz, write_text


def test_failed_write_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    write_text(target, "good")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "good"
    assert list(tmp_path.iterdir()) == [target]


def test_npz_roundtrip_and_deterministic_bytes(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((5, 28, 28), dtype=np.float32)
    y = np.arange(5, dtype=np.uint8)
    save_npz(tmp_path / "a.npz", x=x, y=y)
    time.sleep(2.1)  # zip timestamps have 2 s resolution
    save_npz(tmp_path / "b.npz", y=y, x=x)
    da = hashlib.sha256((tmp_path / "a.npz").read_bytes()).hexdigest()
    db = hashlib.sha256((tmp_path / "b.npz").read_bytes()).hexdigest()
    assert da == db
    back = load_npz(tmp_path / "a.npz")
    np.testing.assert_array_equal(back["x"], x)
    np.testing.assert_array_equal(back["y"], y)
