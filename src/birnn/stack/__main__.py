"""``python -m birnn.stack``: the same as ``birnn stack`` (:mod:`birnn.stack.cli`)."""

from birnn.stack.cli import main

main()
