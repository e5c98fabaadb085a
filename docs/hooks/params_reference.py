"""MkDocs hook: the params reference in ``docs/params.md``, generated from the code at build time.

The marker line ``<!-- params-reference -->`` in ``params.md`` is replaced by one table per
``params.yaml`` section: each key's type and default (from the frozen dataclasses of
:mod:`birnn.config`), the comment lines directly above the key in ``params.yaml``, and its
current value there. A key that ``params.yaml`` has and the dataclasses lack, or the other way
round, fails the build, so the page cannot drift from the code.

The core is the pure function :func:`reference` (``params.yaml`` text in, Markdown out), which
the tests call directly; the MkDocs event functions below only read the files and call it.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import sys
import typing
from pathlib import Path
from typing import Any

import yaml

MARKER = "<!-- params-reference -->"
PAGE = "params.md"

_SECTION = re.compile(r"^([A-Za-z_]\w*):\s*(#.*)?$")
_KEY = re.compile(r"^  ([A-Za-z_]\w*):(\s.*)?$")
_COMMENT = re.compile(r"^\s*#\s?(.*)$")


class ParamsDrift(ValueError):
    """``params.yaml`` and the config dataclasses disagree on which keys exist."""


@dataclasses.dataclass
class _Key:
    name: str
    comment: list[str]


@dataclasses.dataclass
class _Section:
    name: str
    comment: list[str]
    keys: list[_Key]


def read_layout(text: str) -> list[_Section]:
    """Sections and keys of ``params.yaml`` in file order, each with the comment above it.

    A small line reader, not a YAML parser: a section is a name at column 0, a key is indented
    two spaces, and a key's (or section's) comment is the run of ``#`` lines directly above it
    (a blank line or anything else ends the run). Deeper lines are a key's value and ignored.
    """
    sections: list[_Section] = []
    pending: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            pending = []
        elif comment := _COMMENT.match(line):
            pending.append(comment.group(1).rstrip())
        elif section := _SECTION.match(line):
            sections.append(_Section(section.group(1), pending, []))
            pending = []
        elif key := _KEY.match(line):
            if not sections:
                raise ParamsDrift(
                    f"params.yaml line {lineno}: key {key.group(1)!r} outside a section"
                )
            sections[-1].keys.append(_Key(key.group(1), pending))
            pending = []
        else:
            pending = []
    return sections


def _dataclass_sections() -> dict[str, type]:
    """Section name -> its dataclass, from the fields of ``birnn.config.Params``."""
    import birnn.config

    hints = typing.get_type_hints(birnn.config.Params)
    return {f.name: hints[f.name] for f in dataclasses.fields(birnn.config.Params)}


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _yaml(value: Any) -> str:
    """A value as it is written in ``params.yaml``."""
    if value is dataclasses.MISSING:
        return "(required)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)


def _type(f: dataclasses.Field) -> str:
    # config.py uses `from __future__ import annotations`: the annotation is its source text.
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: ``|`` escaped outside code spans."""
    parts = text.strip().split("`")
    # Even parts are outside backticks (a pipe inside a code span does not split the row).
    return "`".join(p.replace("|", "\\|") if i % 2 == 0 else p for i, p in enumerate(parts))


def _code(text: str) -> str:
    return f"`{text}`"


def _doc(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    # A dataclass without a docstring gets its signature as one: not worth showing.
    return "" if doc.startswith(f"{cls.__name__}(") else " ".join(doc.split())


def reference(params_yaml_text: str, readers: dict[str, list[str]] | None = None) -> str:
    """The params reference as Markdown; :class:`ParamsDrift` when file and code disagree.

    ``readers`` optionally maps a section to the pipeline stages that read it (``dvc.yaml``).
    """
    layout = read_layout(params_yaml_text)
    values = yaml.safe_load(params_yaml_text) or {}
    classes = _dataclass_sections()

    in_file = [s.name for s in layout]
    for name in in_file:
        if name not in classes:
            raise ParamsDrift(
                f"params.yaml section {name!r} has no dataclass in birnn.config.Params"
            )
    for name in classes:
        if name not in in_file:
            raise ParamsDrift(f"birnn.config.Params.{name} has no section {name!r} in params.yaml")

    out: list[str] = []
    for section in layout:
        cls = classes[section.name]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        keys = [k.name for k in section.keys]
        for key in keys:
            if key not in fields:
                raise ParamsDrift(
                    f"params.yaml key {section.name}.{key} is not a field of "
                    f"birnn.config.{cls.__name__}"
                )
        for key in fields:
            if key not in keys:
                raise ParamsDrift(
                    f"birnn.config.{cls.__name__}.{key} has no key {section.name}.{key} "
                    "in params.yaml"
                )
        section_values = values.get(section.name) or {}
        out.append(f"## `{section.name}`")
        out.append("")
        about = " ".join([_doc(cls), *section.comment]).strip()
        if about:
            out += [about, ""]
        if readers is not None:
            stages = readers.get(section.name, [])
            read_by = ", ".join(f"`{s}`" for s in stages) if stages else "no stage"
            out += [f"Read by: {read_by}. Dataclass: `birnn.config.{cls.__name__}`.", ""]
        else:
            out += [f"Dataclass: `birnn.config.{cls.__name__}`.", ""]
        out.append("| key | type | default | description | `params.yaml` |")
        out.append("|---|---|---|---|---|")
        for key in section.keys:
            f = fields[key.name]
            default = _default(f)
            if key.name not in section_values:
                raise ParamsDrift(
                    f"params.yaml key {section.name}.{key.name}: the line reader found it, "
                    "but YAML did not parse it into the section"
                )
            value = section_values[key.name]
            shown = _code(_yaml(value))
            if _yaml(value) != _yaml(default):
                shown = f"**{shown}**"
            out.append(
                f"| `{section.name}.{key.name}` | {_code(_type(f))} | {_code(_yaml(default))} "
                f"| {_cell(' '.join(key.comment))} | {shown} |"
            )
        out.append("")
    return "\n".join(out)


def stage_readers(dvc_yaml_text: str) -> dict[str, list[str]]:
    """Section -> the ``dvc.yaml`` stages whose ``params:`` list it."""
    stages = (yaml.safe_load(dvc_yaml_text) or {}).get("stages") or {}
    readers: dict[str, list[str]] = {}
    for stage, spec in stages.items():
        for entry in (spec or {}).get("params") or []:
            # `- train` (params.yaml), or `- other.yaml: [train, ...]` (another file's keys).
            names = [str(entry)] if not isinstance(entry, dict) else []
            if isinstance(entry, dict) and "params.yaml" in entry:
                names = [str(n) for n in entry["params.yaml"] or []]
            for name in names:
                section = name.split(".")[0]
                if stage not in readers.setdefault(section, []):
                    readers[section].append(stage)
    return readers


# MkDocs events ------------------------------------------------------------------------------


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    from mkdocs.exceptions import PluginError

    if MARKER not in markdown:
        raise PluginError(f"docs/{PAGE} lost its marker {MARKER}")
    if "birnn.config" in sys.modules:
        # `mkdocs serve` rebuilds in one process: read config.py as it is now.
        importlib.reload(sys.modules["birnn.config"])
    root = Path(config.config_file_path).parent
    dvc_yaml = root / "dvc.yaml"
    readers = stage_readers(dvc_yaml.read_text(encoding="utf-8")) if dvc_yaml.is_file() else None
    try:
        table = reference((root / "params.yaml").read_text(encoding="utf-8"), readers)
    except ParamsDrift as exc:
        raise PluginError(f"params reference: {exc}") from None
    return markdown.replace(MARKER, table)
