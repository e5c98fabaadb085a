"""The download stage against a real loopback HTTP server serving the real MNIST files."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from birnn.download import DATASETS, download, md5sum, mirrors_from_env
from birnn.errors import DataError
from tests.conftest import REPO, run_module

pytestmark = pytest.mark.integration

FILES = [f.name for f in DATASETS["mnist"].files]


def serve(httpserver: HTTPServer, folder: Path, corrupt: str | None = None) -> str:
    for name in FILES:
        data = (folder / name).read_bytes()
        if name == corrupt:
            data = data[: len(data) // 2]  # a truncated transfer
        httpserver.expect_request(f"/mnist/{name}").respond_with_data(
            data, content_type="application/octet-stream"
        )
    return httpserver.url_for("/mnist/")


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_download_over_http_verifies_real_files(
    httpserver: HTTPServer, mnist_dir: Path, tmp_path: Path
) -> None:
    base = serve(httpserver, mnist_dir)
    got = download("mnist", tmp_path / "raw", mirrors_from_env(base, ()))
    assert [p.name for p in got] == FILES
    for p in got:
        assert md5sum(p) == md5sum(mnist_dir / p.name)


def test_corrupted_transfer_fails_cleanly(
    httpserver: HTTPServer, mnist_dir: Path, tmp_path: Path
) -> None:
    base = serve(httpserver, mnist_dir, corrupt="t10k-labels-idx1-ubyte.gz")
    dest = tmp_path / "raw"
    with pytest.raises(DataError) as err:
        download("mnist", dest, (base,))
    msg = str(err.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and base in msg
    # The good files are there and whole; the corrupt one left nothing, not even a temp file.
    assert sorted(p.name for p in dest.iterdir()) == sorted(FILES[:3])


def test_every_mirror_unreachable_lists_them(tmp_path: Path) -> None:
    dead = (closed_port_url(), closed_port_url())
    with pytest.raises(DataError) as err:
        download("mnist", tmp_path / "raw", dead)
    for url in dead:
        assert url in str(err.value)
    assert list((tmp_path / "raw").iterdir()) == []


def stage_dir(tmp_path: Path) -> Path:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def test_stage_cli_over_http(httpserver: HTTPServer, mnist_dir: Path, tmp_path: Path) -> None:
    cwd = stage_dir(tmp_path)
    res = run_module("birnn.download", cwd, env={"BIRNN_DATA_MIRROR": serve(httpserver, mnist_dir)})
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (cwd / "data/raw").iterdir()) == sorted(FILES)


@pytest.mark.parametrize(
    ("mirror", "expected"),
    [
        ("{tmp}/no-such-folder", "is neither an http(s) URL nor an existing folder"),
        ("{dead}", "could not fetch a verified train-images-idx3-ubyte.gz; mirrors tried: "),
    ],
)
def test_stage_cli_bad_mirror_one_line_error(tmp_path: Path, mirror: str, expected: str) -> None:
    cwd = stage_dir(tmp_path)
    mirror = mirror.format(tmp=tmp_path, dead=closed_port_url())
    res = run_module("birnn.download", cwd, env={"BIRNN_DATA_MIRROR": mirror})
    assert res.returncode == 1
    errors = [line for line in res.stderr.splitlines() if line.startswith("birnn.download: error")]
    assert len(errors) == 1 and expected in errors[0], res.stderr
    assert "Traceback" not in res.stderr
