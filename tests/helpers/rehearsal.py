"""Rehearse .github/workflows with act (scripts/ci/rehearse.sh) and read back what happened:
jobs and steps with their outcome, what each step's environment held, what the stand-ins for
GitHub's side (the API behind `gh` and curl, upload-artifact) were asked to do."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.conftest import REPO
from tests.helpers.pipeline import git, set_params

ACT = Path(sys.executable).parent / "act"
ACTIONS_DIR = Path(os.environ.get("BIRNN_ACTIONS_DIR", REPO.parent / "shared" / "actions"))
SLUG = "acme/birnn"
# The origin act reads github.repository from; pushes go to a bare repo instead, and nothing
# fetches (a fetch would try GitHub, and fail: the rehearsal is offline).
ORIGIN_URL = f"https://github.com/{SLUG}.git"
# The token GitHub gives a run: write access, or read-only (pull requests from forks).
WRITE_TOKEN = "ghs_rehearsal_write"
READ_TOKEN = "ghs_rehearsal_read"
OUTER_RUN = ("GITHUB_", "RUNNER_", "ACTIONS_", "REHEARSAL_", "BASH_ENV", "NODE_OPTIONS")
TEAM_SECRETS = (
    "DVC_REMOTE_URL",
    "DVC_REMOTE_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)


def value_hash(value: str) -> str:
    """The short hash the probes record for an environment value."""
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def require_act() -> None:
    """Skip, saying why, where act or the pinned actions' sources are absent (GitHub's own
    runners have no ../shared/actions)."""
    if not ACT.exists() or not ACTIONS_DIR.is_dir():
        pytest.skip(f"no act at {ACT} or no pinned actions at {ACTIONS_DIR}")


def load_workflow(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    if True in data:  # PyYAML reads the key `on` as True
        data["on"] = data.pop(True)
    return data


def step_key(step: dict) -> str:
    """How a step is named in results: its name, else the action it uses without the SHA."""
    return step.get("name") or step["uses"].split("@")[0]


def rehearsal_repo(
    dest: Path, env: dict[str, str], edit: tuple[str, str] | None = None, **params: object
) -> Path:
    """This working tree (tracked and untracked files git does not ignore) committed to a new
    repo's main, pushed to a bare origin that act sees as github.com/acme/birnn. ``edit``:
    (old, new) text replaced everywhere in retrain.yml, to rehearse a broken workflow."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "-co", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    if params:
        set_params(dest, **params)
    if edit:
        workflow = dest / ".github" / "workflows" / "retrain.yml"
        text = workflow.read_text()
        assert edit[0] in text, f"{edit[0]!r} is not in retrain.yml"
        workflow.write_text(text.replace(*edit))
    bare = dest.parent / f"{dest.name}-origin.git"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=dest.parent, env=env)
    git("init", "-q", "-b", "main", cwd=dest, env=env)
    for key, value in (
        ("user.email", "dev@example.org"),
        ("user.name", "dev"),
        (f"url.{bare}.pushInsteadOf", ORIGIN_URL),
    ):
        git("config", key, value, cwd=dest, env=env)
    git("remote", "add", "origin", ORIGIN_URL, cwd=dest, env=env)
    git("add", "-A", cwd=dest, env=env)
    git("commit", "-qm", "main", cwd=dest, env=env)
    git("push", "-q", "origin", "main", cwd=dest, env=env)
    git("update-ref", "refs/remotes/origin/main", "HEAD", cwd=dest, env=env)
    return dest


