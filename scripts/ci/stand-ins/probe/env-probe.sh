# Sourced by every bash a rehearsed job starts (scripts/ci/rehearse.sh sets BASH_ENV to this
# file): the first shell of each step records which environment variables it had, each with a
# short SHA-256 of its value (never the value), to $REHEARSAL_OUT/env/steps.jsonl, so a test
# can tell which secrets each step could see. Silent, and never fails the step. Inside a
# composite action GITHUB_ACTION is the inner step's id; the stand-ins name their step in
# REHEARSAL_STEP instead.
if [[ -n "${GITHUB_JOB:-}" && -n "${REHEARSAL_OUT:-}" ]]; then
  __probe_mark="$REHEARSAL_OUT/env/marks/$GITHUB_JOB.${REHEARSAL_STEP:-${GITHUB_ACTION:-none}}.bash"
  if [[ ! -e "$__probe_mark" ]]; then
    mkdir -p "${__probe_mark%/*}" 2>/dev/null && : > "$__probe_mark" 2>/dev/null
    /usr/bin/env python3 - "bash" <<'PY' 2>/dev/null || true
import hashlib, json, os, sys
env = {k: hashlib.sha256(v.encode()).hexdigest()[:16] for k, v in os.environ.items() if v}
action = os.environ.get("REHEARSAL_STEP") or os.environ.get("GITHUB_ACTION", "")
line = {"job": os.environ["GITHUB_JOB"], "action": action,
        "via": sys.argv[1], "env": env}
with open(os.path.join(os.environ["REHEARSAL_OUT"], "env", "steps.jsonl"), "a") as f:
    f.write(json.dumps(line) + "\n")
PY
  fi
  unset __probe_mark
fi
