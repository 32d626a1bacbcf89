"""Point-in-time recovery on this machine: a scratch PostgreSQL cluster (owned by one run, swept when its
run is gone) that restores a base backup, replays the archived WAL up to a moment, and is read as a
database for the failover to dump from. The archive itself is :mod:`toolkit.workflows.walarchive`."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from toolkit.contract import DatabaseInfo, DatabaseService, SecretValue, TableDigest, Unsupported
from toolkit.errors import ProviderError


def server_bindir(version: int) -> Path:
    """PostgreSQL ``version``'s server programs on this machine (Debian's layout, else PATH)."""
    candidate = Path(f"/usr/lib/postgresql/{version}/bin")
    if (candidate / "postgres").exists():
        return candidate
    found = shutil.which("pg_ctl")
    if found and (Path(found).resolve().parent / "postgres").exists():
        return Path(found).resolve().parent
    raise ProviderError(f"replaying archived WAL needs PostgreSQL {version}'s server on this machine.",
                        hint=f"Debian: apt-get install postgresql-{version}.", code="backup.no_postgres")


def replay_account() -> str | None:
    """The account the scratch cluster runs as: this one, or when root (which PostgreSQL refuses) the
    system account ``lifeboat`` (made when missing, as the local provider does)."""
    if os.geteuid() != 0:
        return None
    from toolkit.hostops.bootstrap import ensure_account
    from toolkit.transport.connection import LocalConnection

    ensure_account(LocalConnection(), "lifeboat")
    return "lifeboat"


# ---------------------------------------------------------------------------------- replay on this machine
class ReplayCluster:
    """A scratch PostgreSQL made from a base backup, replaying archived WAL up to its end (or a time), then
    promoted. It listens on a Unix socket only, in a 0700 directory, and trusts local connections; run as
    ``os_user`` when this process is root (PostgreSQL refuses root)."""

    def __init__(self, bindir: Path, *, os_user: str | None, database: str, user: str, parent: Path | None = None):
        import fcntl
        import tempfile

        self.bindir, self.os_user = bindir, os_user
        self.database, self.user = database, user
        parent = Path(parent or os.environ.get("TMPDIR") or "/var/tmp")
        self.swept = sweep_replays(parent)  # what a killed run left: its folder, maybe its postgres
        # Its own 0700 folder, so that os_user reaches it whatever the folders above allow. The owner lock
        # is held for this process's life (the kernel drops it however the process ends): a folder whose
        # lock can be taken belongs to a run that is gone.
        self.root = Path(tempfile.mkdtemp(prefix=REPLAY_PREFIX, dir=parent))
        self._owner = os.open(self.root / OWNER_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._owner, fcntl.LOCK_EX)
        self.data, self.sockets, self.wal_dir = self.root / "data", self.root / "run", self.root / "wal"
        self.log = self.root / "postgres.log"
        self.port = 5432
        self.started = False

    def _conn(self):
        from toolkit.transport.connection import LocalConnection

        return LocalConnection(user=self.os_user, umask=0o077)

    def _own(self, path: Path) -> None:
        if self.os_user:
            shutil.chown(path, self.os_user, self.os_user)
            for sub, dirs, files in os.walk(path):
                for name in dirs + files:
                    shutil.chown(os.path.join(sub, name), self.os_user, self.os_user)

    def restore(self, base: BinaryIO, *, until: float | None = None, timeout: float = 1800) -> dict:
        """Unpack ``base`` (a pg_basebackup tar stream), replay the WAL fetched into :attr:`wal_dir`,
        promote; return the last replayed transaction's time (None when nothing after the base) and the WAL
        position reached."""
        import tarfile

        from toolkit.commands.pgcommands import pg_conf_quote

        self.data.mkdir(mode=0o700)
        self.sockets.mkdir(mode=0o700)
        with tarfile.open(fileobj=base, mode="r|") as archive:
            archive.extractall(self.data, filter="data")
        for stale in ("postmaster.pid", "postmaster.opts", "standby.signal"):
            (self.data / stale).unlink(missing_ok=True)
        settings = {
            "listen_addresses": "", "port": str(self.port), "unix_socket_directories": str(self.sockets),
            "archive_mode": "off", "logging_collector": "off",
            "restore_command": f"cp {_sh(str(self.wal_dir))}/%f %p",
            "recovery_target_action": "promote", "recovery_target_timeline": "latest",
        }
        if until is not None:
            whole = int(until)
            settings["recovery_target_time"] = (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(whole))
                                                + f".{int((until - whole) * 1e6):06d}+00")
        with open(self.data / "postgresql.auto.conf", "a") as conf:  # read last: wins over the source's files
            conf.write("\n# Lifeboat replay\n" + "".join(f"{k} = {pg_conf_quote(v)}\n" for k, v in settings.items()))
        (self.data / "pg_hba.conf").write_text("local all all trust\n")
        (self.data / "recovery.signal").write_text("")
        self._own(self.root)
        self.started = True
        try:
            return self._recover(timeout)
        except ProviderError:
            # A time past the end of the archive: PostgreSQL stops short of the target it cannot reach. All
            # there is comes before that time, so the replay goes on to the end instead.
            if until is None or "recovery ended before configured recovery target was reached" not in self._log():
                raise
        conf = self.data / "postgresql.auto.conf"
        conf.write_text("".join(line for line in conf.read_text().splitlines(keepends=True)
                                if not line.startswith("recovery_target_time")))
        return self._recover(timeout)

    def _recover(self, timeout: float) -> dict:
        """Start the cluster and wait until it has replayed and promoted itself."""
        import psycopg

        from toolkit.commands.pgcommands import pg_ctl_start

        try:
            self._conn().run(pg_ctl_start(self.bindir, self.data, self.log, timeout=int(timeout)),
                             timeout=timeout + 30)
        except Exception as exc:
            raise ProviderError(f"the scratch PostgreSQL replaying the WAL did not start: {exc}\n"
                                f"{self._log_tail()}", code="backup.replay") from None
        deadline = time.monotonic() + timeout
        try:
            with self.connect() as conn:
                while conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                    if time.monotonic() > deadline:
                        raise ProviderError(f"replaying the WAL did not finish in {timeout:.0f} s.\n"
                                            f"{self._log_tail()}", code="backup.replay")
                    time.sleep(0.2)
                stamp, lsn = conn.execute("SELECT extract(epoch FROM pg_last_xact_replay_timestamp()), "
                                          "pg_last_wal_replay_lsn()::text").fetchone()
        except psycopg.OperationalError as exc:  # the server stopped during the replay
            raise ProviderError(f"the scratch PostgreSQL stopped while replaying the WAL ({exc}).\n"
                                f"{self._log_tail()}", code="backup.replay") from None
        return {"replayed_until": float(stamp) if stamp is not None else None, "lsn": lsn}

    def _log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def _log_tail(self) -> str:
        return "\n".join(self._log().splitlines()[-12:])

    def connect(self, database: str | None = None):
        import psycopg

        return psycopg.connect(host=str(self.sockets), port=self.port, user=self.user,
                               dbname=database or self.database, autocommit=True, connect_timeout=10)

    def database_service(self) -> DatabaseService:
        return _ReplayedDatabase(self)

    def stop(self) -> None:
        from toolkit.commands.pgcommands import pg_ctl_stop

        try:
            if self.started:
                self._conn().run(pg_ctl_stop(self.bindir, self.data, mode="immediate"), timeout=90)
        except Exception:  # noqa: S110 - best effort: the folders go below either way
            pass
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            os.close(self._owner)


REPLAY_PREFIX = "lifeboat-replay-"
OWNER_FILE = ".owner"


def sweep_replays(parent: Path) -> list[str]:
    """Remove the scratch clusters under ``parent`` whose run is gone (killed: no ``finally`` ran): their
    postgres stopped (immediate shutdown, then killed), their folder removed. A folder whose owner lock
    is held belongs to a live run and is left alone. Returns the folders removed."""
    import fcntl

    removed = []
    try:
        candidates = [p for p in parent.iterdir() if p.name.startswith(REPLAY_PREFIX) and p.is_dir()]
    except OSError:
        return removed
    for root in candidates:
        try:
            fd = os.open(root / OWNER_FILE, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:  # made by a version without the lock, or killed before it took it
            if time.time() - root.stat().st_mtime < 3600:
                continue
            fd = None
        except OSError:
            continue
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live run's
            _stop_postmaster(root / "data")
            shutil.rmtree(root, ignore_errors=True)
            removed.append(str(root))
        finally:
            if fd is not None:
                os.close(fd)
    return removed


def _stop_postmaster(data: Path, wait: float = 15) -> None:
    """The postmaster of ``data`` (from its postmaster.pid, checked against /proc) shut down at once."""
    import signal

    try:
        pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return
    if "postgres" not in command or str(data) not in command:
        return  # the number now names another process
    for sig in (signal.SIGQUIT, signal.SIGKILL):  # SIGQUIT: PostgreSQL's immediate shutdown
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.1)


def _sh(text: str) -> str:
    import shlex

    return shlex.quote(text)


class _ReplayedDatabase(DatabaseService):
    """The replayed cluster as the source of an ordinary database copy."""

    remote = False

    def __init__(self, cluster: ReplayCluster):
        self.c = cluster

    def info(self) -> DatabaseInfo:
        with self.c.connect() as conn:
            version, size = conn.execute("SELECT current_setting('server_version_num')::int / 10000, "
                                         "pg_database_size(current_database())").fetchone()
            exts = tuple(r[0] for r in conn.execute("SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' "
                                                    "ORDER BY 1").fetchall())
        return DatabaseInfo(int(version), self.c.database, exts, int(size))

    @contextmanager
    def snapshot(self) -> Iterator:
        from toolkit.stores.digests import exported_snapshot

        with self.c.connect() as conn, exported_snapshot(conn) as held:
            yield held

    @contextmanager
    def dump(self, snapshot=None, part=None, compress=1):
        from toolkit.commands.pgcommands import pg_dump
        from toolkit.transport.connection import LocalConnection

        argv = pg_dump(self.c.bindir, host=str(self.c.sockets), port=self.c.port, user=self.c.user,
                       database=self.c.database, snapshot=snapshot, part=part, compress=compress)
        with LocalConnection().read_stream(argv, env={"PGCONNECT_TIMEOUT": "10"}) as stream:
            yield stream

    def restore(self, stream, *, clean: bool = True, part=None) -> None:
        raise Unsupported("the replayed cluster is only read")

    def table_digests(self, method: str = "auto") -> dict[str, TableDigest]:
        from toolkit.stores.digests import table_digests

        with self.c.connect() as conn:
            return table_digests(conn, method)

    def connection_url(self) -> SecretValue:
        raise Unsupported("the replayed cluster has no URL; it is reached through its socket")
