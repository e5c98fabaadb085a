"""`birnn serve` against a real `mlflow server`: MLflow's protocol and 400s, Parquet batches,
the champion followed through a swap under load and through a registry outage, the limits,
/metrics, `birnn predict --server`, and the page in a real headless browser.

The model is the session's small tracked run (conftest.py), registered again under names of
these tests' own, so moving their champion touches no other test's.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
from mlflow.tracking import MlflowClient
from PIL import Image, ImageDraw

from birnn import tracking
from birnn.predict import to_mnist
from birnn.serve.client import PARQUET, VERSION_HEADER, parquet_body
from birnn.serve.follow import SCORES
from tests.helpers.mlflow_server import mlflow_server, stop_group
from tests.helpers.pipeline import committed_predictions, raw_test
from tests.helpers.serve import birnn_serve, copy_versions, mlflow_models_serve, move, started
from tests.integration.conftest import NAME
from tests.integration.test_predict import birnn_predict, render

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("on_the_server")]
log = logging.getLogger(__name__)

SERVED = "birnn-serve-test"
CHROMIUM = os.environ.get("BIRNN_CHROMIUM") or next(
    (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))),
    "/usr/bin/chromium",
)


@pytest.fixture(scope="module")
def served(tracked, server, tmp_path_factory):
    """`birnn serve` following SERVED@champion (two versions of the tracked model, version 1
    champion), polling every 0.5 s; and `mlflow models serve` of the same model beside it."""
    repo, env, client, _ = tracked
    champion = client.get_model_version_by_alias(NAME, "champion")
    scores = {k: v for k, v in champion.tags.items() if k in SCORES}
    versions = copy_versions(client, champion.source, SERVED, 2, scores)
    move(client, SERVED, versions[0], None)
    tmp = tmp_path_factory.mktemp("serve")
    env = {**env, "MLFLOW_TRACKING_URI": server}
    # Both at once: their start-ups overlap.
    ours = birnn_serve("--model", f"models:/{SERVED}@champion", "--poll-interval", "0.5")
    theirs = mlflow_models_serve(f"models:/{SERVED}/1")
    with started([(ours, tmp / "serve.log"), (theirs, tmp / "mlflow.log")], env, repo) as both:
        birnn, reference = both
        yield {"birnn": birnn, "mlflow": reference, "repo": repo, "env": env, "client": client,
               "versions": versions}  # fmt: skip


def post(url: str, body: object = None, data: bytes | None = None, ctype: str | None = None):
    headers = {"Content-Type": ctype} if ctype else None
    return requests.post(f"{url}/invocations", json=body, data=data, headers=headers, timeout=120)


def same_text(message: str) -> str:
    """A message with each Python set in it in one order (a set's order differs by process)."""
    return re.sub(r"\{[^{}]*\}", lambda m: str(sorted(m.group(0).strip("{}").split(", "))), message)


def test_answers_as_mlflow_models_serve_does_and_parquet_batches_match(served) -> None:
    ours, theirs, repo = served["birnn"].url, served["mlflow"].url, served["repo"]
    x, _ = raw_test(repo)
    x = x[:256]
    res = post(ours, {"inputs": x.tolist()})
    assert res.status_code == 200, res.text[:300]
    assert res.headers[VERSION_HEADER] == "1"
    probs = np.array(res.json()["predictions"], dtype=np.float32)
    assert res.json() == post(theirs, {"inputs": x.tolist()}).json()
    np.testing.assert_array_equal(probs.argmax(axis=1), committed_predictions(repo)[:256])
    parquet = post(ours, data=parquet_body(x), ctype=PARQUET)
    assert parquet.status_code == 200, parquet.text[:300]
    np.testing.assert_allclose(parquet.json()["predictions"], probs, rtol=0, atol=1e-6)

    # The same status and error for every bad request as MLflow's own server.
    big = np.full((2049, 28, 28), 255, dtype=np.uint8)
    for name, kw in {
        "wrong shape": {"body": {"inputs": [[1, 2, 3]]}},
        "strings": {"body": {"inputs": [[["a"] * 28] * 28]}},
        "empty batch": {"body": {"inputs": []}},
        "not pixels": {"body": {"inputs": np.full((1, 28, 28), 300).tolist()}},
        "no inputs key": {"body": {"instancez": [1]}},
        "not JSON": {"data": b"{nope", "ctype": "application/json"},
        "malformed Parquet": {"data": b"PAR1 this is no parquet", "ctype": PARQUET},
        "too many images": {"data": parquet_body(big), "ctype": PARQUET},
        "unknown type": {"data": b"1,2", "ctype": "text/plain"},
    }.items():
        a, b = post(ours, **kw), post(theirs, **kw)
        assert a.status_code == b.status_code and 400 <= a.status_code < 500, (name, a.text[:300])
        if a.headers.get("content-type", "").startswith("application/json"):
            assert a.json()["error_code"] == b.json()["error_code"], name
            assert same_text(a.json()["message"]) == same_text(b.json()["message"]), name
    for path in ("/ping", "/health", "/version"):
        a, b = requests.get(ours + path, timeout=10), requests.get(theirs + path, timeout=10)
        assert (a.status_code, a.text) == (b.status_code, b.text), path


def test_limits_answer_quickly_and_the_server_keeps_serving(served) -> None:
    url = served["birnn"].url
    host, port = url.removeprefix("http://").split(":")
    # A 20 MB body: refused from its Content-Length, before it is sent.
    t0 = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 20000000\r\n\r\n" + b"[" * 65536)  # fmt: skip
        head = b""
        while chunk := sock.recv(65536):  # the server closes the connection after it
            head += chunk
        head = head.decode()
    assert head.startswith("HTTP/1.1 413"), head[:300]
    assert "at most 16777216" in head and time.monotonic() - t0 < 5
    # ... and sent whole, as a client that does not read early answers does.
    res = requests.post(f"{url}/invocations", data=b"0" * 20_000_000,
                        headers={"Content-Type": "application/json"}, timeout=60)  # fmt: skip
    assert res.status_code == 413
    # An image file of 25 megapixels (a small PNG): refused before it is decoded.
    big = io.BytesIO()
    Image.new("L", (5000, 5000)).save(big, "PNG")
    res = requests.post(f"{url}/classify", data=big.getvalue(), timeout=30)
    assert res.status_code == 400 and "5000x5000 pixels; at most" in res.json()["message"]
    x, _ = raw_test(served["repo"])
    assert post(url, {"inputs": x[:1].tolist()}).status_code == 200  # still answering


def swaps_so_far(url: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return float(
        next(ln for ln in text.splitlines() if ln.startswith("birnn_model_swaps_total")).split()[-1]
    )


@pytest.fixture()
def champion_back(served):
    """After the test, version 1 is champion again and served (the other tests expect it)."""
    yield
    client, (v1, v2), url = served["client"], served["versions"], served["birnn"].url
    if client.get_model_version_by_alias(SERVED, "champion").version != v1:
        move(client, SERVED, v1, v2)
    deadline = time.monotonic() + 60
    while requests.get(f"{url}/model", timeout=10).json()["version"] != v1:
        assert time.monotonic() < deadline, "version 1 was not served again"
        time.sleep(0.2)


@pytest.mark.usefixtures("champion_back")
def test_follows_the_champion_through_a_swap_under_load(served) -> None:
    url, client, (v1, v2) = served["birnn"].url, served["client"], served["versions"]
    x, _ = raw_test(served["repo"])
    one = {"inputs": x[:1].tolist()}
    batch = parquet_body(x[:32])
    answers: list[tuple[float, float, int, str]] = []  # (sent, answered, status, version)
    stop = threading.Event()

    def client_loop(i: int) -> None:
        with requests.Session() as s:
            while not stop.is_set():
                sent = time.monotonic()
                if i % 2:
                    r = s.post(f"{url}/invocations", json=one, timeout=60)
                else:
                    r = s.post(f"{url}/invocations", data=batch, timeout=60,
                               headers={"Content-Type": PARQUET})  # fmt: skip
                answers.append(
                    (sent, time.monotonic(), r.status_code, r.headers.get(VERSION_HEADER))
                )

    swaps = swaps_so_far(url)
    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        moved = time.monotonic()
        move(client, SERVED, v2, v1)
        deadline = moved + 60
        while not any(v == v2 for *_, v in answers):
            assert time.monotonic() < deadline, "the new champion was never served"
            time.sleep(0.1)
        first_new = min(done for _, done, _, v in answers if v == v2)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    log.warning("swap: %d requests by 8 clients, the new version answered %.1f s after the move",
                len(answers), first_new - moved)  # fmt: skip
    assert {status for _, _, status, _ in answers} == {200}
    assert {v for *_, v in answers} == {v1, v2}
    assert all(v == v2 for sent, _, _, v in answers if sent > first_new)  # never back
    model = requests.get(f"{url}/model", timeout=10).json()
    assert (model["registered_model"], model["version"], model["alias"]) == (SERVED, v2, "champion")
    assert model["run_id"] and "test_accuracy" in model["metrics"]
    metrics = requests.get(f"{url}/metrics", timeout=10).text
    assert swaps_so_far(url) == swaps + 1
    assert f'birnn_model_info{{alias="champion",registered_model="{SERVED}",' in metrics
    assert f'version="{v2}"}} 1.0' in metrics and f'version="{v1}"}} 1.0' not in metrics
    assert f'birnn_images_total{{version="{v2}"}}' in metrics
    assert 'birnn_requests_total{endpoint="/invocations",status="200"}' in metrics
    assert "birnn_request_seconds_bucket" in metrics and "birnn_predicted_digits_total" in metrics
    out = served["birnn"].output()
    assert f"{SERVED}@champion moved: now serving version {v2} (was {v1}" in out
    # Quiet: only its own lines (no TensorFlow start-up lines, library warnings or requests).
    assert all(re.match(r"\d\d:\d\d:\d\d birnn\.serve", ln) for ln in out.splitlines()), out


def test_predict_server_sends_parquet_and_names_the_version(served, tmp_path) -> None:
    url, repo, env = served["birnn"].url, served["repo"], served["env"]
    x, y = raw_test(repo)
    right = np.flatnonzero(committed_predictions(repo)[:100] == y[:100])[:12]
    rng = np.random.default_rng(3)
    for i in right:
        render(x[i], "paper", rng).save(tmp_path / f"d{i:03d}.png")
    res = birnn_predict(str(tmp_path), "--server", url, "--json", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["model"].startswith(url) and "(version " in out["model"]
    got = {Path(p["file"]).name: p["digit"] for p in out["predictions"]}
    assert sum(got[f"d{i:03d}.png"] == y[i] for i in right) >= len(right) - 1
    assert res.stderr.strip().splitlines()[-1].endswith("predictions.csv")  # only its own line
    dead = birnn_predict(str(tmp_path), "--server", "http://127.0.0.1:9", env=env, cwd=tmp_path)
    assert dead.returncode == 1
    assert dead.stderr.strip() == ("birnn predict: error: server http://127.0.0.1:9 is "
                                   "unreachable (ConnectionError)")  # fmt: skip


def test_registry_down_keeps_serving_logs_once_and_recovers(tracked, tmp_path) -> None:
    repo, env, _, _ = tracked
    root = tmp_path / "registry"
    root.mkdir()
    port = None
    x, _ = raw_test(repo)
    one = {"inputs": x[:1].tolist()}
    procs: list = []
    with mlflow_server(root, started=procs) as uri:
        port = int(uri.rsplit(":", 1)[1])
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run(experiment_id="0"):
            source = tracking.log_model(repo / "models/model.keras", x[:3])
        client = MlflowClient(uri)
        (v1,) = copy_versions(client, source, "birnn-outage", 1)
        move(client, "birnn-outage", v1, None)
        serve_env = {**env, "MLFLOW_TRACKING_URI": uri}
        follow = birnn_serve("--model", "models:/birnn-outage@champion", "--poll-interval", "0.5")
        with started([(follow, tmp_path / "serve.log")], serve_env, repo) as (s,):
            stop_group(procs[0])  # the registry goes away
            t0 = time.monotonic()
            while "cannot look birnn-outage@champion up" not in s.output():
                assert post(s.url, one).status_code == 200
                assert time.monotonic() - t0 < 60, s.output()[-2000:]
            for _ in range(20):  # more polls fail; requests keep being answered
                assert post(s.url, one).status_code == 200
                time.sleep(0.25)
            errors = requests.get(f"{s.url}/metrics", timeout=10).text
            with mlflow_server(root, port=port):  # back where the server points
                (v2,) = copy_versions(client, source, "birnn-outage", 1)
                move(client, "birnn-outage", v2, v1)
                deadline = time.monotonic() + 60
                while post(s.url, one).headers.get(VERSION_HEADER) != v2 or (
                    "now serving version 2" not in s.output()
                ):
                    assert time.monotonic() < deadline, s.output()[-2000:]
                    time.sleep(0.2)
                # Read while the registry is still up: once this block stops it, the next poll
                # is a second outage, with a line of its own (seen in a full run under load).
                out = s.output()
    log.warning("registry outage, as birnn serve logged it:\n%s", out.strip())
    # One line when lookups start failing, one when they work again; no library's lines.
    assert out.count("cannot look birnn-outage@champion up") == 1, out
    assert out.count("the registry answers again") == 1, out
    assert "now serving version 2 (was 1" in out
    assert all(re.match(r"\d\d:\d\d:\d\d birnn\.serve", ln) for ln in out.splitlines()), out
    failed = [ln for ln in errors.splitlines() if ln.startswith("birnn_registry_poll_errors_total")]
    assert failed and float(failed[0].split()[-1]) >= 2


def strokes(digit: np.ndarray, scale: int = 10) -> list[tuple[float, float, float]]:
    """A 28x28 digit as pen strokes on a canvas ``scale`` times larger: each run of ink
    (the stroke's core, > 200) in a row, as (x0, x1, y)."""
    out = []
    for r, row in enumerate(digit > 200):
        c = 0
        while c < 28:
            if not row[c]:
                c += 1
                continue
            start = c
            while c < 28 and row[c]:
                c += 1
            out.append(((start + 0.5) * scale, (c - 0.5) * scale, (r + 0.5) * scale))
    return out


def drawn(digit: np.ndarray) -> Image.Image:
    """What the page's canvas shows after :func:`draw` (20 px round pen, white on black)."""
    img = Image.new("RGB", (280, 280), "black")
    pen = ImageDraw.Draw(img)
    for x0, x1, y in strokes(digit):
        pen.line([(x0, y), (x1, y)], fill="white", width=20)
        for x in (x0, x1):
            pen.ellipse([x - 10, y - 10, x + 10, y + 10], fill="white")
    return img


def draw(page, digit: np.ndarray) -> None:
    """Draw the digit on the page's canvas with the mouse, stroke by stroke."""
    box = page.locator("#pad").bounding_box()
    for x0, x1, y in strokes(digit):
        page.mouse.move(box["x"] + x0, box["y"] + y)
        page.mouse.down()
        page.mouse.move(box["x"] + x1, box["y"] + y, steps=3)
        page.mouse.up()


def test_the_page_reads_a_drawn_digit_in_a_real_browser(served, tmp_path) -> None:
    if not Path(CHROMIUM).is_file():
        why = f"no chromium at {CHROMIUM} (.ci/run installs Debian's; BIRNN_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(why)  # CI installs it: a browser test that silently skips there hides
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    url, repo = served["birnn"].url, served["repo"]
    x, y = raw_test(repo)
    # A real test digit whose drawing this small test model (~0.8 accuracy) reads surely, as
    # the server will see it (converted like `birnn predict`).
    model = mlflow.pyfunc.load_model(f"models:/{SERVED}/1")
    seen = np.stack([to_mnist(drawn(x[j])) for j in range(40)]).astype(np.float32)
    probs = np.asarray(model.predict(seen))
    i = next(j for j in range(40) if probs[j].argmax() == y[j] and probs[j].max() > 0.9)
    flags = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 600})
            page.goto(url + "/")
            draw(page, x[i])
            # One request per stroke, each sent once its stroke ends: wait for the last answer.
            page.wait_for_selector(f'body[data-answered="{len(strokes(x[i]))}"]')
            answer = page.inner_text("#answer-digit")
            top = page.locator("#top li").evaluate_all(
                "lis => lis.map(li => [+li.dataset.digit, +li.dataset.probability])"
            )
            version = page.inner_text("#model-version")
            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot))
            log.warning("drew test image %d (a %d): the page read %s; screenshot %s",
                        i, y[i], top, shot)  # fmt: skip
            assert answer == str(y[i]) and top[0][0] == y[i] and len(top) == 3
            assert 0 < sum(pr for _, pr in top) <= 1.0001
            now = requests.get(f"{url}/model", timeout=10).json()["version"]
            assert version == f"{SERVED} version {now} (champion)"
            # An image file dropped in (dark ink on paper): the same conversion as predict.
            png = tmp_path / "paper.png"
            render(x[i], "paper", np.random.default_rng(1)).save(png)
            page.click("#clear")
            page.set_input_files("#file", str(png))
            page.wait_for_selector(f'body[data-answered="{len(strokes(x[i])) + 1}"]')
            assert page.inner_text("#answer-digit") == str(y[i])
        finally:
            browser.close()
    assert Image.open(io.BytesIO(shot.read_bytes())).size == (900, 600)
