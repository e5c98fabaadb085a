"""What a stage process's exit costs, with and without :func:`birnn.stage.freeze_at_exit`.

Each round starts two child processes in turn that do what a small train stage does before it
exits (import Keras and MLflow, build and compile the default network, fit it on 512 random
images), read their own CPU time, then exit: one as usual, one with ``freeze_at_exit()``
registered (``gc.freeze`` at exit). The parent reads each child's whole CPU time when it ends;
the difference is the exit's cost. Prints a row per child and the means.

    python benchmarks/stage_exit.py [--rounds 4]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import resource, sys
import keras, mlflow, numpy as np
from birnn.config import params_from_dict
from birnn.model import build_model
from birnn.stage import freeze_at_exit
from birnn.train import compile_model

params = params_from_dict({})
model = build_model(params.model)
compile_model(model, params.train)
rng = np.random.default_rng(0)
model.fit(rng.random((512, 28, 28), dtype="float32"), rng.integers(0, 10, 512), verbose=0)
r = resource.getrusage(resource.RUSAGE_SELF)
open(sys.argv[1], "w").write(str(r.ru_utime + r.ru_stime))
if sys.argv[2] == "frozen":
    freeze_at_exit()
"""


def child_cpu(how: str, out: Path) -> tuple[float, float]:
    """(CPU seconds until the exit began, CPU seconds of the exit) of one child."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([sys.executable, "-c", CHILD, str(out), how], env=env, check=True,
                   capture_output=True)  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    work = float(out.read_text())
    return work, total - work


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    spent: dict[str, list[float]] = {"usual": [], "frozen": []}
    print("| round | exit | CPU s before exit | CPU s of the exit |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(1, args.rounds + 1):
            for how in spent:  # in turn, so a drift of the machine touches both alike
                work, exit_cost = child_cpu(how, Path(tmp) / "cpu")
                spent[how].append(exit_cost)
                print(f"| {i} | {how} | {work:.2f} | {exit_cost:.2f} |", flush=True)
    for how, costs in spent.items():
        print(f"{how}: mean exit {sum(costs) / len(costs):.2f} s of CPU")


if __name__ == "__main__":
    main()
