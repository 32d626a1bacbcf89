"""How the engine and providers tell the user what is happening, without printing themselves.

The CLI passes a renderer (human text with progress on stderr); libraries and tests get the silent
default. ``progress`` reports long work: bytes or objects done of a total, from which the renderer shows
rate and ETA.
"""

from __future__ import annotations


class Events:
    """The default says nothing."""

    #: --verbose: tracebacks of failures that were explained to the user
    verbose: bool = False

    def step(self, message: str) -> None:
        pass

    def done(self, message: str, seconds: float | None = None) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    def progress(self, task: str, done: int, total: int | None = None, unit: str = "bytes") -> None:
        pass


class CollectedEvents(Events):
    """Says nothing while the work runs but keeps the warnings, for the JSON envelope's ``warnings``."""

    def __init__(self):
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)


def human_bytes(n: float) -> str:
    for suffix in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024:
            return f"{n:.1f} {suffix}"
        n /= 1024
    return f"{n:.1f} PiB"
