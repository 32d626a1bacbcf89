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


class JsonLineEvents(CollectedEvents):
    """``--output json``: the warnings kept for the envelope, and what happens as one JSON object per line on
    ``stream`` (stderr; stdout keeps the one envelope): ``{"event": "step"|"done"|"warn"|"progress",
    "elapsed": s, ...}``, progress at most every ``every`` seconds per task, so a long wait is never silent."""

    def __init__(self, stream, every: float = 5.0):
        super().__init__()
        import time

        self.stream, self.every, self.clock = stream, every, time.monotonic
        self.started = self.clock()
        self._shown: dict[str, float] = {}

    def _line(self, event: str, **fields) -> None:
        import json

        try:
            self.stream.write(json.dumps({"event": event, "elapsed": round(self.clock() - self.started, 1),
                                          **fields}, ensure_ascii=False) + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed stderr never stops the work
            pass

    def step(self, message: str) -> None:
        self._line("step", message=message)

    def done(self, message: str, seconds: float | None = None) -> None:
        self._line("done", message=message, **({"seconds": round(seconds, 3)} if seconds is not None else {}))

    def warn(self, message: str) -> None:
        super().warn(message)
        self._line("warn", message=str(message), **({"code": message.code} if hasattr(message, "code") else {}))

    def progress(self, task: str, done: int, total: int | None = None, unit: str = "bytes") -> None:
        now = self.clock()
        if now - self._shown.get(task, -self.every) < self.every and not (total is not None and done >= total):
            return
        self._shown[task] = now
        self._line("progress", task=task, done=done, total=total, unit=unit)


def human_bytes(n: float) -> str:
    for suffix in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024:
            return f"{n:.1f} {suffix}"
        n /= 1024
    return f"{n:.1f} PiB"
