"""Where Lifeboat's own files are: the templates folder next to the package (source checkout or
editable install), or under <prefix>/share/lifeboat when installed from a wheel."""

from __future__ import annotations

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
