"""``birnn promote`` with a barrier right after it registers a model, for the concurrency test:
two such processes both register the same model before either looks for a duplicate, whatever
the scheduler does, so the test exercises the dedupe every time.

    python -m tests.helpers.promote_race BARRIER_DIR [birnn promote args ...]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from birnn import promote, registry

PARTIES = 2
WAIT_S = 120


def main() -> None:
    barrier, args = Path(sys.argv[1]), sys.argv[2:]
    real = registry.register

    def register(*a, **kw):
        version = real(*a, **kw)
        (barrier / f"registered-{os.getpid()}").touch()
        deadline = time.monotonic() + WAIT_S
        while len(list(barrier.glob("registered-*"))) < PARTIES:
            if time.monotonic() > deadline:
                raise SystemExit("promote_race: the other process never registered")
            time.sleep(0.05)
        return version

    registry.register = register
    promote.main(args)


if __name__ == "__main__":
    main()
