"""``python -m birnn.sweep``: what ``birnn sweep`` runs, and how it starts its workers."""

from birnn.sweep.cli import main

main()
