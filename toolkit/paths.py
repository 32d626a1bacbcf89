"""Where Lifeboat's own files are: the templates folder next to the package (source checkout or
editable install), or under <prefix>/share/lifeboat when installed from a wheel."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import ToolkitError


def templates_dir() -> Path:
    for candidate in (Path(__file__).resolve().parent.parent / "templates",
                      Path(sys.prefix) / "share" / "lifeboat" / "templates"):
        if candidate.is_dir():
            return candidate
    raise ToolkitError("Lifeboat's templates folder is missing from this installation.",
                       hint="reinstall Lifeboat (pip install -e . from a checkout).", code="install.broken")


def example_stack() -> Path:
    return templates_dir() / "stack" / "lifeboat.yml"


def write_private(path: Path, data: str | bytes) -> None:
    """Write a file readable by its owner only, atomically (parent created 0700 when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
