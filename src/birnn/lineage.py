"""Where a result came from: the code a stage runs, the data it reads and writes, git state.

No MLflow here: stages turn these facts into run tags through :mod:`birnn.tracking`.

- :func:`stage_modules` derives, from the source itself, every ``birnn`` module a stage imports
  (transitively); ``dvc.yaml`` must list each as a dep, and the training checkpoint hashes them.
- :func:`dvc_md5` hashes a file or folder exactly as DVC records it in ``dvc.lock``, so a run's
  tags can be checked against the lock file and name the very bytes the stage used.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

PACKAGE = "birnn"
PACKAGE_DIR = Path(__file__).resolve().parent


def _module_file(name: str, package_dir: Path) -> Path | None:
    """The source of ``birnn.<name>`` (``name`` dotted below the package: ``sweep.space``):
    a module file or a sub-package's ``__init__.py``; None for anything else."""
    base = package_dir.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports_of(path: Path, package_dir: Path) -> set[str]:
    """``birnn`` modules (dotted below the package) that ``path`` imports anywhere, module
    level or inside functions, with every sub-package on the way (Python runs its
    ``__init__.py`` first)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from birnn import tracking` imports birnn.tracking; `from birnn.x import y`
            # imports x, and y too when y is a module of the sub-package x.
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] != PACKAGE:
                continue
            for depth in range(2, len(parts) + 1):
                dotted = ".".join(parts[1:depth])
                if _module_file(dotted, package_dir) is not None:
                    found.add(dotted)
    return found


def stage_modules(module: str, package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Source files of ``birnn.<module>`` and every ``birnn`` module it reaches, sorted."""
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name, package_dir)
        if path is None:
            raise ValueError(f"no module birnn.{name} in {package_dir}")
        todo.extend(_imports_of(path, package_dir) - seen)
    return sorted(_module_file(name, package_dir) for name in seen)


def code_digest(files: list[Path], package_dir: Path = PACKAGE_DIR) -> str:
    """sha256 over the paths (below the package) and bytes of source files: changes when any
    of them changes, is renamed or moves."""
    digest = hashlib.sha256()
    for path in sorted(files):
        name = (
            path.relative_to(package_dir).as_posix()
            if path.is_relative_to(package_dir)
            else path.name
        )
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def dvc_md5(path: str | Path) -> str:
    """The md5 DVC records for ``path``: the file's md5, or the ``<md5>.dir`` of a folder."""
    from dvc_data.hashfile.meta import Meta
    from dvc_data.hashfile.tree import Tree

    path = Path(path)
    if path.is_file():
        return _file_hash_info(path).value
    tree = Tree()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        tree.add(f.relative_to(path).parts, Meta(size=f.stat().st_size), _file_hash_info(f))
    tree.digest()
    return tree.hash_info.value


def _file_hash_info(path: Path) -> Any:
    # A stage hashes its data twice (MLflow dataset digest, then lineage tags): once per
    # file version is enough, so the result is kept by path, size and modification time.
    stat = path.stat()
    return _hash_info(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _hash_info(path: str, size: int, mtime_ns: int) -> Any:
    from dvc_data.hashfile.hash import hash_file
    from dvc_objects.fs import localfs

    return hash_file(path, localfs, "md5")[1]


def _stage_paths(entries: list) -> list[str]:
    # dvc.yaml lists a path as a string or as a one-key mapping with options.
    return [next(iter(e)) if isinstance(e, dict) else str(e) for e in entries or []]


def stage_data_hashes(stage: str, dvc_yaml: Path = Path("dvc.yaml")) -> dict[str, str]:
    """``dvc.<stage>.<path>.md5`` for the stage's data deps and its outputs, hashed now.

    Code deps (``src/``) are covered by the git commit tag. Missing paths are skipped; without
    a ``dvc.yaml`` (a stage run outside a DVC project) there is nothing to record.
    """
    if not dvc_yaml.is_file():
        return {}
    spec = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}).get(stage) or {}
    paths = [p for p in _stage_paths(spec.get("deps")) if not p.startswith("src/")]
    for key in ("outs", "metrics", "plots"):
        paths += _stage_paths(spec.get(key))
    root = dvc_yaml.parent
    return {f"dvc.{stage}.{p}.md5": dvc_md5(root / p) for p in paths if (root / p).exists()}


def stage_outputs(dvc_yaml: Path = Path("dvc.yaml")) -> list[str]:
    """Every path that a stage of ``dvc.yaml`` writes (outs, metrics, plots)."""
    if not dvc_yaml.is_file():
        return []
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages") or {}
    return [
        p for spec in stages.values() for k in ("outs", "metrics", "plots")
        for p in _stage_paths((spec or {}).get(k))
    ]  # fmt: skip


def git(*args: str) -> str | None:
    """Output of a git command in the working directory, or None outside a repo."""
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.rstrip()  # keep leading blanks: `git status --porcelain` columns start with one


def git_branch() -> str | None:
    """The checked-out branch; on a detached HEAD (CI checkouts), ``GITHUB_REF_NAME``."""
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    if branch in (None, "HEAD"):
        return os.environ.get("GITHUB_REF_NAME") or None
    return branch


def uncommitted_changes(dvc_yaml: Path = Path("dvc.yaml")) -> list[str] | None:
    """Tracked files changed since the last commit, except ``dvc.lock`` and pipeline outputs.

    A stage rewrites ``dvc.lock`` and its outputs as it runs, so they do not make a run
    "dirty"; a changed ``params.yaml`` or source file does. None outside a git repo.
    """
    status = git("status", "--porcelain", "--untracked-files=no")
    if status is None:
        return None
    outputs = [*stage_outputs(dvc_yaml), "dvc.lock"]
    changed = [line[3:].strip() for line in status.splitlines() if line.strip()]
    return [
        f for f in changed if not any(f == o or f.startswith(o.rstrip("/") + "/") for o in outputs)
    ]
