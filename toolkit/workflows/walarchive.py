"""Continuous WAL archiving (``backup: wal: true``) and point-in-time recovery from it.

Where Lifeboat runs PostgreSQL, the server archives every finished write-ahead-log segment into a spool
directory next to its data (``archive_command``, a segment at least every minute while anything is
written: ``archive_timeout = 60``). Then:

- each ``lifeboat backup`` also takes a physical base backup (``pg_basebackup``, tar with the WAL it needs)
  into the backup as the sealed part ``base.tar``, and ships the spool;
- ``lifeboat backup --wal-only`` only ships the spool, cheap enough for cron every minute: each segment is
  sealed into the repository as ``<stack>/wal/<cluster>/<segment>``, read back, and only then removed from
  the spool. ``<cluster>`` is the PostgreSQL system identifier written in the segment's own first page
  header (``.history`` and ``.backup`` files take the server's): segment names restart at every ``initdb``,
  so the cluster a failover made on a new target writes names the old source used too, and without the
  cluster in the key its first ``backup`` would overwrite the old source's history. Each cluster's WAL stays
  restorable side by side; a base backup records its cluster, and a replay or ``backups verify`` reads only
  that cluster's folder and refuses a segment whose header names another. Repositories from before this
  layout hold segments directly under ``wal/``: a base backup that records no cluster reads those;
- ``failover`` (and ``drill``) with a base backup fetches every segment from the base on, checks that none
  is missing or altered (exit 4 otherwise), replays them in a scratch PostgreSQL cluster on this machine
  (the same major version; up to ``--at`` when given) and copies the result into the target the usual way
  (pg_dump into pg_restore, row counts and digests compared on both sides). The recovery point is the
  last transaction replayed.

Segment names are ``TTTTTTTTXXXXXXXXYYYYYYYY`` (timeline, log, segment; 16 MB segments), plus ``.history``
and ``.backup`` files.
"""

from __future__ import annotations

import re
import shutil
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO

from toolkit.errors import VerificationFailed

SEGMENT = re.compile(r"[0-9A-F]{24}")
WAL_FILE = re.compile(r"[0-9A-F]{24}(\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history")
SEGMENTS_PER_LOG = 0x100  # 16 MB segments: 4 GB per log id


def position(name: str) -> int:
    """A segment's place in the WAL, whatever its timeline."""
    return int(name[8:16], 16) * SEGMENTS_PER_LOG + int(name[16:24], 16)


def lsn_position(lsn: str) -> int:
    """The segment position of an LSN such as ``0/3000148``."""
    high, _, low = lsn.partition("/")
    return int(high, 16) * SEGMENTS_PER_LOG + (int(low, 16) >> 24)


LEGACY = ""  # the cluster of segments stored directly under wal/ (repositories from before the cluster layout)


def header_system_id(head: bytes) -> str | None:
    """The system identifier in a WAL segment's first (long) page header, or None when ``head`` is no such
    header. Layout (access/xlog_internal.h): xlp_magic u16, xlp_info u16, xlp_tli u32, xlp_pageaddr u64,
    xlp_rem_len u32, padding to 24 bytes, then xlp_sysid u64; little-endian, as the servers Lifeboat runs."""
    import struct

    XLP_LONG_HEADER = 0x0002
    if len(head) < 32:
        return None
    _magic, info = struct.unpack_from("<HH", head, 0)
    if not info & XLP_LONG_HEADER:
        return None
    return str(struct.unpack_from("<Q", head, 24)[0])


