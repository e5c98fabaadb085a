"""Atomic, byte-deterministic writers shared by the stages.

Every output goes to a temp file in the target's folder and is renamed into place, so a killed
stage never leaves half a file and an earlier good output stays whole until the new one is done.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``target``; rename it onto ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Keep the suffix: some writers (Keras) insist on it.
    fd, tmp = tempfile.mkstemp(
        prefix=f"{TEMP_PREFIX}{target.name}-", suffix=target.suffix, dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes the file 0600; give the final file the usual umask-based mode.
    os.chmod(tmp_path, 0o666 & ~_UMASK)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


TEMP_PREFIX = ".tmp-"


def remove_stale_temps(*folders: str | Path) -> None:
    """Delete temp files a killed earlier run left (SIGKILL skips ``atomic_path``'s cleanup)."""
    for folder in map(Path, folders):
        if folder.is_dir():
            for p in folder.glob(f"{TEMP_PREFIX}*"):
                p.unlink(missing_ok=True)


def write_bytes(target: str | Path, data: bytes) -> None:
    """Atomically write ``data`` to ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | Path, text: str) -> None:
    """Atomically write UTF-8 ``text`` to ``target``."""
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented, key-sorted JSON (stable across runs)."""
    write_text(target, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_csv(target: str | Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Atomically write a CSV file with a header row."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(target, buf.getvalue())


# A fixed zip member date: np.savez stamps the current time, which changes the file's hash
# on every run and makes DVC think the data changed.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def save_npz(target: str | Path, **arrays: np.ndarray) -> None:
    """Atomically write an uncompressed ``.npz`` whose bytes depend only on the arrays."""
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(arrays[name]))


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``sha256``, ``md5``, ...), read in chunks."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    return file_digest(path, "sha256")


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` file into memory."""
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}
