"""The champion as users get it: raw pixels in, loaded without this project, served over HTTP.

Runs before test_tracking.py (same session fixture): the workspace still holds the first run's
outputs, whose model is the champion.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests

from tests.conftest import REPO
from tests.helpers.mlflow_server import free_port, stop_group
from tests.helpers.pipeline import committed_predictions, raw_test
from tests.integration.conftest import NAME

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("on_the_server")]


CHAMPION = f"models:/{NAME}@champion"

# Loads a model in a process where this project cannot be imported (only what the model
# carries), predicts the pixels in x.npy and saves the probabilities.
WITHOUT_PROJECT = """
import sys
src = sys.argv[3]
sys.path[:] = [p for p in sys.path if p.rstrip("/") != src]
import importlib.util
assert importlib.util.find_spec("birnn") is None, "the project is importable"
import numpy as np, mlflow
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
np.save(sys.argv[4], model.predict(np.load(sys.argv[5])))
import birnn
print("birnn came from", birnn.__file__)
"""


def test_signature_and_input_example_are_raw_pixels(tracked) -> None:
    repo, _, client, run = tracked
    assert client.get_model_version_by_alias(NAME, "champion").run_id == run.info.run_id
    model = mlflow.pyfunc.load_model(CHAMPION)
    spec = model.metadata.signature.inputs.to_dict()[0]["tensor-spec"]
    assert spec["dtype"] == "float32" and list(spec["shape"]) == [-1, 28, 28]
    example = np.asarray(model.input_example)
    x, _ = raw_test(repo)
    np.testing.assert_array_equal(example, x[: len(example)].astype(np.float32))
    assert example.max() > 1.0  # pixel values 0-255, not scaled


def test_champion_predicts_like_evaluate_on_the_whole_test_set(tracked) -> None:
    repo, *_ = tracked
    x, _ = raw_test(repo)
    model = mlflow.pyfunc.load_model(CHAMPION)
    predicted = np.asarray(model.predict(x.astype(np.float32))).argmax(axis=1)
    np.testing.assert_array_equal(predicted, committed_predictions(repo))  # all 10,000


def load_without_project(server: str, uri: str, x: np.ndarray, tmp: Path) -> tuple[np.ndarray, str]:
    np.save(tmp / "x.npy", x.astype(np.float32))
    res = subprocess.run(
        [sys.executable, "-c", WITHOUT_PROJECT, server, uri, str(REPO / "src"),
         str(tmp / "out.npy"), str(tmp / "x.npy")],
        capture_output=True, text=True, timeout=300, cwd=tmp,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return np.load(tmp / "out.npy"), res.stdout


@pytest.mark.parametrize("variant", ["champion", "tied-gru"])
def test_model_loads_where_the_project_is_not_installed(tracked, server, tmp_path, variant):
    import keras

    from birnn import tracking
    from birnn.config import params_from_dict
    from birnn.model import build_model

    repo, *_ = tracked
    x, _ = raw_test(repo)
    x = x[:50]
    if variant == "champion":
        uri = CHAMPION
        expected = np.asarray(mlflow.pyfunc.load_model(uri).predict(x.astype(np.float32)))
    else:
        # A tied-direction GRU needs the custom TiedBidirectional layer: the model carries it.
        cfg = params_from_dict({"model": {"cell": "gru", "units": [6, 6], "tie_directions": True}})
        net = build_model(cfg.model)
        net.save(tmp_path / "tied.keras")
        mlflow.set_tracking_uri(server)
        with mlflow.start_run(experiment_id="0"):
            uri = tracking.log_model(tmp_path / "tied.keras", x[:3])
        expected = np.asarray(net.predict(x.astype(np.float32) / 255.0, verbose=0))
        keras.backend.clear_session()
    got, out = load_without_project(server, uri, x, tmp_path)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert "/code/birnn/__init__.py" in out, out  # the copy the model carries


def post(url: str, body: object, **kw) -> requests.Response:
    return requests.post(f"{url}/invocations", json=body, timeout=120, **kw)


def test_served_champion_answers_and_rejects_bad_requests(tracked, server, tmp_path) -> None:
    repo, env, *_ = tracked
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", CHAMPION,
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        env={**env, "MLFLOW_TRACKING_URI": server}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if requests.get(f"{url}/ping", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "mlflow models serve did not come up"
            time.sleep(0.5)
        x, y = raw_test(repo)
        x, y = x[:200], y[:200]
        res = post(url, {"inputs": x.tolist()})  # raw 0-255 integers, as JSON
        assert res.status_code == 200, res.text[:500]
        served = np.array(res.json()["predictions"], dtype=np.float32)
        local = np.asarray(mlflow.pyfunc.load_model(CHAMPION).predict(x.astype(np.float32)))
        np.testing.assert_allclose(served, local, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(served.argmax(axis=1), committed_predictions(repo)[:200])
        assert (served.argmax(axis=1) == y).mean() > 0.6

        big = np.full((3000, 28, 28), 255).tolist()  # about 12 MB of JSON
        for bad in (
            {"inputs": [[1, 2, 3]]},  # wrong shape
            {"inputs": [[["a"] * 28] * 28]},  # strings
            {"inputs": []},  # empty batch
            {"inputs": big},  # too many images for one request
            {"inputs": (np.full((1, 28, 28), 300)).tolist()},  # not a pixel value
        ):
            res = post(url, bad)
            assert 400 <= res.status_code < 500, (res.status_code, res.text[:300])
            assert res.json()["message"]
        assert post(url, {"inputs": x[:1].tolist()}).status_code == 200  # still answering
    finally:
        stop_group(proc)
        log.close()
