"""MkDocs hook: "Who imports whom" in ``docs/architecture.md``, generated from the source.

The marker line ``<!-- import-graph -->`` is replaced by one line per module of ``birnn``:
the ``birnn`` modules it imports (module level or inside functions), read with the same
:mod:`birnn.lineage` walk that derives each stage's code deps in ``dvc.yaml``. A module added,
moved or rewired shows up on the next build; nothing here is typed by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MARKER = "<!-- import-graph -->"
PAGE = "architecture.md"


def modules(package_dir: Path) -> list[str]:
    """Every module of the package, dotted below it (``sweep.space``); packages by name."""
    names = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        if parts and parts[-1] != "__main__":
            names.append(".".join(parts))
    return names


def graph(package_dir: Path) -> str:
    """A fenced block: ``module --> imports`` for every module, stages first."""
    from birnn import lineage

    stages = ["download", "preprocess", "train", "evaluate"]
    names = modules(package_dir)
    order = stages + [n for n in names if n not in stages]
    width = max(len(n) for n in names)
    lines = []
    for name in order:
        path = lineage._module_file(name, package_dir)
        imported = sorted(lineage._imports_of(path, package_dir) - {name})
        lines.append(f"{name:<{width}} --> {' '.join(imported) or '(no birnn import)'}")
    return "```\n" + "\n".join(lines) + "\n```"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    from mkdocs.exceptions import PluginError

    if MARKER not in markdown:
        raise PluginError(f"docs/{PAGE} lost its marker {MARKER}")
    root = Path(config.config_file_path).parent
    return markdown.replace(MARKER, graph(root / "src" / "birnn"))
