"""`birnn predict` on real test digits rendered as image files, against the served champion."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image

from birnn.data import load_raw
from tests.helpers.mlflow_server import free_port
from tests.integration.conftest import NAME

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("on_the_server")]


BIRNN = str(Path(sys.executable).parent / "birnn")
CHAMPION = f"models:/{NAME}@champion"


def birnn_predict(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([BIRNN, "predict", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def render(digit: np.ndarray, style: str, rng: np.random.Generator) -> Image.Image:
    """A 28x28 MNIST digit drawn larger and off centre: white on black, or ink on paper."""
    img = Image.fromarray(digit)
    if style == "mnist":
        page = Image.new("L", (130, 110), 0)
        page.paste(img.resize((84, 84), Image.Resampling.BICUBIC),
                   (int(rng.integers(0, 46)), int(rng.integers(0, 26))))  # fmt: skip
        return page
    page = Image.new("RGB", (160, 130), (245, 245, 240))
    mask = img.resize((84, 84), Image.Resampling.BICUBIC)
    page.paste(Image.new("RGB", (84, 84), (20, 20, 30)),
               (int(rng.integers(0, 76)), int(rng.integers(0, 46))), mask)  # fmt: skip
    return page


@pytest.fixture(scope="module")
def rendered(tracked, server, tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """Test digits the champion reads right and surely as 28x28 pixels (the test's model is
    small: ~0.8 accuracy), rendered as PNG and JPEG files."""
    repo, *_ = tracked
    mlflow.set_tracking_uri(server)
    raw = load_raw(repo / "data/raw")
    x, y = raw["x_test"][:300], raw["y_test"][:300]
    probs = mlflow.pyfunc.load_model(CHAMPION).predict(x.astype(np.float32))
    right = probs[np.arange(len(y)), y] >= 0.9
    folder = tmp_path_factory.mktemp("digits")
    rng = np.random.default_rng(7)
    labels = {}
    for i in np.flatnonzero(right)[:60]:
        render(x[i], "mnist", rng).save(folder / f"mnist{i:03d}.png")
        render(x[i], "paper", rng).save(folder / f"paper{i:03d}.jpg", quality=92)
        labels[f"mnist{i:03d}.png"] = labels[f"paper{i:03d}.jpg"] = int(y[i])
    return folder, labels


def test_predicts_rendered_digits_in_both_styles(tracked, server, rendered, tmp_path) -> None:
    _, env, *_ = tracked
    folder, labels = rendered
    out = tmp_path / "preds.csv"
    # As a user runs it (the tests' environment quiets TensorFlow): on stderr only the
    # command's own lines, no TensorFlow or absl start-up lines, warnings or progress bars.
    env = {k: v for k, v in env.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    res = birnn_predict(str(folder), "--output", str(out), "--model", CHAMPION,
                        env={**env, "MLFLOW_TRACKING_URI": server}, cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert (
        res.stderr.splitlines()
        == [ln for ln in res.stderr.splitlines() if " birnn.predict INFO wrote " in ln]
        and len(res.stderr.splitlines()) == 1
    ), res.stderr[-3000:]
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(labels)
    for style in ("mnist", "paper"):
        mine = [r for r in rows if Path(r["file"]).name.startswith(style)]
        right = sum(int(r["digit"]) == labels[Path(r["file"]).name] for r in mine)
        assert right / len(mine) >= 0.95, (style, right, len(mine))


def test_json_top_k_and_bad_files(tracked, server, rendered, tmp_path) -> None:
    _, env, *_ = tracked
    folder, labels = rendered
    good = sorted(folder.glob("*.png"))[0]
    (tmp_path / "notes.png").write_text("not an image")
    Image.new("L", (40, 40), 255).save(tmp_path / "blank.png")
    args = [str(good), str(tmp_path / "missing.png"), str(tmp_path / "notes.png"),
            str(tmp_path / "blank.png"), "--json", "--top", "3", "--model", CHAMPION]  # fmt: skip
    env = {k: v for k, v in env.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    res = birnn_predict(*args, env={**env, "MLFLOW_TRACKING_URI": server}, cwd=tmp_path)
    assert res.returncode == 1  # some files failed ...
    out = json.loads(res.stdout)  # ... the others are still predicted
    (row,) = out["predictions"]
    assert row["digit"] == labels[good.name] and len(row["top"]) == 3
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("birnn predict: error:")]
    assert len(errors) == 3 and errors == res.stderr.splitlines(), res.stderr  # nothing else
    assert "missing.png: no such file" in errors[0]
    assert "notes.png: not an image" in errors[1]
    assert "blank.png: the image is empty" in errors[2]
    assert "Traceback" not in res.stderr


def test_verbose_shows_what_a_normal_run_silences(tracked, server, rendered, tmp_path) -> None:
    _, env, *_ = tracked
    folder, _ = rendered
    image = str(sorted(folder.glob("*.png"))[0])
    env = {k: v for k, v in env.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["MLFLOW_TRACKING_URI"] = server
    res = birnn_predict(image, "--model", CHAMPION, "--verbose", env=env, cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.startswith(image), res.stderr[-3000:]
    # TensorFlow's own start-up lines (their wording is TensorFlow's) and MLflow's warnings.
    assert res.stderr.strip() and "birnn predict: error" not in res.stderr, res.stderr


@pytest.mark.parametrize("case", ["unknown alias", "unreachable store"])
def test_model_problems_are_one_line(tracked, server, rendered, tmp_path, case) -> None:
    _, env, *_ = tracked
    folder, _ = rendered
    image = str(sorted(folder.glob("*.png"))[0])
    if case == "unknown alias":
        env = {**env, "MLFLOW_TRACKING_URI": server}
        res = birnn_predict(image, "--model", f"models:/{NAME}@no-such-alias", env=env,
                            cwd=tmp_path)  # fmt: skip
        expected = f"cannot load model models:/{NAME}@no-such-alias"
    else:
        env = {**env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
        res = birnn_predict(image, env=env, cwd=tmp_path)
        expected = "is unreachable"
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("birnn predict: error:")]
    assert len(lines) == 1 and expected in lines[0], res.stderr
    assert "Traceback" not in res.stderr