class WalSource(ABC):
    """A PostgreSQL that archives its WAL into a spool Lifeboat reads."""

    @abstractmethod
    def spooled(self) -> list[str]:
        """Names of the finished files in the spool, oldest first."""

    @abstractmethod
    def open(self, name: str) -> AbstractContextManager[BinaryIO]: ...

    @abstractmethod
    def size(self, name: str) -> int: ...

    @abstractmethod
    def remove(self, name: str) -> None: ...

    @abstractmethod
    def query(self, sql: str) -> str:
        """One value of one SQL statement, run as the superuser."""

    def current_segment(self) -> str:
        """The segment the server writes now (a base backup taken next starts at or after it)."""
        return self.query("SELECT pg_walfile_name(pg_current_wal_lsn())")

    def system_id(self) -> str:
        """The cluster's system identifier (made by initdb; the same on a physical copy of it)."""
        return self.query("SELECT system_identifier::text FROM pg_control_system()")

    def archiving(self) -> bool:
        """Whether the running server archives (``archive_mode`` on: ``up`` ran since ``wal: true``)."""
        return self.query("SHOW archive_mode") == "on"

    @abstractmethod
    def base_backup(self) -> AbstractContextManager[BinaryIO]:
        """``pg_basebackup`` as a tar stream, with the WAL it needs to be consistent."""


def basebackup_argv(bindir: Path, *, host: str, port: int, user: str, version: int) -> list[str]:
    """A tar of the cluster on stdout, with the WAL it needs to be consistent on its own."""
    return [str(bindir / "pg_basebackup"), "--no-password", "-h", host, "-p", str(port), "-U", user,
            "-D", "-", "-F", "tar", "-X", "fetch", "-c", "fast", *(["--no-manifest"] if version >= 13 else [])]


class LocalWalSource(WalSource):
    """The spool of a PostgreSQL on this machine."""

    def __init__(self, spool: Path, *, query, base):
        self.spool = spool
        self._run_query, self._base = query, base

    def spooled(self) -> list[str]:
        if not self.spool.is_dir():
            return []
        return sorted(p.name for p in self.spool.iterdir() if WAL_FILE.fullmatch(p.name))

    @contextmanager
    def open(self, name: str):
        with open(self.spool / name, "rb") as handle:
            yield handle

    def size(self, name: str) -> int:
        return (self.spool / name).stat().st_size

    def remove(self, name: str) -> None:
        (self.spool / name).unlink(missing_ok=True)

    def query(self, sql: str) -> str:
        return self._run_query(sql)

    def base_backup(self):
        return self._base()


class HostWalSource(WalSource):
    """The spool of a PostgreSQL on a host Lifeboat reaches over SSH (toolkit.hostops.PostgresHost):
    listed, read and removed with plain commands (argv, nothing pasted into a shell); the base backup is
    pg_basebackup on the host through its Unix socket, streamed back."""

    def __init__(self, pgh, *, superuser: str, password: bytes):
        self.pgh, self.conn, self.spool = pgh, pgh.conn, pgh.wal_spool
        self.superuser, self._password = superuser, password

    def spooled(self) -> list[str]:
        listed = self.conn.run(["ls", "-1", self.spool], check=False)
        return sorted(n for n in listed.text.split() if WAL_FILE.fullmatch(n)) if listed.ok else []

    def open(self, name: str):
        return self.conn.read_stream(["cat", f"{self.spool}/{name}"])

    def size(self, name: str) -> int:
        return int(self.conn.run(["stat", "-c", "%s", f"{self.spool}/{name}"]).text.strip())

    def remove(self, name: str) -> None:
        self.conn.run(["rm", "-f", f"{self.spool}/{name}"])

    def query(self, sql: str) -> str:
        return self.pgh.psql(sql + ";\n", user=self.superuser, password=self._password)[0][0]

    def base_backup(self):
        argv = basebackup_argv(self.pgh.bindir, host=self.pgh.sockets, port=self.pgh.port, user=self.superuser,
                               version=self.pgh.version)
        return self.conn.read_stream(argv, env={"PGPASSWORD": self._password.decode(), "PGCONNECT_TIMEOUT": "10"})


# ------------------------------------------------------------------------------------ the repository side
def wal_key(repo, name: str, cluster: str) -> str:
    return f"{repo.prefix}wal/{cluster}/{name}" if cluster else f"{repo.prefix}wal/{name}"


