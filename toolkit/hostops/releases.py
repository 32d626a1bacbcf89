"""App releases on a host: built on this machine, shipped as a tar stream, kept for rollback."""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable
from pathlib import Path

from toolkit.errors import CommandFailed, ProviderError
from toolkit.hostops.bootstrap import find_processes, stop_processes
from toolkit.hostops.shell import sh
from toolkit.transport.connection import Connection


def tar_directory(directory: Path, skip: set[str]) -> Callable[[object], None]:
    """A writer that streams ``directory`` as a tar archive into a binary stream."""

    def write(stream) -> None:
        def keep(info: tarfile.TarInfo):
            parts = Path(info.name).parts
            if any(p in skip or p.endswith(".egg-info") for p in parts) or info.name.endswith((".pyc", ".pyo")):
                return None
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            # modes of a release, not of the machine that built it (umask 077 there made the app's compiled
            # files unreadable by the app account): readable by all, executable where it was for anyone
            if info.isdir() or info.mode & 0o111:
                info.mode = 0o755
            elif info.isfile():
                info.mode = 0o644
            return info

        with tarfile.open(fileobj=stream, mode="w|") as tar:
            tar.add(str(directory), arcname=".", filter=keep)

    return write


class Releases:
    """App code on a host: ``<root>/releases/<service>/<release>``, kept for rollback, plus virtualenvs."""

    KEEP = 3

    def __init__(self, conn: Connection, root: str):
        self.conn = conn
        self.root = root

    def path(self, service: str, release: str) -> str:
        return f"{self.root}/releases/{service}/{release}"

    def upload(self, service: str, release: str, build: Path, skip: set[str]) -> str:
        final = self.path(service, release)
        if self.conn.read_bytes(f"{final}/.lifeboat-release") is not None:
            return final
        tmp = f"{final}.partial"
        sh(self.conn, 'rm -rf "$1" && mkdir -p "$1"', tmp)
        with self.conn.write_stream(["tar", "-x", "--no-same-owner", "-C", tmp, "-f", "-"]) as sink:
            tar_directory(build, skip)(sink)
        self.conn.write_bytes(f"{tmp}/.lifeboat-release", release.encode(), mode=0o644)
        sh(self.conn, 'rm -rf "$2" && mv "$1" "$2"', tmp, final)
        return final

    def venv_path(self, requirements: bytes | None) -> str | None:
        if requirements is None:
            return None
        return f"{self.root}/venvs/{hashlib.sha256(requirements).hexdigest()[:12]}"

    def venv(self, requirements: bytes | None, *, events=None, host: str = "", python: str = "python3") -> str | None:
        """The app's virtualenv for ``requirements``, made from ``python`` (see :func:`app_interpreter`)."""
        if requirements is None:
            return None
        venv = self.venv_path(requirements)
        digest = venv.rsplit("/", 1)[1]
        if self.conn.read_bytes(f"{venv}/.complete") is not None:
            return venv
        # A run killed while it built this one leaves `python3 -m venv`, ensurepip or pip running: they
        # would keep writing into the folder this build clears and fills. Stopped (and waited for) first.
        stopped = stop_processes(self.conn, find_processes(self.conn, venv))
        if events:
            events.step(f"{host}: building a virtualenv ({digest})"
                        + (f"; stopped {stopped} programs of a killed build first" if stopped else ""))
        sh(self.conn, 'rm -rf "$1" && mkdir -p "$(dirname "$1")"', venv)
        self.conn.run([python, "-m", "venv", venv], timeout=300)
        self.conn.write_bytes(f"{venv}/requirements.txt", requirements, mode=0o644)
        try:
            self.conn.run([f"{venv}/bin/python", "-m", "pip", "install", "--disable-pip-version-check", "-q",
                           "-r", f"{venv}/requirements.txt"], timeout=1200)
        except CommandFailed as exc:
            raise ProviderError(f"{self.conn.host}: installing the app's requirements failed: {exc.message}",
                                code="host.build") from None
        self.conn.write_bytes(f"{venv}/.complete", b"ok", mode=0o644)
        return venv

    def prune(self, service: str, keep: list[str]) -> None:
        """Remove all but the newest KEEP releases (and always keep ``keep``)."""
        base = f"{self.root}/releases/{service}"
        listing = sh(self.conn, 'cd "$1" 2>/dev/null && ls -1t || true', base).text.split()
        doomed = [r for r in listing[self.KEEP:] if r not in keep and not r.endswith(".partial")]
        if doomed:
            self.conn.run(["rm", "-rf", *[f"{base}/{r}" for r in doomed]])
