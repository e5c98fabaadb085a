"""retrain.yml itself, run offline by act (scripts/ci/rehearse.sh) for every event it handles,
on a small real slice: which jobs and steps ran, how they ended, which secrets each step could
see, what the stand-ins for GitHub's side received (the report comment, the pull request, the
artifacts), and what landed on the team stack. Each event's checks return what GitHub would
have done differently, so two deliberately broken workflows show which checks catch them.

The rehearsals are independent, so they start together and run side by side; a test waits
for the one it checks. tests.yml is rehearsed by hand (it runs this whole suite again)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from birnn import registry
from birnn.stack import Stack
from tests.conftest import REPO
from tests.helpers.pipeline import SMALL_RUN, TEAM_SMALL, env_for, git
from tests.helpers.rehearsal import (
    ACT,
    ACTIONS_DIR,
    READ_TOKEN,
    TEAM_SECRETS,
    WRITE_TOKEN,
    GitHubAPI,
    Rehearsal,
    Result,
    rehearsal_repo,
    require_act,
)

pytestmark = [pytest.mark.integration, pytest.mark.workflows, pytest.mark.slow]
log = logging.getLogger(__name__)

# What the rehearsal repo commits on main: a small real slice, its own experiment and model.
MAIN_PARAMS = {
    **SMALL_RUN,
    **TEAM_SMALL,
    "tracking__experiment_name": "birnn-rehearsal",
    "registry__model_name": "birnn-rehearsal",
}
# On the pull request's branch: one param changed, so the report has a params diff.
PR_LEARNING_RATE = 0.002
REMOTE_URL = "s3://birnn/rehearsal-dvc"
MARKER = "<!-- birnn-report -->"
ON_REMOTE = "every output dvc.lock names is on the DVC remote"
# The two deliberate breakages: a misspelt secret name, a wrong `if:`.
MISSPELT_SECRET = ("secrets.AWS_ACCESS_KEY_ID", "secrets.AWS_ACCES_KEY_ID")
WRONG_IF = ("github.event_name == 'workflow_dispatch'", "github.event_name == 'workflow-dispatch'")


def fake_team_secrets() -> dict[str, str]:
    """Every team secret set, as on a repo that has them all: a pull request must see none."""
    return {name: f"rehearsal-{name.lower()}" for name in TEAM_SECRETS}


def stack_secrets(stack: Stack) -> dict[str, str]:
    """The team stack as the repo's secrets: its S3 store as the DVC remote, its MLflow."""
    s3 = stack.s3_env()
    return {
        "AWS_ACCESS_KEY_ID": s3["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": s3["AWS_SECRET_ACCESS_KEY"],
        "DVC_REMOTE_ENDPOINT_URL": stack.s3_endpoint(),
        "DVC_REMOTE_URL": REMOTE_URL,
        "MLFLOW_TRACKING_URI": stack.mlflow_uri(),
    }


# ---------------------------------------------------------------------------------------------
# Checks: each returns the differences from what GitHub should do; [] when there are none.


def check_jobs(r: Result, expected: dict[str, tuple[str, dict[str, str]]], only=None) -> list[str]:
    """``expected``: {job: (conclusion, {step: outcome})}; steps not named must succeed in a job
    that ran; jobs not named must be skipped. ``only``: the jobs this rehearsal selected."""
    problems = []
    for job, got in r.jobs().items():
        if only and job not in only:
            continue
        conclusion, outcomes = expected.get(job, ("skipped", {}))
        if got["conclusion"] != conclusion:
            problems.append(f"job {job}: {got['conclusion']}, expected {conclusion}")
        for step, outcome in got["steps"].items():
            want = outcomes.get(step, "skipped" if conclusion == "skipped" else "success")
            if outcome != want:
                problems.append(f"job {job}, step '{step}': {outcome}, expected {want}")
    return problems


def check_secrets(
    r: Result, job: str, expected: dict[str, set[str]], default: set[str]
) -> list[str]:
    """Which secrets each step of ``job`` that ran a shell or node saw: ``expected[step]``, else
    ``default``. A step expected to see some that left no record is a problem too."""
    seen = r.seen_secrets().get(job, {})
    problems = []
    for step in sorted(set(seen) | {s for s, names in expected.items() if names}):
        want = expected.get(step, default)
        got = seen.get(step)
        if got is None:
            problems.append(f"job {job}, step '{step}': no environment recorded")
        elif got != want:
            problems.append(
                f"job {job}, step '{step}' saw secrets {sorted(got)}: "
                f"missing {sorted(want - got)}, unexpected {sorted(got - want)}"
            )
    return problems


def check_offline(r: Result) -> list[str]:
    return [f"act fetched from GitHub: {m}" for m in r.fetched_from_github()]


def check_pull_request(r: Result, api: GitHubAPI, number: int, fork: bool) -> list[str]:
    """A pull request: job retrain only, no team secret anywhere, the report posted as the
    PR's comment (a fork's read-only token is refused, which the job tolerates), artifacts."""
    comment = "Comment on the pull request"
    problems = check_offline(r) + check_jobs(
        r, {"retrain": ("success", {comment: "failure" if fork else "success"})}
    )
    problems += check_secrets(
        r, "retrain", {comment: {"GITHUB_TOKEN"}, "actions/setup-python": {"GITHUB_TOKEN"}}, set()
    )
    posts = [c for c in r.gh_calls() if c["method"] == "POST"]
    if [c["endpoint"] for c in posts] != [f"repos/acme/birnn/issues/{number}/comments"]:
        problems.append(f"gh was asked for {[(c['method'], c['endpoint']) for c in r.gh_calls()]}")
    elif (
        not posts[0]["fields"]["body"].startswith(MARKER)
        or "### Metrics diff" not in posts[0]["fields"]["body"]
    ):
        problems.append("gh did not receive the report")
    posted = [c for c in api.comments.values() if c["issue"] == number]
    if fork and posted:
        problems.append("a fork's read-only token posted a comment")
    if not fork and [c["body"] for c in posted] != [posts[0]["fields"]["body"] if posts else None]:
        problems.append(f"comments on #{number}: {posted}")
    artifacts = r.artifacts()
    for name, files in {
        "figures": {"figures/loss.png", "figures/accuracy.png", "figures/confusion_matrix.png"},
        "pipeline-outputs": {
            "dvc.lock",
            "models/model.keras",
            "reports/metrics.json",
            "reports/ci_report.md",
        },
        "mlflow-store": {"mlflow.db"},
    }.items():
        if not files <= set(artifacts.get(name, [])):
            problems.append(f"artifact {name}: {artifacts.get(name)}")
    return problems


def check_dispatch(r: Result) -> list[str]:
    """A manual run with inputs and no secrets: job propose retrains with the inputs, reports,
    pushes nothing and opens no pull request, saying why."""
    problems = check_offline(r) + check_jobs(
        r, {"propose": ("success", {"Push outputs and open the pull request": "skipped"})}
    )
    out = r.output("propose", "Retrain and report")
    for text in ("-S train.epochs=2", "| params.yaml | train.epochs | 1 | 2 |",
                 "-S model.units=[16, 16]"):  # fmt: skip
        if text not in out:
            problems.append(f"the retrain step did not print {text!r}")
    if "outputs not pushed, no pull request opened" not in r.output("propose"):
        problems.append("no warning that nothing was proposed")
    return problems


def check_schedule(r: Result, api: GitHubAPI, origin: Path, secrets: dict[str, str]) -> list[str]:
    """The weekly run with the team stack as secrets: job propose retrains, pushes the outputs
    and retrain/auto, and opens the pull request whose body is the report."""
    problems = check_offline(r) + check_jobs(
        r, {"propose": ("success", {"No DVC remote, no pull request": "skipped"})}
    )
    team = set(secrets) - {"GITHUB_TOKEN"}
    problems += check_secrets(
        r,
        "propose",
        {
            "actions/setup-python": team | {"GITHUB_TOKEN"},
            "Push outputs and open the pull request": team | {"GITHUB_TOKEN"},
        },
        team,
    )
    pulls = list(api.pulls.values())
    if [(p["head"], p["base"]) for p in pulls] != [("retrain/auto", "main")]:
        problems.append(f"pull requests opened: {[(p['head'], p['base']) for p in pulls]}")
    elif not pulls[0]["body"].startswith(MARKER):
        problems.append("the pull request's body is not the report")
    branch = git(
        "ls-remote", str(origin), "refs/heads/retrain/auto", cwd=origin, env=dict(os.environ)
    )
    if not branch.strip():
        problems.append("retrain/auto was not pushed")
    return problems


def check_push(r: Result, secrets: dict[str, str], promoted: str, only=None) -> list[str]:
    """A push to main whose outputs are on the remote: retrain (pulls, reproduces, reports,
    logs to the team's MLflow, so no store artifact), remote-check, then promote, all green;
    promote's one line starts with ``promoted``."""
    store = "Upload the local MLflow store"
    problems = check_offline(r) + check_jobs(
        r,
        {
            "retrain": ("success", {store: "skipped", "Comment on the pull request": "skipped"}),
            "remote-check": ("success", {}),
            "promote": ("success", {}),
        },
        only=only,
    )
    team = set(secrets) - {"GITHUB_TOKEN"}
    problems += check_secrets(r, "promote", {"actions/setup-python": team | {"GITHUB_TOKEN"}}, team)
    line = next(
        (ln for ln in r.output("promote").splitlines() if "birnn promote: " in ln), "no line"
    )
    if f"birnn promote: {promoted}" not in line:
        problems.append(f"promote said {line!r}, expected {promoted!r}")
    if only == ("promote",):
        return problems
    s3 = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "DVC_REMOTE_URL", "DVC_REMOTE_ENDPOINT_URL"}
    if not only or "retrain" in only:
        problems += check_secrets(
            r, "retrain", {"actions/setup-python": team | {"GITHUB_TOKEN"}}, team
        )
        if "didn't change, skipping" not in r.output("retrain", "Retrain and report"):
            problems.append("retrain reran stages the remote had")
    problems += check_secrets(
        r, "remote-check", {"actions/setup-python": (team & s3) | {"GITHUB_TOKEN"}}, team & s3
    )
    if ON_REMOTE not in r.output("remote-check"):
        problems.append(f"remote-check did not print {ON_REMOTE!r}")
    return problems