def clusters(repo) -> dict[str, dict[str, object]]:
    """cluster -> {file name: ObjectInfo} of every WAL file in the repository (LEGACY: directly under wal/)."""
    base = f"{repo.prefix}wal/"
    out: dict[str, dict[str, object]] = {}
    for info in repo.store.list(repo.bucket, base):
        cluster, _, name = info.key[len(base):].rpartition("/")
        if WAL_FILE.fullmatch(name) and "/" not in cluster:
            out.setdefault(cluster, {})[name] = info
    return out


def shipped(repo, cluster: str) -> dict[str, object]:
    """File name -> ObjectInfo of every WAL file of ``cluster`` in the repository (only its folder listed,
    but for LEGACY, whose files sit beside the clusters' folders)."""
    if cluster == LEGACY:
        return clusters(repo).get(cluster, {})
    base = f"{repo.prefix}wal/{cluster}/"
    found = ((info.key[len(base):], info) for info in repo.store.list(repo.bucket, base))
    return {name: info for name, info in found if WAL_FILE.fullmatch(name)}


class _Prefixed:
    """A stream whose first bytes were already read (to learn the segment's cluster)."""

    def __init__(self, head: bytes, rest):
        self.head, self.rest = head, rest

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n is None or n < 0:
                data, self.head = self.head + self.rest.read(), b""
                return data
            data, self.head = self.head[:n], self.head[n:]
            return data
        return self.rest.read(n)


def ship(repo, source: WalSource, events=None) -> dict:
    """Every spooled file sealed into the repository under its cluster (read back by the store as it
    lands), then removed from the spool. Re-running after a crash sends again what was not yet removed:
    same name, same bytes, same place."""
    names = source.spooled()
    own = source.system_id() if names else None
    sent = 0
    foreign: dict[str, int] = {}
    for index, name in enumerate(names):
        with source.open(name) as stream:
            cluster = own
            head = b""
            if SEGMENT.fullmatch(name):
                head = stream.read(32)
                cluster = header_system_id(head) or own
                if cluster != own:  # left in the spool by an earlier cluster of the same folder
                    foreign[cluster] = foreign.get(cluster, 0) + 1
            written = repo.put(wal_key(repo, name, cluster), _Prefixed(head, stream), size=source.size(name))
        sent += written.plain_bytes
        source.remove(name)
        if events is not None:
            events.progress("wal", index + 1, len(names), unit="segments")
    if foreign and events is not None:
        events.warn(f"WAL: {sum(foreign.values())} spooled segments belong to another PostgreSQL cluster than the "
                    f"one running now ({', '.join(sorted(foreign))}); kept under their own cluster.")
    segments = [n for n in names if SEGMENT.fullmatch(n)]
    return {"files": len(names), "bytes": sent, "cluster": own, "newest": segments[-1] if segments else None}


def _from(found: dict, start: str) -> tuple[list[str], list[str]]:
    """(every WAL file a replay from segment ``start`` reads, its segments in order)."""
    segments = sorted((n for n in found if SEGMENT.fullmatch(n) and position(n) >= position(start)), key=position)
    return [n for n in found if n.endswith(".history")] + segments, segments


def _segment_name(pos: int) -> str:
    return f"{pos // SEGMENTS_PER_LOG:08X}{pos % SEGMENTS_PER_LOG:08X}"


def _gap(repo, segments: list[str], start: str) -> VerificationFailed | None:
    """A segment missing between ``start`` and the newest archived one (the start segment included: the
    replay needs every segment from the base backup's on)."""
    positions = sorted({position(n) for n in segments})
    held = set(positions)
    missing = [p for p in range(position(start), positions[-1]) if p not in held] if positions else []
    if not missing:
        return None
    return VerificationFailed(f"{repo.where}: the archived WAL has a gap: segment {_segment_name(missing[0])} "
                              "(log, segment)" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                              + " missing; a replay would stop there.", code="backup.wal_gap")


