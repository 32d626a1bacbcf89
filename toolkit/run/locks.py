"""A lock held as an exclusive flock on a 0600 file; the holder is written inside for the next one to read.

The kernel releases it when its holder dies, so it never needs breaking. It guards one machine's view of
a target (the local provider, or a cloud target whose state Lifeboat keeps in a local directory).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from toolkit.errors import LockHeld, ProviderError
from toolkit.paths import private_dir


def gone_here(machine: object, pid: object) -> bool:
    """Whether a holder recorded as (machine, pid) ran on this machine and its process no longer exists
    (killed, crashed). Anything else - another machine, a live or unknowable process - counts as alive."""
    if machine != socket.gethostname() or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another account
        pass
    return False


class FileLock:
    def __init__(self, path: Path, label: str, stack: str):
        self.path = path
        self.label = label
        self.stack = stack

    def holder(self) -> dict | None:
        if not self.path.exists():
            return None
        fd = os.open(self.path, os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    return json.loads(os.pread(fd, 4096, 0) or b"{}")
                except ValueError:
                    return {"owner": "unknown"}
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def release(self) -> None:
        if self.holder() is not None:
            raise ProviderError(f"{self.label}: the lock is held by a running process; a local lock is released "
                                "when that process ends (stop it to release the lock).", code="lock.live")

    @contextmanager
    def held(self, owner: str):
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
                except ValueError:
                    holder = {}
                since = holder.get("since", "an unknown time")
                raise LockHeld(
                    f"{self.label}: another run holds the lock on stack {self.stack}: "
                    f"{holder.get('owner', 'unknown')} (pid {holder.get('pid', '?')}, `{holder.get('command', '?')}`) "
                    f"since {since}.", hint="wait for it to finish; if it died, its lock was released with it."
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"owner": owner, "pid": os.getpid(), "command": " ".join(sys.argv[1:])[:200],
                                      "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode(), 0)
            yield
        finally:
            os.close(fd)


class FileLocked:
    """Mixin for providers whose lock is a :class:`FileLock` on this machine: ``_file_lock()`` says which;
    ``lock``, ``lock_status`` and ``lock_release`` are the contract's."""

    def _file_lock(self) -> FileLock:
        raise NotImplementedError

    def lock(self, owner: str):
        """An exclusive flock on the file; the holder is written inside for the next one to read."""
        return self._file_lock().held(owner)

    def lock_status(self) -> dict | None:
        return self._file_lock().holder()

    def lock_release(self) -> None:
        self._file_lock().release()
