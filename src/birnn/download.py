"""Stage 1, download: fetch the four official IDX files, verified against checksums in code.

Public mirrors are tried in turn (retried with backoff by pooch); ``BIRNN_DATA_MIRROR`` replaces
them with your own: a folder or an http(s) base URL holding the same file names (several may be
given, separated by spaces). A file whose checksum does not match is never left on disk.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pooch
import requests

from birnn import paths
from birnn.config import load_params
from birnn.errors import DataError
from birnn.files import atomic_path, file_digest, remove_stale_temps
from birnn.stage import run_stage

log = logging.getLogger(__name__)

MIRROR_ENV = "BIRNN_DATA_MIRROR"


@dataclass(frozen=True)
class RemoteFile:
    """One dataset file and its official checksum."""

    name: str
    md5: str


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's files and the public mirrors that serve them."""

    files: tuple[RemoteFile, ...]
    mirrors: tuple[str, ...]


# Official md5s, as published by the dataset authors (and used by torchvision).
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        files=(
            RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
    ),
    "fashion_mnist": DatasetSpec(
        files=(
            RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
    ),
}


def md5sum(path: Path) -> str:
    """md5 of a file (the checksum the dataset authors publish)."""
    return file_digest(path, "md5")


def mirrors_from_env(value: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """The mirrors to try: those in ``BIRNN_DATA_MIRROR`` if set, else the public ones."""
    if value is None or not value.strip():
        return default
    mirrors = []
    for m in value.split():
        if not m.startswith(("http://", "https://")):
            m = str(_resolve_folder(m))
        mirrors.append(m)
    return tuple(mirrors)


def _resolve_folder(folder: str) -> Path:
    # A relative folder is relative to the working directory or, for queued and --temp DVC
    # experiments (which run in a copy of the project), to the project (DVC_ROOT).
    candidates = [Path(folder)]
    if not Path(folder).is_absolute() and os.environ.get("DVC_ROOT"):
        candidates.append(Path(os.environ["DVC_ROOT"]) / folder)
    for path in candidates:
        if path.is_dir():
            return path
    raise DataError(f"{MIRROR_ENV}={folder!r} is neither an http(s) URL nor an existing folder")


def _copy_verified(src_dir: Path, f: RemoteFile, dest: Path) -> None:
    src = src_dir / f.name
    if not src.is_file():
        raise FileNotFoundError(f"{src} does not exist")
    with atomic_path(dest / f.name) as tmp:
        shutil.copyfile(src, tmp)
        got = md5sum(tmp)
        if got != f.md5:
            raise ValueError(f"md5 mismatch for {src}: expected {f.md5}, got {got}")


def _fetch_http(base_url: str, f: RemoteFile, dest: Path, retries: int) -> None:
    # pooch downloads to a temp file, checks the hash, then moves it into place; a mismatch
    # deletes the temp file. We wrap it so the final file appears only via a rename.
    fetcher = pooch.create(
        path=dest,
        base_url=base_url if base_url.endswith("/") else base_url + "/",
        registry={f.name: f"md5:{f.md5}"},
        retry_if_failed=retries,
    )
    downloader = pooch.HTTPDownloader(progressbar=True, timeout=30)
    fetcher.fetch(f.name, downloader=downloader)


def fetch_file(f: RemoteFile, mirrors: tuple[str, ...], dest: Path, retries: int = 2) -> Path:
    """Fetch one file from the first mirror that serves it with the right md5."""
    target = dest / f.name
    if target.is_file() and md5sum(target) == f.md5:
        log.info("%s already present and verified", f.name)
        return target
    errors = []
    for mirror in mirrors:
        try:
            if mirror.startswith(("http://", "https://")):
                _fetch_http(mirror, f, dest, retries)
            else:
                _copy_verified(Path(mirror), f, dest)
        except (OSError, ValueError, requests.RequestException) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("%s from %s failed: %s", f.name, mirror, reason)
            errors.append(f"{mirror} ({reason})")
            continue
        log.info("%s verified (md5 %s) from %s", f.name, f.md5, mirror)
        return target
    raise DataError(
        f"could not fetch a verified {f.name}; mirrors tried: {'; '.join(errors)}. "
        f"Set {MIRROR_ENV} to a folder or URL holding the official files."
    )


def download(dataset: str, dest: Path, mirrors: tuple[str, ...]) -> list[Path]:
    """Fetch every file of ``dataset`` into ``dest``."""
    spec = DATASETS[dataset]
    dest.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest)
    return [fetch_file(f, mirrors, dest) for f in spec.files]


def main() -> None:
    """``python -m birnn.download``"""

    def stage() -> None:
        params = load_params(paths.PARAMS)
        spec = DATASETS[params.data.dataset]
        mirrors = mirrors_from_env(os.environ.get(MIRROR_ENV), spec.mirrors)
        log.info("downloading %s into %s from %s", params.data.dataset, paths.RAW_DIR, mirrors)
        download(params.data.dataset, paths.RAW_DIR, mirrors)

    run_stage("download", stage)


if __name__ == "__main__":
    main()
