"""Where a command's CPU goes, by kind of process: run it and poll /proc until it ends.

    python benchmarks/suite_cpu.py -- bash .ci/run          # the full suite from a fresh clone
    python benchmarks/suite_cpu.py --json cpu.json -- .venv/bin/python -m pytest tests/x.py

Every 0.2 s it reads each process's CPU time (user + system) and command line, and adds what
it used since the last look to a kind: a stage (``birnn.train`` ...), ``dvc``, an
``mlflow server``, ``uv``, ``act``, the pytest workers, and so on. Processes that started
before it are counted from its first look; a process that ends between two looks loses at most
0.2 s. Every process on the machine is counted (run nothing else meanwhile). Prints a Markdown
table: kind, CPU seconds, share, processes, seconds per process. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")
# (pattern on the command line, kind; None: the match itself). First match wins.
KINDS = [
    (r"birnn\.(train|evaluate|preprocess|download|report|promote|predict|sweep)\b", None),
    (r"-m birnn\b|bin/birnn\b", "birnn (command line)"),
    (r"-m dvc\b|bin/dvc\b", "dvc"),
    (r"mlflow|gunicorn|uvicorn|huey", "mlflow server / scoring"),
    (r"postgres", "postgres"),
    (r"\bweed\b", "weed (S3)"),
    (r"\bact\b", "act"),
    (r"\buv\b|-m pip\b", "uv / pip"),
    (r"exec\(eval\(sys\.stdin|pytest|xdist", "pytest workers"),
    (r"^git\b|/git\b", "git"),
    (r"chrom", "chromium"),
]


def kind_of(pid: str) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    cmd = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    if not cmd:
        return "kernel and others"
    for pattern, name in KINDS:
        found = re.search(pattern, cmd)
        if found:
            return name or found.group(0)
    return "other: " + os.path.basename(cmd.split()[0])[:24]


def sample(proc: subprocess.Popen) -> tuple[dict[str, float], dict[str, int]]:
    me = str(os.getpid())
    start = int(Path(f"/proc/{me}/stat").read_text().rsplit(")", 1)[1].split()[19])
    cpu: dict[str, float] = {}
    count: dict[str, int] = {}
    last: dict[tuple[str, str], int] = {}
    while proc.poll() is None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or pid == me:
                continue
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used, born = int(fields[11]) + int(fields[12]), fields[19]
            kind = kind_of(pid)  # read each time: a fork has its parent's line until exec
            if kind is None:
                continue
            key = (pid, born)
            if key not in last:
                count[kind] = count.get(kind, 0) + 1
                last[key] = 0 if int(born) > start else used
            cpu[kind] = cpu.get(kind, 0.0) + (used - last[key]) / HZ
            last[key] = used
        time.sleep(0.2)
    return cpu, count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the command to measure after --")
    t0 = time.monotonic()
    proc = subprocess.Popen(command)
    cpu, count = sample(proc)
    wall = time.monotonic() - t0
    total = sum(cpu.values())
    print(f"\n{' '.join(command)}: exit {proc.returncode}, {wall / 60:.1f} min wall, "
          f"{total / 60:.1f} min CPU ({total / wall:.2f} cores on average)\n")  # fmt: skip
    print("| kind of process | CPU s | share | processes | CPU s per process |")
    print("|---|---|---|---|---|")
    for kind, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]):
        if seconds >= 0.005 * total:
            n = count.get(kind, 0)
            print(f"| {kind} | {seconds:,.0f} | {seconds / total:.0%} | {n} | "
                  f"{seconds / max(n, 1):.1f} |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"wall_s": wall, "cpu_s": cpu, "processes": count}, fh, indent=1)
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