# ---------------------------------------------------------------------------------------------
# The rehearsals, started side by side.


@pytest.fixture(scope="module")
def rehearsals(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path
) -> Iterator[dict]:
    require_act()
    try:
        stack: Stack | None = request.getfixturevalue("stack")
    except pytest.skip.Exception:
        stack = None
    root = tmp_path_factory.mktemp("rehearsals")
    env = env_for(mnist_dir)
    apis: list[GitHubAPI] = []
    started: dict[str, tuple[Rehearsal, GitHubAPI | None]] = {}

    def start(name: str, event: str, secrets=None, edit=None, **kw) -> None:
        repo = rehearsal_repo(root / name, env, edit=edit, **MAIN_PARAMS)
        if event.startswith("pull_request"):
            # The pull request's branch changes one param; its base is main.
            git("checkout", "-q", "-b", "feature", cwd=repo, env=env)
            text = (repo / "params.yaml").read_text()
            # SMALL_RUN's rate, which the report's params diff must name (not the default's).
            assert "learning_rate: 0.003" in text
            text = text.replace("learning_rate: 0.003", f"learning_rate: {PR_LEARNING_RATE}")
            (repo / "params.yaml").write_text(text)
            git("commit", "-qam", "A lower learning rate", cwd=repo, env=env)
        api = GitHubAPI()
        apis.append(api)
        started[name] = (Rehearsal(repo, event, env, secrets, api_url=api.url(), **kw), api)

    write = {"GITHUB_TOKEN": WRITE_TOKEN}
    start("pull_request", "pull_request", {**fake_team_secrets(), **write})
    start("pull_request.fork", "pull_request.fork", {"GITHUB_TOKEN": READ_TOKEN})
    start("workflow_dispatch", "workflow_dispatch", write)
    start("broken_if", "workflow_dispatch", write, edit=WRONG_IF)
    if stack is not None:
        start("schedule", "schedule", {**stack_secrets(stack), **write})
        start("broken_secret", "schedule", {**stack_secrets(stack), **write}, edit=MISSPELT_SECRET)
    try:
        yield {"started": started, "stack": stack, "env": env, "root": root}
    finally:
        for rehearsal, _ in started.values():
            if rehearsal.proc.poll() is None:
                rehearsal.proc.kill()
        for api in apis:
            api.stop()


