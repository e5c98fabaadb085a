"""Lineage helpers, and dvc.yaml checked against what the code of each stage really reads."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml

from birnn import lineage
from birnn.config import Params

REPO = Path(__file__).resolve().parents[2]
STAGES = ("download", "preprocess", "train", "evaluate")
SECTIONS = {f.name for f in dataclasses.fields(Params)}


def params_sections_read(files: list[Path]) -> set[str]:
    """Sections reached as ``params.<section>``, or through a ``Params`` property."""
    properties = {
        name: {
            n.attr
            for n in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(prop.fget))))
            if isinstance(n, ast.Attribute) and n.attr in SECTIONS
        }
        for name, prop in vars(Params).items()
        if isinstance(prop, property)
    }
    found: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id == "params" and node.attr in SECTIONS:
                    found.add(node.attr)
                if node.value.id == "params" and node.attr in properties:
                    found |= properties[node.attr]
    return found


def dvc_stage(stage: str) -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_yaml_lists_every_module_the_stage_imports(stage: str) -> None:
    deps = {d if isinstance(d, str) else next(iter(d)) for d in dvc_stage(stage)["deps"]}
    needed = {p.relative_to(REPO).as_posix() for p in lineage.stage_modules(stage)}
    assert needed - deps == set(), f"dvc.yaml stage {stage} misses these deps"
    code_deps = {d for d in deps if d.startswith("src/")}
    assert code_deps - needed == set(), f"dvc.yaml stage {stage} lists modules it never runs"


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_yaml_lists_every_params_section_the_stage_reads(stage: str) -> None:
    read = params_sections_read(lineage.stage_modules(stage))
    assert read, stage
    assert set(dvc_stage(stage)["params"]) == read


def test_stage_modules_follow_imports_inside_functions(tmp_path: Path) -> None:
    pkg = tmp_path / "birnn"
    pkg.mkdir()
    (pkg / "a.py").write_text("from birnn import b\n")
    (pkg / "b.py").write_text("def f():\n    from birnn.c import thing\n")
    (pkg / "c.py").write_text("import os\nimport birnn.d\n")
    (pkg / "d.py").write_text("")
    (pkg / "e.py").write_text("")
    names = [p.name for p in lineage.stage_modules("a", package_dir=pkg)]
    assert names == ["a.py", "b.py", "c.py", "d.py"]


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_never_reaches_the_tools_around_the_pipeline(stage: str) -> None:
    # The sweep, the stack, serving, promote and the command line drive stages; a stage that
    # imported them would re-run whenever they change (and drag MLflow's server side or Optuna
    # in).
    tools = {"cli.py", "promote.py", "predict.py", "sweep", "stack", "serve"}
    reached = {p.relative_to(lineage.PACKAGE_DIR).parts[0] for p in lineage.stage_modules(stage)}
    assert reached & tools == set()


def test_stage_modules_follow_sub_packages_and_their_init(tmp_path: Path) -> None:
    pkg = tmp_path / "birnn"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("from birnn.sub import b\nfrom birnn.sub.c import thing\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("import birnn.d\n")
    (pkg / "sub" / "c.py").write_text("thing = 1\n")
    (pkg / "sub" / "unused.py").write_text("")
    (pkg / "d.py").write_text("")
    got = [p.relative_to(pkg).as_posix() for p in lineage.stage_modules("a", package_dir=pkg)]
    assert got == ["a.py", "d.py", "sub/__init__.py", "sub/b.py", "sub/c.py"]
    # A module moved into a sub-package changes the digest, even with the same bytes.
    (pkg / "sub" / "d.py").write_text("")
    assert lineage.code_digest([pkg / "d.py"], package_dir=pkg) != lineage.code_digest(
        [pkg / "sub" / "d.py"], package_dir=pkg
    )


def test_code_digest_changes_with_any_file(tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")
    before = lineage.code_digest([a, b])
    assert lineage.code_digest([b, a]) == before
    b.write_text("y = 3\n")
    assert lineage.code_digest([a, b]) != before


def test_dvc_md5_matches_dvc_for_files_and_folders(tmp_path: Path) -> None:
    # The md5s DVC itself recorded for the committed run's outputs (dvc.lock) and known digests.
    (tmp_path / "f.txt").write_bytes(b"hello\n")
    assert lineage.dvc_md5(tmp_path / "f.txt") == "b1946ac92492d2347c6235b4d2611184"
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    figures = next(o for o in lock["evaluate"]["outs"] if o["path"] == "reports/figures")
    assert lineage.dvc_md5(REPO / "reports/figures") == figures["md5"]
    metrics = next(o for o in lock["evaluate"]["outs"] if o["path"] == "reports/metrics.json")
    assert lineage.dvc_md5(REPO / "reports/metrics.json") == metrics["md5"]
    copy = tmp_path / "figures"
    shutil.copytree(REPO / "reports/figures", copy)
    (copy / "loss.png").write_bytes(b"changed")
    assert lineage.dvc_md5(copy) != figures["md5"]
