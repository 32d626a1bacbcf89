"""``python -m toolkit.cli``: the lifeboat command (tests and benchmarks run it this way)."""

from toolkit.cli import entry

entry()
