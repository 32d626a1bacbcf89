"""Run commands and move files on a host: locally (subprocess) or over SSH (paramiko), one contract.

Commands are argv lists, never shell strings built from input. Over SSH the list is quoted with
``shlex.join`` for the remote shell. Environment values (which may be secrets) never go on a command
line: locally they are passed as the child's environment, over SSH they travel in a 0600 file over SFTP
that the remote wrapper sources and deletes before ``exec``.

A failed command raises :class:`toolkit.errors.CommandFailed` with host, argv, exit code and output tail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from toolkit.errors import CommandFailed


@dataclass
class Result:
    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


class Connection(ABC):
    """One host. ``run`` -> Result; streams for data; files in and out."""

    host: str

    @abstractmethod
    def run(self, argv: Sequence[str], *, input: bytes | None = None, env: dict[str, str] | None = None,
            cwd: str | None = None, check: bool = True, timeout: float | None = None) -> Result: ...

    @abstractmethod
    def read_stream(self, argv: Sequence[str], *, env: dict[str, str] | None = None) -> Iterator[BinaryIO]:
        """Context manager: the stdout of ``argv`` as a readable stream; raises CommandFailed on exit."""

    @abstractmethod
    def write_stream(self, argv: Sequence[str], *, env: dict[str, str] | None = None,
                     output: bytearray | None = None) -> Iterator[BinaryIO]:
        """Context manager: the stdin of ``argv`` as a writable stream; raises CommandFailed on exit.
        ``output``: receives what the command printed on stdout (read while it runs)."""

    @abstractmethod
    def put_file(self, local: str | os.PathLike, remote: str, *, mode: int = 0o600) -> None: ...

    @abstractmethod
    def get_file(self, remote: str, local: str | os.PathLike) -> None: ...

    @abstractmethod
    def write_bytes(self, path: str, data: bytes, *, mode: int = 0o600) -> None:
        """Write a small file atomically with ``mode`` (configs, env files, specs)."""

    @abstractmethod
    def read_bytes(self, path: str) -> bytes | None:
        """A small file's content, or None when it does not exist."""

    def close(self) -> None:  # noqa: B027 - optional
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalConnection(Connection):
    """This machine, through subprocess. ``user`` runs commands as another account (when root)."""

    def __init__(self, *, user: str | None = None, umask: int | None = None):
        self.host = "localhost"
        self.user = user
        self.umask = umask

    def _env(self, env: dict[str, str] | None) -> dict[str, str] | None:
        if env is None:
            return None
        merged = dict(os.environ)
        merged.update(env)
        return merged

    def _as_user(self) -> dict:
        extra = {} if self.umask is None else {"umask": self.umask}
        if not self.user:
            return extra
        import pwd

        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], **extra}

    def interactive(self, argv, *, env=None, cwd=None) -> int:
        """``argv`` on this terminal (it inherits stdin, stdout and stderr): `lifeboat console`."""
        full = None if env is None else {**os.environ, **env}
        return subprocess.run([str(a) for a in argv], env=full, cwd=cwd, check=False).returncode

    def run(self, argv, *, input=None, env=None, cwd=None, check=True, timeout=None) -> Result:
        argv = [str(a) for a in argv]
        try:
            proc = subprocess.run(argv, input=input, capture_output=True, env=self._env(env), cwd=cwd,
                                  timeout=timeout, check=False, **self._as_user())
        except FileNotFoundError:
            raise CommandFailed(self.host, argv, 127, stderr=f"{argv[0]}: command not found",
                                hint=f"install {argv[0]} or put it on PATH.") from None
        except subprocess.TimeoutExpired as exc:
            raise CommandFailed(self.host, argv, 124, stdout=exc.stdout or b"", stderr=exc.stderr or b"",
                                hint=f"it did not finish within {timeout} s.") from None
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and not result.ok:
            raise CommandFailed(self.host, argv, result.exit_code, result.stdout, result.stderr)
        return result

    @contextmanager
    def read_stream(self, argv, *, env=None):
        argv = [str(a) for a in argv]
        with _stderr_file() as err:
            proc = self._popen(argv, env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
            try:
                yield proc.stdout
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            finally:
                proc.stdout.close()
            code = proc.wait()
            if code != 0:
                err.seek(0)
                raise CommandFailed(self.host, argv, code, stderr=err.read())

    @contextmanager
    def write_stream(self, argv, *, env=None, output=None):
        argv = [str(a) for a in argv]
        with _stderr_file() as err, _stderr_file() as out:
            proc = self._popen(argv, env, stdin=subprocess.PIPE, stdout=out, stderr=err)
            try:
                yield proc.stdin
                proc.stdin.close()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            code = proc.wait()
            if code != 0:
                err.seek(0)
                out.seek(0)
                raise CommandFailed(self.host, argv, code, stdout=out.read(), stderr=err.read())
            if output is not None:
                out.seek(0)
                output.extend(out.read())

    def _popen(self, argv, env, **kw):
        try:
            return subprocess.Popen(argv, env=self._env(env), **kw, **self._as_user())
        except FileNotFoundError:
            raise CommandFailed(self.host, argv, 127, stderr=f"{argv[0]}: command not found") from None

    def put_file(self, local, remote, *, mode=0o600):
        tmp = f"{remote}.lifeboat-tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as dst, open(local, "rb") as src:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.chmod(tmp, mode)
        os.replace(tmp, remote)

    def get_file(self, remote, local):
        shutil.copyfile(remote, local)

    def write_bytes(self, path, data, *, mode=0o600):
        tmp = f"{path}.lifeboat-tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)

    def read_bytes(self, path):
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None


@contextmanager
def _stderr_file():
    import tempfile

    with tempfile.TemporaryFile() as handle:
        yield handle
