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
    if getattr(svc, "build_command", None):  # (a release is what was built: its build step is part of it)
        digest.update(json.dumps(["build", *svc.build_command]).encode())
    if getattr(svc, "writable", ()):  # (and which of its folders the app may write)
        digest.update(json.dumps(["writable", *svc.writable]).encode())
    if svc.build:
        for path in walk(svc.build):
            digest.update(path.relative_to(svc.build).as_posix().encode() + b"\0")
            with open(path, "rb") as handle:
                for chunk in iter(lambda h=handle: h.read(1 << 20), b""):
                    digest.update(chunk)
            digest.update(b"\0")
    return digest.hexdigest()[:16]


def requirements_of(svc) -> bytes | None:
    """The Python requirements of the service's build directory, as a requirements file: its
    requirements.txt, else the ``[project] dependencies`` of its pyproject.toml; None when it has neither."""
    if not svc.build:
        return None
    if (svc.build / "requirements.txt").exists():
        return (svc.build / "requirements.txt").read_bytes()
    pyproject = svc.build / "pyproject.toml"
    if pyproject.exists():
        import tomllib

        from toolkit.errors import BadInput

        try:
            project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project") or {}
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BadInput(f"{pyproject}: not valid TOML ({exc}).", code="stack.build") from None
        deps = project.get("dependencies") or []
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise BadInput(f"{pyproject}: [project] dependencies must be a list of requirement strings.",
                           code="stack.build")
        if deps:
            return ("# from pyproject.toml [project] dependencies\n" + "\n".join(deps) + "\n").encode()
    return None
