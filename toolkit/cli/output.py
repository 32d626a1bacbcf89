"""What the user sees: one JSON envelope on stdout (``--output json``), or human text on stderr.

The envelope is versioned and has the same shape for every command, also on failure:

    {"lifeboat": 1, "command": "plan", "status": "ok"|"changes"|"error", "exit_code": 0,
     "data": {...}, "errors": [{"code": "...", "message": "...", "hint": "..."}]}
"""

from __future__ import annotations

import json
import shutil
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
    """Steps, warnings and progress for people, on stderr. On a terminal, progress is one line rewritten in
    place (bytes or objects, percent, rate, ETA); elsewhere (CI, a log file) a line every few seconds."""

    def __init__(self, console: Console):
        self.console = console
        self.started = time.monotonic()
        self._progress: dict[str, tuple[float, int]] = {}
        self._shown: dict[str, float] = {}
        self.live = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self._open = False  # a progress line is on the screen, not ended

    def _end_live(self) -> None:
        if self._open:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()
            self._open = False

    def step(self, message: str) -> None:
        self._end_live()
        self.console.print(f"[dim]{time.monotonic() - self.started:6.1f}s[/] [cyan]→[/] ", end="")
        self.console.line(message)

    def done(self, message: str, seconds: float | None = None) -> None:
        self._end_live()
        took = f" ({seconds:.1f}s)" if seconds is not None else ""
        self.console.print(f"[dim]{time.monotonic() - self.started:6.1f}s[/] [green]✓[/] ", end="")
        self.console.line(message + took)

    def warn(self, message: str) -> None:
        self._end_live()
        self.console.warn(message)

    def progress(self, task: str, done: int, total: int | None = None, unit: str = "bytes") -> None:
        now = time.monotonic()
        first = self._progress.setdefault(task, (now, done))
        last = self._shown.get(task)
        finished = total is not None and done >= total
        if last is not None and now - last < (0.2 if self.live else 2.0) and not finished:
            return
        self._shown[task] = now
        elapsed = now - first[0]
        rate = (done - first[1]) / elapsed if elapsed >= 1.0 else None  # no rate before there is one

        def fmt(n: float) -> str:
            return human_bytes(n) if unit == "bytes" else f"{n:,.0f} {unit}"

        text = f"{task}: {fmt(done)}"
        if total is not None:
            text += f" of {fmt(total)} ({done * 100 / max(total, 1):.0f}%)"
        if rate:
            text += f", {fmt(rate)}/s"
            if total is not None and not finished:
                text += f", ETA {duration(max(total - done, 0) / rate)}"
        if self.live and not finished:
            width = max(shutil.get_terminal_size((100, 20)).columns - 1, 20)
            sys.stderr.write("\r\x1b[2K" + text[:width])
            sys.stderr.flush()
            self._open = True
            return
        self._end_live()
        self.console.print("[dim]        …[/] ", end="")
        self.console.line(text)


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 10 min``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def write_stdout(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def human_value(key: str, value: Any) -> str:
    """One field of a report as people read it: sizes in units, seconds as durations, times (``*_epoch``)
    in local ISO form, lists and mappings as plain text, never a Python repr."""
    import time

    from toolkit.run.events import human_bytes

    if value is None or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        if key.endswith("_epoch"):
            return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value)) if value else "-"
        if key.endswith("bytes"):
            return human_bytes(value)
        if key.endswith("seconds"):
            return f"{value:.1f} s"
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, list | tuple | set):
        return ", ".join(human_value(key, v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {human_value(str(k), v)}" for k, v in value.items())
    return str(value)


def human_fields(step: dict, skip: tuple[str, ...] = ("at", "step", "seconds", "resumed")) -> str:
    """A report step's fields as ``name value`` pairs (see human_value), ``;``-separated."""
    label = {"wait_until_epoch": "wait until"}
    return "; ".join(f"{label.get(k, k.removesuffix('_epoch').replace('_', ' '))}: {human_value(k, v)}"
                     for k, v in step.items() if k not in skip)
