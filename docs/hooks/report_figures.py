"""MkDocs hook: the committed figures under ``reports/`` become files of the site.

The pages show the pipeline's own PNGs (``reports/figures/``, ``reports/sweep/``) without a copy
in ``docs/``: each is added at its repository path, so a page at the top of ``docs/`` links it
as ``reports/figures/loss.png``, and a figure that is gone is a broken link (a strict failure).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FOLDERS = ("reports/figures", "reports/sweep")


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    root = Path(config.config_file_path).parent
    for folder in FOLDERS:
        for png in sorted((root / folder).glob("*.png")):
            path = png.relative_to(root).as_posix()
            files.append(File(path, str(root), config.site_dir, config.use_directory_urls))
    return files