@dataclass
class Result:
    """One rehearsal's outcome, read from act's JSON log and the stand-ins' records."""

    event: str
    workflow: dict
    rc: int
    seconds: float
    log: list[dict]
    out: Path
    secrets: dict[str, str] = field(default_factory=dict)

    def jobs(self) -> dict[str, dict]:
        """{job: {"conclusion": ..., "steps": {step: outcome}}} for every job of the workflow:
        "skipped" for a job or step that never started, as GitHub shows it."""
        conclusions = {e["jobID"]: e["jobResult"] for e in self.log if "jobResult" in e}
        outcomes: dict[tuple[str, str], str] = {}
        for e in self.log:
            if "stepResult" in e and e.get("stage") == "Main":
                outcomes[(e["jobID"], e["stepID"][0])] = e["stepResult"]
        jobs = {}
        for job, spec in self.workflow["jobs"].items():
            steps = {}
            for i, step in enumerate(spec["steps"]):
                steps[step_key(step)] = outcomes.get((job, step.get("id", str(i))), "skipped")
            jobs[job] = {"conclusion": conclusions.get(job, "skipped"), "steps": steps}
        return jobs

    def output(self, job: str, step: str | None = None) -> str:
        """What a job (or one of its steps) printed, workflow commands (::warning:: ...) too."""
        lines = []
        for e in self.log:
            if e.get("jobID") != job or (step is not None and e.get("step") != step):
                continue
            if e.get("raw_output"):
                lines.append(e["msg"])
            elif "command" in e:
                lines.append(e.get("raw", ""))
        return "".join(lines)

    def seen_secrets(self) -> dict[str, dict[str, set[str]]]:
        """{job: {step: names of the secrets whose values were in the step's environment}},
        from the probes' records (each value hashed), for the steps that recorded."""
        by_hash = {value_hash(v): name for name, v in self.secrets.items() if v}
        ids = {}
        for job, spec in self.workflow["jobs"].items():
            for i, step in enumerate(spec["steps"]):
                ids[(job, step.get("id", str(i)))] = step_key(step)
                if step.get("uses", "").startswith("actions/upload-artifact@"):
                    ids[(job, f"upload-artifact:{step['with']['name']}")] = step_key(step)
        seen: dict[str, dict[str, set[str]]] = {}
        path = self.out / "env" / "steps.jsonl"
        for line in path.read_text().splitlines() if path.exists() else []:
            rec = json.loads(line)
            step = ids.get((rec["job"], rec["action"]))
            if step is None:
                raise AssertionError(f"a probe record names no step of the workflow: {rec}")
            names = {by_hash[h] for h in rec["env"].values() if h in by_hash}
            seen.setdefault(rec["job"], {}).setdefault(step, set()).update(names)
        return seen

    def gh_calls(self) -> list[dict]:
        path = self.out / "gh" / "calls.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    def artifacts(self) -> dict[str, list[str]]:
        """{artifact name: files in it}, from the upload-artifact stand-in."""
        root = self.out / "artifacts"
        if not root.is_dir():
            return {}
        return {
            d.name: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
            for d in sorted(root.iterdir())
        }

    def fetched_from_github(self) -> list[str]:
        """act's own messages about cloning or pulling an action: none in an offline rehearsal."""
        return [
            e["msg"]
            for e in self.log
            if not e.get("raw_output")
            and re.search(r"git clone|Cloning|github\.com/.*\.git", e.get("msg", ""))
        ]


class Rehearsal:
    """``scripts/ci/rehearse.sh EVENT`` started in the background in ``repo``."""

    def __init__(
        self,
        repo: Path,
        event: str,
        env: dict[str, str],
        secrets: dict[str, str] | None = None,
        event_json: Path | None = None,
        act_args: tuple[str, ...] = (),
        api_url: str | None = None,
        name: str | None = None,
    ) -> None:
        self.repo, self.event, self.secrets = repo, event, dict(secrets or {})
        # Records under <name>-rehearsal*, beside the repo (name: the repo's, by default).
        self.out = repo.parent / f"{name or repo.name}-rehearsal"
        self.log_path = self.out.parent / f"{self.out.name}.jsonl"
        self.err_path = self.out.parent / f"{self.out.name}.stderr"
        # A fresh start even inside a job (tests.yml rehearsed): none of the outer run's
        # GitHub variables or probes.
        env = {k: v for k, v in env.items() if not k.startswith(OUTER_RUN)}
        run_env = {
            **env,
            "ACT": str(ACT),
            "PYTHON": sys.executable,
            "REHEARSAL_OUT": str(self.out),
            "BIRNN_ACTIONS_DIR": str(ACTIONS_DIR),
        }
        if event_json is not None:
            run_env["EVENT_JSON"] = str(event_json)
        args = ["--json", *act_args]
        for name, value in self.secrets.items():
            args += ["-s", f"{name}={value}"]
        if api_url:
            args += ["--env", f"GITHUB_API_URL={api_url}"]
        with open(self.log_path, "w") as log, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                ["bash", "scripts/ci/rehearse.sh", event, "--", *args],
                cwd=repo,
                env=run_env,
                stdout=log,
                stderr=err,
            )

    def wait(self, timeout: int = 1500) -> Result:
        rc = self.proc.wait(timeout=timeout)
        log = []
        for line in self.log_path.read_text().splitlines():
            try:
                log.append(json.loads(line))
            except ValueError:
                log.append({"msg": line, "raw_output": False})
        workflow = load_workflow(self.repo / ".github" / "workflows" / "retrain.yml")
        # Wall time from act's own log: the test may wait long after act has finished.
        times = [datetime.fromisoformat(e["time"]) for e in log if "time" in e]
        seconds = (max(times) - min(times)).total_seconds() if times else 0.0
        return Result(self.event, workflow, rc, seconds, log, self.out, self.secrets)

    def stderr(self) -> str:
        return self.err_path.read_text()


