"""The docs site builds with --strict, and its params reference fails on params drift."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO

HOOK = REPO / "docs" / "hooks" / "params_reference.py"


def load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("params_reference", HOOK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_docs_build_strict(tmp_path: Path) -> None:
    # --strict: a broken link or anchor, a page outside the nav or a params drift fails it.
    res = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert res.returncode == 0, res.stderr
    params_page = (tmp_path / "params" / "index.html").read_text(encoding="utf-8")
    assert "<code>train.learning_rate</code>" in params_page  # the generated tables
    assert "<!-- params-reference -->" not in params_page  # the marker was replaced


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        # A key params.yaml has and the dataclasses lack ...
        (
            "train:\n",
            "train:\n  # Not in TrainConfig.\n  warmup_epochs: 2\n",
            "train.warmup_epochs",
        ),
        # ... and a field the dataclasses have and params.yaml lacks.
        ("  unroll: true\n", "", "model.unroll"),
    ],
)
def test_params_reference_fails_on_drift(tmp_path: Path, old: str, new: str, key: str) -> None:
    hook = load_hook()
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    assert "| `train.epochs` |" in hook.reference(text)

    drifted = tmp_path / "params.yaml"
    assert text.count(old) == 1
    drifted.write_text(text.replace(old, new), encoding="utf-8")
    with pytest.raises(hook.ParamsDrift, match=re.escape(key)):
        hook.reference(drifted.read_text(encoding="utf-8"))
