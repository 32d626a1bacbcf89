"""What the user sees: one JSON envelope on stdout (``--output json``), or human text on stderr.

The envelope is versioned and has the same shape for every command, also on failure:

    {"lifeboat": 1, "command": "plan", "status": "ok"|"changes"|"error", "exit_code": 0,
     "data": {...}, "errors": [{"code": "...", "message": "...", "hint": "..."}]}
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from toolkit import ENVELOPE_VERSION
from toolkit.contract import SecretValue
from toolkit.errors import Problem
from toolkit.run.events import Events, human_bytes


@dataclass
class Outcome:
    data: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    exit_code: int = 0
    human: Any = None  # callable(console) that renders the human view
    errors: list[Problem] = field(default_factory=list)


def _default(value: Any):
    if isinstance(value, SecretValue):
        return "<redacted>"
    if hasattr(value, "as_posix"):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def envelope(command: str, outcome: Outcome, warnings=()) -> str:
    body = {
        "lifeboat": ENVELOPE_VERSION,
        "command": command,
        "status": outcome.status,
        "exit_code": outcome.exit_code,
        "data": outcome.data,
        "errors": [p.as_dict() for p in outcome.errors],
        "warnings": list(warnings),  # what the work warned of on the way (stderr in human mode)
    }
    text = json.dumps(body, default=_default, ensure_ascii=False)
    try:  # what stdout cannot carry (a lone surrogate from a stack file, a non-UTF-8 terminal) goes escaped
        text.encode(getattr(sys.stdout, "encoding", None) or "utf-8")
    except UnicodeEncodeError:
        text = json.dumps(body, default=_default, ensure_ascii=True)
    return text


class Console:
    """Human output on stderr (rich when available, plain otherwise)."""

    def __init__(self, verbose: bool = False):
        from rich.console import Console as RichConsole

        self.verbose = verbose
        self.rich = RichConsole(stderr=True, highlight=False, soft_wrap=True)

    def print(self, *args, **kw) -> None:
        self.rich.print(*args, **kw)

    def line(self, text: str = "") -> None:
        self.rich.print(text, markup=False, highlight=False)

    def error(self, problem: Problem) -> None:
        self.rich.print("[bold red]error:[/] ", end="")
        self.rich.print(problem.message, markup=False)
        if problem.hint:
            self.rich.print("  [dim]hint:[/] ", end="")
            self.rich.print(problem.hint, markup=False)

    def warn(self, text: str) -> None:
        self.rich.print("[yellow]warning:[/] ", end="")
        self.rich.print(text, markup=False)


class HumanEvents(Events):
    def __init__(self, console: Console):
        self.console = console
        self.started = time.monotonic()
        self._progress: dict[str, tuple[float, int]] = {}
        self._shown: dict[str, float] = {}

    def step(self, message: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.started:6.1f}s[/] [cyan]→[/] ", end="")
        self.console.line(message)

    def done(self, message: str, seconds: float | None = None) -> None:
        took = f" ({seconds:.1f}s)" if seconds is not None else ""
        self.console.print(f"[dim]{time.monotonic() - self.started:6.1f}s[/] [green]✓[/] ", end="")
        self.console.line(message + took)

    def warn(self, message: str) -> None:
        self.console.warn(message)

    def progress(self, task: str, done: int, total: int | None = None, unit: str = "bytes") -> None:
        now = time.monotonic()
        first = self._progress.setdefault(task, (now, done))
        last = self._shown.get(task, 0.0)
        finished = total is not None and done >= total
        if now - last < 0.5 and not finished:
            return
        self._shown[task] = now
        elapsed = max(now - first[0], 1e-6)
        rate = (done - first[1]) / elapsed
        def fmt(n: float) -> str:
            return human_bytes(n) if unit == "bytes" else f"{n:,.0f}"
        text = f"{task}: {fmt(done)}"
        if total is not None:
            text += f" of {fmt(total)} ({done * 100 / max(total, 1):.0f}%)"
        text += f", {fmt(rate)}/s"
        if total is not None and rate > 0 and not finished:
            text += f", ETA {max(total - done, 0) / rate:.0f}s"
        self.console.print("[dim]        …[/] ", end="")
        self.console.line(text)


def write_stdout(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
