"""What a service runs, identified: the files of its build directory and its command."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

SKIP_IN_BUILD = {"__pycache__", ".git", ".lifeboat", ".venv", "venv", "node_modules", ".pytest_cache"}


def walk(root: Path) -> Iterator[Path]:
    """The files of a build directory in a stable order, without caches, VCS data and virtualenvs."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_IN_BUILD and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if name.endswith((".pyc", ".pyo")):
                continue
            yield Path(dirpath) / name


def release_id(svc) -> str:
    """Digest of the service's command and build directory (names and contents)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(list(svc.command)).encode())
    if svc.build:
        for path in walk(svc.build):
            digest.update(path.relative_to(svc.build).as_posix().encode() + b"\0")
            with open(path, "rb") as handle:
                for chunk in iter(lambda h=handle: h.read(1 << 20), b""):
                    digest.update(chunk)
            digest.update(b"\0")
    return digest.hexdigest()[:16]
