"""``python -m birnn.sweep``: what ``birnn sweep`` runs, and how it starts its workers."""

import signal

from birnn import stage
from birnn.sweep.cli import main

# SIGTERM stops a worker as Ctrl-C does: its running trial is told to the study as failed.
signal.signal(signal.SIGTERM, stage._raise_interrupt)
main()
