"""Where Lifeboat's own files are: the templates folder next to the package (source checkout or
editable install), or under <prefix>/share/lifeboat when installed from a wheel."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from toolkit.errors import ToolkitError


def templates_dir() -> Path:
    for candidate in (Path(__file__).resolve().parent.parent / "templates",
                      Path(sys.prefix) / "share" / "lifeboat" / "templates"):
        if candidate.is_dir():
            return candidate
    raise ToolkitError("Lifeboat's templates folder is missing from this installation.",
                       hint="reinstall Lifeboat (pip install -e . from a checkout).", code="install.broken")


def example_stack() -> Path:
    return templates_dir() / "stack" / "lifeboat.yml"


STATE_FOLDER = ".lifeboat"


def private_dir(path: Path) -> Path:
    """``path`` as a folder, every folder made on the way 0700 (``mkdir -p`` makes the parents with the
    umask's mode: 0755), and the ``.lifeboat`` state folder on the way made 0700 even when an older
    version left it open."""
    path = Path(path)
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
    for folder in (path, *path.parents):
        if folder.name == STATE_FOLDER:
            try:
                if folder.stat().st_mode & 0o077 and folder.stat().st_uid == os.geteuid():
                    os.chmod(folder, 0o700)
            except OSError:
                pass
            break
    return path


def write_private(path: Path, data: str | bytes) -> None:
    """Write a file readable by its owner only, atomically (folders made 0700 when missing)."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
