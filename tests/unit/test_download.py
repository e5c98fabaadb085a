"""Checksum verification and mirror selection, with small local files."""

from __future__ import annotations

from pathlib import Path

import pytest

from birnn.download import RemoteFile, fetch_file, md5sum, mirrors_from_env
from birnn.errors import DataError


def test_md5sum(tmp_path: Path) -> None:
    f = tmp_path / "a"
    f.write_bytes(b"hello")
    assert md5sum(f) == "5d41402abc4b2a76b9719d911017c592"


def test_folder_mirror_verified_copy(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "f.gz").write_bytes(b"hello")
    spec = RemoteFile("f.gz", "5d41402abc4b2a76b9719d911017c592")
    assert fetch_file(spec, (str(src),), dest).read_bytes() == b"hello"


def test_checksum_mismatch_fails_and_leaves_nothing(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    dest.mkdir()
    (src / "f.gz").write_bytes(b"tampered")
    spec = RemoteFile("f.gz", "5d41402abc4b2a76b9719d911017c592")
    with pytest.raises(DataError) as err:
        fetch_file(spec, (str(src),), dest)
    assert "md5 mismatch" in str(err.value)
    assert str(src) in str(err.value)
    assert list(dest.iterdir()) == []


def test_mirror_env_parsing(tmp_path: Path) -> None:
    default = ("https://example.org/",)
    assert mirrors_from_env(None, default) == default
    assert mirrors_from_env("  ", default) == default
    assert mirrors_from_env(f"{tmp_path} http://127.0.0.1:1/", default) == (
        str(tmp_path),
        "http://127.0.0.1:1/",
    )
    with pytest.raises(DataError, match="neither an http\\(s\\) URL nor an existing folder"):
        mirrors_from_env(str(tmp_path / "missing"), default)


def test_relative_mirror_folder_found_from_the_dvc_root(tmp_path: Path, monkeypatch) -> None:
    # Queued and --temp experiments run in a copy; DVC_ROOT names the real project.
    (tmp_path / "project" / "mirror").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(DataError):
        mirrors_from_env("mirror", ())
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "project"))
    assert mirrors_from_env("mirror", ()) == (str(tmp_path / "project" / "mirror"),)