def registry_history(client: MlflowClient) -> list[dict]:
    return registry.history(client, "birnn-rehearsal")


def finish(rehearsals: dict, name: str) -> tuple[Result, GitHubAPI]:
    rehearsal, api = rehearsals["started"][name]
    r = rehearsal.wait()
    jobs = {j: v["conclusion"] for j, v in r.jobs().items()}
    log.warning(
        "rehearsal %s: act exited %d, its log spans %.0fs, jobs %s", name, r.rc, r.seconds, jobs
    )
    return r, api


def test_pull_request_from_the_repo_gets_no_secret_and_posts_the_report(rehearsals: dict) -> None:
    r, api = finish(rehearsals, "pull_request")
    assert check_pull_request(r, api, number=7, fork=False) == [], r.output("retrain")[-3000:]
    body = next(iter(api.comments.values()))["body"]
    assert "| params.yaml | train.learning_rate | 0.0030 | 0.0020 |" in body
    assert "| reports/metrics.json | test_accuracy |" in body


def test_pull_request_from_a_fork_cannot_comment_and_still_passes(rehearsals: dict) -> None:
    r, api = finish(rehearsals, "pull_request.fork")
    assert check_pull_request(r, api, number=8, fork=True) == [], r.output("retrain")[-3000:]
    refused = [q for q in api.requests if q["method"] == "POST"]
    assert [(q["token"], q["path"]) for q in refused] == [
        (READ_TOKEN, "/repos/acme/birnn/issues/8/comments")
    ]
    assert "Resource not accessible by integration (HTTP 403)" in r.output(
        "retrain", "Comment on the pull request"
    )


