"""The one journalled step runner: migrate, backup and failover (and the drill, through failover) run their
steps through :func:`run_steps`, so that resuming, journalling and failure reports behave the same in all.

A workflow is an object with ``events`` and a method ``_step_<name>()`` per step returning what the journal
keeps of it (a dict, or None). Each step that the journal does not show as done is journalled before
("begin") and after ("done" with its seconds and data); a failure is journalled as "failed" with its reason
and raised again. Steps done by an earlier run are reported with ``resumed: true`` and not run again."""

from __future__ import annotations

import time
from collections.abc import Callable

from toolkit.errors import ToolkitError
from toolkit.run.faults import fault
from toolkit.run.journal import Journal


def run_steps(runner, journal: Journal, steps: list[str], label: str, *, skip: tuple[str, ...] = (),
              cleanup: Callable[[str, BaseException], None] | None = None,
              explain: Callable[[str, Exception], ToolkitError | None] | None = None) -> list[dict]:
    """Run ``steps`` (except those in ``skip``) and return the report of every step.

    ``cleanup(step, exc)`` runs after any failure of a step, an interrupt too, before it is raised (migrate
    lifts its write freeze there). ``explain(step, exc)`` may give a clearer error to raise instead (with
    the original as its cause); None raises the failure as it was."""
    out = []
    for step in steps:
        if step in skip:
            continue
        done = journal.finished(step)
        if done is not None:
            out.append({**public(done), "resumed": True})
            continue
        runner.events.step(f"{label}: {step}")
        journal.record(step, "begin")
        t0 = time.monotonic()
        try:
            fault(step, label)
            data = getattr(runner, f"_step_{step}")() or {}
        except BaseException as exc:
            if cleanup is not None:
                cleanup(step, exc)
            if not isinstance(exc, Exception):  # an interrupt: the journal keeps "begin", --resume redoes it
                raise
            explained = explain(step, exc) if explain is not None else None
            if explained is not None:
                if runner.events.verbose:
                    import traceback

                    traceback.print_exception(exc)  # what was explained, for a bug report
                journal.record(step, "failed", reason=explained.message)
                raise explained from exc
            journal.record(step, "failed", reason=getattr(exc, "message", None) or type(exc).__name__)
            raise
        seconds = round(time.monotonic() - t0, 3)
        out.append(public(journal.record(step, "done", seconds=seconds, **data)))
        runner.events.done(f"{label}: {step}", seconds)
    return out


def public(entry: dict) -> dict:
    """A journal entry as reports show it."""
    return {k: v for k, v in entry.items() if k not in ("event",)}