class GitHubAPI:
    """A loopback stand-in for the part of GitHub's REST API the workflows use: issue comments
    and pull requests of acme/birnn, with GitHub's token rules (a read-only token may not
    write). Every request is kept, with the token it came with."""

    def __init__(self) -> None:
        self.server = HTTPServer(host="127.0.0.1", port=0)
        self.requests: list[dict] = []
        self.comments: dict[int, dict] = {}
        self.pulls: dict[int, dict] = {}
        self.server.expect_request(re.compile(r"^/repos/.*")).respond_with_handler(self.handle)
        self.server.start()

    def url(self) -> str:
        return self.server.url_for("/").rstrip("/")

    def stop(self) -> None:
        self.server.clear()
        if self.server.is_running():
            self.server.stop()

    def handle(self, req: Request) -> Response:
        token = req.headers.get("Authorization", "").split(" ")[-1]
        # JSON whatever the Content-Type says, as GitHub reads it (curl --data sends a form's).
        body = json.loads(req.get_data()) if req.get_data() else None
        self.requests.append(
            {
                "method": req.method,
                "path": req.path,
                "query": dict(req.args),
                "token": token,
                "body": body,
            }
        )
        if token not in (WRITE_TOKEN, READ_TOKEN):
            return self.json({"message": "Bad credentials"}, 401)
        if req.method != "GET" and token == READ_TOKEN:
            return self.json({"message": "Resource not accessible by integration"}, 403)
        base = f"/repos/{SLUG}"
        if m := re.fullmatch(rf"{base}/issues/(\d+)/comments", req.path):
            if req.method == "GET":
                return self.json([c for c in self.comments.values() if c["issue"] == int(m[1])])
            comment = {
                "id": 1000 + len(self.comments),
                "issue": int(m[1]),
                "body": body["body"],
                "user": {"login": "github-actions[bot]", "type": "Bot"},
            }
            self.comments[comment["id"]] = comment
            return self.json(comment, 201)
        if m := re.fullmatch(rf"{base}/issues/comments/(\d+)", req.path):
            self.comments[int(m[1])]["body"] = body["body"]
            return self.json(self.comments[int(m[1])])
        if req.path == f"{base}/pulls":
            if req.method == "GET":
                head = req.args.get("head", "").split(":")[-1]
                return self.json([p for p in self.pulls.values() if p["head"] == head])
            pull = {"number": 12 + len(self.pulls), **body}
            self.pulls[pull["number"]] = pull
            return self.json(pull, 201)
        if m := re.fullmatch(rf"{base}/pulls/(\d+)", req.path):
            self.pulls[int(m[1])].update(body)
            return self.json(self.pulls[int(m[1])])
        return self.json({"message": "Not Found"}, 404)

    @staticmethod
    def json(data: object, status: int = 200) -> Response:
        return Response(json.dumps(data), status=status, content_type="application/json")