def test_manual_run_applies_its_inputs_and_without_a_remote_proposes_nothing(
    rehearsals: dict,
) -> None:
    r, api = finish(rehearsals, "workflow_dispatch")
    assert check_dispatch(r) == [], r.output("propose")[-3000:]
    assert not api.requests


def test_schedule_opens_the_pull_request_and_the_merge_passes_the_push_checks(
    rehearsals: dict,
) -> None:
    stack = rehearsals["stack"]
    if stack is None:
        pytest.skip("the team stack cannot run here")
    r, api = finish(rehearsals, "schedule")
    secrets = r.secrets
    repo = rehearsals["root"] / "schedule"
    origin = repo.parent / f"{repo.name}-origin.git"
    assert check_schedule(r, api, origin, secrets) == [], r.output("propose")[-3000:]
    client = MlflowClient(stack.mlflow_uri())
    experiment = client.get_experiment_by_name("birnn-rehearsal")
    assert experiment is not None and client.search_runs([experiment.experiment_id])
    # Proposing registers the retrained model and promotes nothing: nobody has reviewed it.
    assert registry.versions(client, "birnn-rehearsal")
    assert registry.alias(client, "birnn-rehearsal", registry.CHAMPION) is None
    # ... and its report says what promote will decide on merge: main's committed model (the
    # project's full run) is far better than this small slice.
    body = next(iter(api.pulls.values()))["body"]
    assert "`birnn promote` on main would **not promote** this model: test_accuracy" in body
    assert "does not beat `origin/main`'s committed" in body

    # Merge the proposal: main moves to retrain/auto, whose outputs are on the remote.
    env = rehearsals["env"]
    before = git("rev-parse", "HEAD", cwd=repo, env=env).strip()
    git("fetch", "-q", str(origin), "retrain/auto", cwd=repo, env=env)
    git("merge", "-q", "--ff-only", "FETCH_HEAD", cwd=repo, env=env)
    git("push", "-q", "origin", "main", cwd=repo, env=env)
    git("update-ref", "refs/remotes/origin/main", "HEAD", cwd=repo, env=env)
    event = repo.parent / "push-event.json"
    event.write_text(
        json.dumps(
            {
                "ref": "refs/heads/main",
                "before": before,
                "after": git("rev-parse", "HEAD", cwd=repo, env=env).strip(),
            }
        )
    )
    push = Rehearsal(repo, "push", env, secrets, event_json=event, name="push").wait()
    log.warning("rehearsal push: act exited %d, its log spans %.0fs", push.rc, push.seconds)
    assert check_push(push, secrets, "promoted birnn-rehearsal version") == [], (
        push.output("retrain")[-2000:] + push.output("remote-check") + push.output("promote")
    )
    # The merged model is champion on the team's server, with the merge commit in its record:
    # the version of those weights (the misspelt-secret rehearsal trained the same ones first,
    # so the schedule's evaluation linked to that version instead of adding one).
    merged = json.loads((repo / "reports/train.json").read_text())["weights_sha256"]
    champ = client.get_model_version_by_alias("birnn-rehearsal", "champion")
    assert champ.tags["weights_sha256"] == merged
    assert champ.tags["promoted_commit"] == git("rev-parse", "HEAD", cwd=repo, env=env).strip()

    # The same push again (a re-run, or a push that changes no model): nothing moves.
    again = Rehearsal(
        repo, "push", env, secrets, event_json=event, act_args=("-j", "promote"), name="again"
    ).wait()
    log.warning("rehearsal push again: act exited %d, spans %.0fs", again.rc, again.seconds)
    assert check_push(again, secrets, "nothing to do", only=("promote",)) == [], again.output(
        "promote"
    )
    assert client.get_model_version_by_alias("birnn-rehearsal", "champion").version == champ.version
    assert len(registry_history(client)) == 1