def held(repo) -> dict:
    """What archived WAL the repository holds: files, bytes, the newest segment; and the same per cluster."""
    per = {}
    for cluster, found in sorted(clusters(repo).items()):
        segments = sorted((n for n in found if SEGMENT.fullmatch(n)), key=position)
        per[cluster or "unrecorded"] = {"files": len(found), "bytes": sum(i.size for i in found.values()),
                                        "newest_segment": segments[-1] if segments else None}
    newest = max((c["newest_segment"] for c in per.values() if c["newest_segment"]), key=position, default=None)
    return {"files": sum(c["files"] for c in per.values()), "bytes": sum(c["bytes"] for c in per.values()),
            "newest_segment": newest, "clusters": per}


def _foreign(name: str, head: bytes, cluster: str) -> str | None:
    """Why a segment does not belong to ``cluster`` (None: it does, or the layout records no cluster)."""
    if not cluster or not SEGMENT.fullmatch(name):
        return None
    found = header_system_id(head)
    if found == cluster:
        return None
    return (f"archived WAL {name} belongs to PostgreSQL cluster {found or 'unknown (no page header)'}, not to the "
            f"base backup's cluster {cluster}")


def fetch(repo, start: str, into: Path, events=None, *, cluster: str = LEGACY) -> dict:
    """Every WAL file of ``cluster`` from segment ``start`` on, unsealed into ``into`` (0700). Altered
    files, files of another cluster and gaps in the segments are refused (VerificationFailed, exit 4):
    replay would stop there without a word, or refuse the file."""
    wanted, segments = _from(shipped(repo, cluster), start)
    gap = _gap(repo, segments, start)
    if gap is not None:
        raise gap
    into.mkdir(parents=True, exist_ok=True, mode=0o700)
    for index, name in enumerate(wanted):
        try:
            with repo.reading(wal_key(repo, name, cluster)) as opening, open(into / name, "wb") as out:
                head = opening.read(32)
                out.write(head)
                shutil.copyfileobj(opening, out, 1 << 20)
        except VerificationFailed as exc:
            raise VerificationFailed(f"archived WAL {name}: {exc.message}", code=exc.code) from None
        problem = _foreign(name, head, cluster)
        if problem:
            raise VerificationFailed(f"{repo.where}: {problem}.", code="backup.wal_foreign")
        if events is not None:
            events.progress("wal", index + 1, len(wanted), unit="segments")
    return {"files": len(wanted), "newest": segments[-1] if segments else None}


def check(repo, start: str, cluster: str = LEGACY) -> tuple[int, list[str]]:
    """``backups verify`` of the archived WAL of ``cluster`` from segment ``start`` on: (files, problems):
    gaps, altered files, and segments whose header names another cluster."""
    wanted, segments = _from(shipped(repo, cluster), start)
    problems = []
    gap = _gap(repo, segments, start)
    if gap is not None:
        problems.append(gap.message)
    for name in wanted:
        try:
            with repo.reading(wal_key(repo, name, cluster)) as opening:
                head = opening.read(32)
                while opening.read(1 << 20):
                    pass
        except VerificationFailed as exc:
            problems.append(f"WAL {name}: {exc.message}")
            continue
        problem = _foreign(name, head, cluster)
        if problem:
            problems.append(problem)
    return len(wanted), problems


def prune(repo, keep_from: dict[str, str]) -> int:
    """Per cluster, remove WAL segments older than ``keep_from[cluster]`` (the oldest kept base backup of
    that cluster's first segment); every file of a cluster no kept backup has a base of can never be
    replayed and goes too. Returns the number of files removed."""
    removed = 0
    for cluster, found in clusters(repo).items():
        start = keep_from.get(cluster)
        for name in found:
            if start is None or (SEGMENT.fullmatch(name) and position(name) < position(start)):
                repo.store.delete(repo.bucket, wal_key(repo, name, cluster))
                removed += 1
    return removed
