"""``python -m birnn``: the same as the ``birnn`` command (:mod:`birnn.cli`)."""

from birnn.cli import main

main()
