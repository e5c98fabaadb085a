"""Markdown report of a pipeline run against a base revision, for CI job summaries and PRs.

    python -m birnn.report --base origin/main [--out report.md] [--artifact-url URL]
    python -m birnn.report --check      # exit 1 when test accuracy < evaluate.min_test_accuracy

The metrics and params diffs come from ``dvc metrics diff`` and ``dvc params diff`` (JSON).
DVC exits 0 even when it cannot read ``dvc.yaml``; any ERROR it prints fails the report instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from birnn import paths
from birnn.config import Params, load_params
from birnn.errors import BirnnError
from birnn.files import write_text
from birnn.stage import run_stage

log = logging.getLogger(__name__)

MARKER = "<!-- birnn-report -->"  # lets CI find and update its own PR comment


def dvc_json(*args: str) -> dict[str, Any]:
    """Run a ``dvc ... --json`` command and parse its output; fail on any DVC error."""
    cmd = [sys.executable, "-m", "dvc", *args, "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0 or "ERROR" in res.stderr:
        first = next((ln for ln in res.stderr.splitlines() if "ERROR" in ln), res.stderr.strip())
        raise BirnnError(f"`dvc {' '.join(args)}` failed: {first[:300]}")
    try:
        return json.loads(res.stdout or "{}")
    except json.JSONDecodeError:
        raise BirnnError(f"`dvc {' '.join(args)}` printed no JSON: {res.stdout[:200]!r}") from None


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def _diff(entry: dict[str, Any]) -> str:
    if "diff" in entry and isinstance(entry["diff"], int | float):
        return (
            f"{entry['diff']:+.4f}" if isinstance(entry["diff"], float) else f"{entry['diff']:+d}"
        )
    return ""


def table(diff: dict[str, dict[str, dict[str, Any]]], with_diff: bool) -> str:
    """Markdown table of a ``dvc metrics/params diff --json`` result."""
    header = "| file | name | base | this run |" + (" change |" if with_diff else "")
    rule = "|---|---|---|---|" + ("---|" if with_diff else "")
    rows = [header, rule]
    for file, entries in sorted(diff.items()):
        for name, entry in sorted(entries.items()):
            row = f"| {file} | {name} | {_fmt(entry.get('old'))} | {_fmt(entry.get('new'))} |"
            rows.append(row + (f" {_diff(entry)} |" if with_diff else ""))
    if len(rows) == 2:
        return "_No changes._\n"
    return "\n".join(rows) + "\n"


def on_merge(
    params: Params, metrics: dict[str, Any], base_metrics: dict[str, Any], base: str
) -> str:
    """What ``birnn promote`` would decide once this lands on main, judged against the base's
    committed ``reports/metrics.json`` (main's model is champion when CI promoted it)."""
    from birnn.registry import Policy  # imports MLflow: only when a report is rendered

    policy = Policy.from_params(params)
    metric, floor = policy.metric, params.evaluate.min_test_accuracy
    score, old = metrics.get(metric), base_metrics.get(metric)
    acc = metrics.get("test_accuracy")
    if score is None or acc is None:
        return f"**refuse** this model: its metrics have no {metric} or test_accuracy"
    if acc < floor:
        return (
            f"**refuse** this model: test_accuracy {_fmt(acc)} is below "
            f"`evaluate.min_test_accuracy` {floor}"
        )
    if old is None:
        return f"**promote** this model: `{base}` has no committed {metric} to compare with"
    if policy.beats(float(score), float(old)):
        return (
            f"**promote** this model: {metric} {_fmt(score)} beats `{base}`'s committed {_fmt(old)}"
        )
    margin = f" by more than {policy.min_improvement}" if policy.min_improvement else ""
    return (
        f"**not promote** this model: {metric} {_fmt(score)} does not beat `{base}`'s "
        f"committed {_fmt(old)}{margin}"
    )


def render(
    metrics_diff: dict,
    params_diff: dict,
    base: str,
    metrics: dict[str, Any],
    threshold: float,
    artifact_url: str | None = None,
    promotion: str | None = None,
) -> str:
    """The whole Markdown report."""
    acc = metrics.get("test_accuracy")
    ok = acc is not None and acc >= threshold
    status = "passes" if ok else "FAILS"
    parts = [
        MARKER,
        "## birnn retrain report",
        "",
        f"Test accuracy **{_fmt(acc)}** {status} the threshold {threshold} "
        "(`evaluate.min_test_accuracy`).",
        "",
        f"### Metrics diff against `{base}`",
        "",
        table(metrics_diff, with_diff=True),
        f"### Params diff against `{base}`",
        "",
        table(params_diff, with_diff=False),
    ]
    if promotion:
        parts += [
            "### On merge",
            "",
            f"`birnn promote` on main would {promotion}.",
            "",
        ]
    if artifact_url:
        parts += [
            "### Figures",
            "",
            f"Learning curves (`loss.png`, `accuracy.png`), `confusion_matrix.png` and "
            f"`misclassified.png` are in the [figures artifact]({artifact_url}).",
            "",
        ]
    return "\n".join(parts)


def check_threshold(metrics: dict[str, Any], threshold: float) -> None:
    """Raise when test accuracy is missing or below the threshold."""
    acc = metrics.get("test_accuracy")
    if acc is None:
        raise BirnnError(f"{paths.METRICS_JSON} has no test_accuracy: run `dvc repro` first")
    if acc < threshold:
        raise BirnnError(
            f"test accuracy {acc:.4f} is below evaluate.min_test_accuracy = {threshold}"
        )
    log.info("test accuracy %.4f >= threshold %s", acc, threshold)


def read_metrics() -> dict[str, Any]:
    if not paths.METRICS_JSON.is_file():
        raise BirnnError(f"{paths.METRICS_JSON} not found: run `dvc repro` first")
    return json.loads(paths.METRICS_JSON.read_text())


def main(argv: list[str] | None = None) -> None:
    """``python -m birnn.report``"""
    ap = argparse.ArgumentParser(prog="python -m birnn.report", description=__doc__)
    ap.add_argument("--base", default="HEAD", help="git revision to diff against")
    ap.add_argument("--out", type=Path, help="write the Markdown here (default: stdout)")
    ap.add_argument("--artifact-url", help="link to the uploaded figures")
    ap.add_argument("--check", action="store_true", help="only enforce the accuracy threshold")
    args = ap.parse_args(argv)

    def stage() -> None:
        params = load_params(paths.PARAMS)
        threshold = params.evaluate.min_test_accuracy
        metrics = read_metrics()
        if args.check:
            check_threshold(metrics, threshold)
            return
        metrics_diff = dvc_json("metrics", "diff", args.base, "--all")
        old = {
            k: v.get("old") for k, v in metrics_diff.get(paths.METRICS_JSON.as_posix(), {}).items()
        }
        text = render(
            metrics_diff,
            dvc_json("params", "diff", args.base),
            args.base,
            metrics,
            threshold,
            args.artifact_url,
            on_merge(params, metrics, {k: v for k, v in old.items() if v is not None}, args.base),
        )
        if args.out:
            write_text(args.out, text)
        else:
            sys.stdout.write(text)

    run_stage("report", stage)


if __name__ == "__main__":
    main()