def test_broken_workflows_are_caught(rehearsals: dict) -> None:
    """A wrong `if:` (the manual trigger silently runs nothing) and a misspelt secret name (the
    scheduled run goes green without pushing or proposing anything)."""
    r, _ = finish(rehearsals, "broken_if")
    problems = check_dispatch(r)
    log.warning("wrong if: caught by %s", problems)
    assert "job propose: skipped, expected success" in problems
    assert "job propose, step 'Retrain and report': skipped, expected success" in problems

    if rehearsals["stack"] is None:
        pytest.skip("the team stack cannot run here: the misspelt secret is not rehearsed")
    r, api = finish(rehearsals, "broken_secret")
    origin = rehearsals["root"] / "broken_secret-origin.git"
    problems = check_schedule(r, api, origin, r.secrets)
    log.warning("misspelt secret: caught by %s", problems)
    assert r.jobs()["propose"]["conclusion"] == "success"  # green on GitHub: why it needs catching
    assert (
        "job propose, step 'Push outputs and open the pull request': skipped, expected success"
        in problems
    )
    assert (
        "job propose, step 'No DVC remote, no pull request': success, expected skipped" in problems
    )
    assert any(
        "'Pull from the DVC remote' saw secrets" in p and "missing ['AWS_ACCESS_KEY_ID']" in p
        for p in problems
    )
    assert "pull requests opened: []" in problems


# ---------------------------------------------------------------------------------------------
# Offline by construction: nothing reaches GitHub, even when asked to.


def test_an_action_without_a_local_source_stops_the_rehearsal(tmp_path: Path) -> None:
    require_act()
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "scripts" / "ci", repo / "scripts" / "ci")
    workflow = repo / ".github" / "workflows" / "other.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        f"      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683\n"
        f"      - uses: someone/else@{'0' * 40}\n"
    )
    env = {
        **os.environ,
        "ACT": str(ACT),
        "PYTHON": sys.executable,
        "BIRNN_ACTIONS_DIR": str(ACTIONS_DIR),
        "REHEARSAL_OUT": str(tmp_path / "out"),
    }
    res = subprocess.run(
        ["bash", "scripts/ci/rehearse.sh", "push", "other.yml"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1
    assert f"no local source for someone/else@{'0' * 40}" in res.stderr
    assert "refusing to let act fetch it" in res.stderr

    # A tag, a sub-path or a docker image is no pinned commit: refused before act starts.
    for uses in ("actions/checkout@v4", f"github/codeql-action/init@{'1' * 40}",
                 "docker://alpine:3"):  # fmt: skip
        workflow.write_text(
            f"on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: {uses}\n"
        )
        res = subprocess.run(
            ["bash", "scripts/ci/rehearse.sh", "push", "other.yml"],
            cwd=repo, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert res.returncode == 1, uses
        assert f"rehearse: {uses} is not owner/name@<commit sha>" in res.stderr, res.stderr


def test_the_gh_stand_in_records_and_refuses_github(tmp_path: Path) -> None:
    gh = REPO / "scripts" / "ci" / "stand-ins" / "gh" / "gh"
    report = tmp_path / "report.md"
    report.write_text("<!-- birnn-report -->\nhello\n")
    env = {
        **os.environ,
        "REHEARSAL_OUT": str(tmp_path),
        "GH_TOKEN": WRITE_TOKEN,
        "GITHUB_API_URL": "https://api.github.com",
    }
    args = ["api", "-X", "POST", "repos/acme/birnn/issues/3/comments", "-F", f"body=@{report}"]
    res = subprocess.run([sys.executable, str(gh), *args], env=env, capture_output=True, text=True)
    assert res.returncode == 1
    assert "refusing to call https://api.github.com" in res.stderr
    (call,) = [json.loads(x) for x in (tmp_path / "gh" / "calls.jsonl").read_text().splitlines()]
    assert (call["method"], call["endpoint"]) == ("POST", "repos/acme/birnn/issues/3/comments")
    assert call["fields"] == {"body": report.read_text()}

    # Against a loopback stand-in it is `gh`: paginated, filtered by --jq, token refused or not.
    api = GitHubAPI()
    try:
        env["GITHUB_API_URL"] = api.url()
        assert subprocess.run([sys.executable, str(gh), *args], env=env).returncode == 0
        res = subprocess.run(
            [
                sys.executable,
                str(gh),
                "api",
                "repos/acme/birnn/issues/3/comments",
                "--paginate",
                "--jq",
                ".[] | .id",
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        assert res.stdout.split() == [str(next(iter(api.comments)))]
        env["GH_TOKEN"] = READ_TOKEN
        res = subprocess.run(
            [sys.executable, str(gh), *args], env=env, capture_output=True, text=True
        )
        assert res.returncode == 1 and "(HTTP 403)" in res.stderr
    finally:
        api.stop()
