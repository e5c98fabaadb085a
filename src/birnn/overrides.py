"""Split one line of ``KEY=VALUE`` params overrides, as CI's manual run takes them (its ``set``
input): whitespace separates pairs except inside brackets, braces or quotes, so
``model.units=[128, 128]`` (the form ``birnn sweep`` prints) stays one pair.

    python -m birnn.overrides "train.epochs=2 model.units=[128, 128]"

prints each pair NUL-terminated (for bash ``read -d ''``); each becomes one ``dvc exp run -S``.
A piece that is not ``KEY=VALUE``, or an unclosed bracket or quote, is one line on stderr and
exit 1: the run never starts with half of what was asked.
"""

from __future__ import annotations

import re
import sys

from birnn.errors import ConfigError

_KEY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+=")
_CLOSE = {"[": "]", "{": "}", "(": ")"}


def split(text: str) -> list[str]:
    """The ``KEY=VALUE`` pairs of ``text``, in order."""
    pairs: list[str] = []
    current: list[str] = []
    stack: list[str] = []
    quote = ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in _CLOSE:
            stack.append(_CLOSE[ch])
        elif stack and ch == stack[-1]:
            stack.pop()
        elif ch.isspace() and not stack:
            if current:
                pairs.append("".join(current))
                current = []
            continue
        current.append(ch)
    if quote or stack:
        raise ConfigError(f"overrides {text!r}: unclosed {quote or stack[-1]!r}")
    if current:
        pairs.append("".join(current))
    for pair in pairs:
        if not _KEY.match(pair):
            raise ConfigError(f"override {pair!r} is not section.key=value")
    return pairs


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        pairs = split(" ".join(args))
    except ConfigError as exc:
        print(f"birnn.overrides: error: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.stdout.write("".join(f"{p}\0" for p in pairs))


if __name__ == "__main__":
    main()
