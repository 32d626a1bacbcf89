"""The bulk path of SSH: object streams through the system OpenSSH client, pinned to exactly the host key
paramiko verified (a private known_hosts folder per run, swept when its run is gone), with a key exchange
that costs little CPU; and the pipe and channel helpers both paths use."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.errors import CommandFailed

if TYPE_CHECKING:
    from toolkit.transport.ssh import SSHConnection

BULK_BUFFER = 1 << 20


class BulkSession:
    """A command kept running on a host (:meth:`SSHConnection.bulk_session`): ``stdin`` to write to, answers
    read line by line, ``close()`` to end it (its exit checked), ``kill()`` after a failure."""

    def __init__(self, conn: SSHConnection, argv: list[str], proc: subprocess.Popen):
        self.conn, self.argv, self.proc = conn, argv, proc
        self.stdin = proc.stdin
        self._err = bytearray()
        self._reader = threading.Thread(target=drain_pipe, args=(proc.stderr, self._err, True), daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def read_line(self) -> bytes:
        """The command's next line; at its end (it exited), the failure that ended it is raised."""
        line = self.proc.stdout.readline()
        if not line:
            self._finish()
            raise CommandFailed(self.conn.host, self.argv, 0, stderr=bytes(self._err))  # exit 0 before answering
        return line

    def close(self, out: bytes | bytearray = b"") -> None:
        """End the command (its input closed) and check how it exited; ``out``: what it printed, read by the
        caller, for the error."""
        try:
            self.stdin.close()
        except OSError:
            pass
        self._finish(out)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._reader.join(timeout=10)

    def _finish(self, out: bytes | bytearray = b"") -> None:
        code = self.proc.wait()
        self._reader.join(timeout=10)
        self.proc.stdout.close()
        self.conn._bulk_failed(self.argv, code, out, self._err)


PIN_PREFIX = "lifeboat-ssh-"  # the pinned known_hosts folders: <prefix><machine>-<pid>-<random>


# Key exchanges put first for the bulk streams (each batch is a connection of its own): ML-KEM768 with X25519
# (post-quantum and cheap; OpenSSH 9.9 and later), then X25519 as the control connection (paramiko) and rclone
# use. OpenSSH 9.0-9.8 would otherwise pick sntrup761x25519: 66 ms of client CPU and 70 ms more per connection
# than X25519 (measured on this project's 2-core test machine), for every batch. It stays in the list, after
# these, for a server that offers nothing else. LIFEBOAT_BULK_SSH_KEX replaces the choice (a KexAlgorithms value).
BULK_KEX = ("mlkem768x25519-sha256", "curve25519-sha256", "curve25519-sha256@libssh.org")


def bulk_kex(ssh: str) -> list[str]:
    """The ``-o KexAlgorithms=^...`` options for the OpenSSH client ``ssh``: BULK_KEX, in that order, as far
    as this client knows them (``ssh -Q kex``; an unknown name is fatal to ssh), ahead of its defaults."""
    chosen = os.environ.get("LIFEBOAT_BULK_SSH_KEX")
    if chosen:
        return ["-o", f"KexAlgorithms={chosen}"]
    known = known_kex(ssh)
    first = [name for name in BULK_KEX if name in known]
    return ["-o", "KexAlgorithms=^" + ",".join(first)] if first else []


@functools.lru_cache(maxsize=4)
def known_kex(ssh: str) -> frozenset[str]:
    try:
        found = subprocess.run([ssh, "-Q", "kex"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(found.stdout.split()) if found.returncode == 0 else frozenset()


def sweep_pin_folders() -> None:
    """Remove the pinned known_hosts folders of processes of this machine that are gone without removing
    theirs (killed with SIGKILL: no finalizer ran). Only this account's; a live or unknown process keeps its
    folder."""
    import tempfile

    from toolkit.run.locks import gone_here

    base = Path(tempfile.gettempdir())
    try:
        found = [p for p in base.iterdir() if p.name.startswith(PIN_PREFIX)]
    except OSError:
        return
    for folder in found:
        try:
            machine, pid, _ = folder.name[len(PIN_PREFIX):].rsplit("-", 2)
            if folder.stat().st_uid == os.getuid() and gone_here(machine, int(pid)):
                shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, OSError):
            continue


def widen_pipe(pipe) -> None:
    """Let a pipe to or from ssh hold 1 MiB (F_SETPIPE_SZ; Linux, up to /proc/sys/fs/pipe-max-size): with
    the default 64 KiB, each side stalls whenever the other pauses briefly."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), BULK_BUFFER)
    except (OSError, ValueError, ImportError):
        pass


def feed(pipe, data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except (OSError, ValueError):  # the command ended first: its exit status says why
        pass


def drain_pipe(pipe, sink: bytearray, tail_only: bool) -> None:
    for chunk in iter(lambda: pipe.read1(65536), b""):
        sink.extend(chunk)
        if tail_only:
            del sink[:-65536]


def drain(channel, sink: bytearray) -> None:
    while True:
        try:
            chunk = channel.recv_stderr(65536)
        except (TimeoutError, OSError):
            return
        if not chunk:
            return
        sink.extend(chunk)
        del sink[:-65536]  # keep only the tail


def drain_stdout(channel, sink: bytearray) -> None:
    while True:
        try:
            chunk = channel.recv(65536)
        except (TimeoutError, OSError):
            return
        if not chunk:
            return
        sink.extend(chunk)
        del sink[:-65536]
