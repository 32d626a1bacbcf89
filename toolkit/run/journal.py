"""The migration journal: one JSON line per event, appended and fsynced before and after every step, so a
killed run can be resumed from the last step that finished. Secrets never enter it (values are refused).

Layout: ``<state>/migrations/<id>/journal.jsonl`` (0600, directory 0700); ``<state>/migrations/current``
names the migration a ``--resume`` continues.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from toolkit.contract import SecretValue
from toolkit.errors import BadInput
from toolkit.paths import private_dir, write_private


class Journal:
    def __init__(self, path: Path):
        self.path = path
        self.events: list[dict] = []
        if path.exists():
            for line in path.read_text().splitlines():
                if not line.strip():
                    continue
                try:
                    self.events.append(json.loads(line))
                except ValueError:
                    break  # a line cut short by a crash ends the journal

    # ------------------------------------------------------------------ where journals live
    @staticmethod
    def root(state: Path) -> Path:
        return state / "migrations"

    @classmethod
    def start(cls, state: Path, meta: dict, *, run: str = "migration") -> Journal:
        ident = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid()}"
        folder = cls.root(state) / ident
        private_dir(folder)
        for parent in (cls.root(state), state):
            os.chmod(parent, 0o700)
        journal = cls(folder / "journal.jsonl")
        journal.record(run, "start", id=ident, **meta)
        write_private(cls.root(state) / "current", ident.encode())
        return journal

    @classmethod
    def current(cls, state: Path) -> Journal | None:
        try:
            ident = (cls.root(state) / "current").read_text().strip()
        except FileNotFoundError:
            return None
        path = cls.root(state) / ident / "journal.jsonl"
        return cls(path) if path.exists() else None

    # ------------------------------------------------------------------ reading
    @property
    def id(self) -> str:
        return self.path.parent.name

    @property
    def meta(self) -> dict:
        return self.events[0] if self.events else {}

    def finished(self, step: str) -> dict | None:
        """The data recorded when ``step`` finished, or None when it did not (or was undone since)."""
        for event in reversed(self.events):
            if event.get("step") == step and event.get("event") == "undone":
                return None
            if event.get("step") == step and event.get("event") == "done":
                return event
        return None

    def last(self, step: str, event: str) -> dict | None:
        """The most recent ``event`` recorded for ``step`` (progress a step saved before a crash)."""
        for entry in reversed(self.events):
            if entry.get("step") == step and entry.get("event") == event:
                return entry
        return None

    @property
    def complete(self) -> bool:
        return self.finished(self.meta.get("step", "migration")) is not None

    # ------------------------------------------------------------------ writing
    def record(self, step: str, event: str, **data) -> dict:
        for key, value in data.items():
            if isinstance(value, SecretValue):
                raise BadInput(f"journal: refusing to record a secret ({key}).", code="journal.secret")
        entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "step": step, "event": event, **data}
        line = json.dumps(entry, sort_keys=True, default=str) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.events.append(entry)
        return entry
