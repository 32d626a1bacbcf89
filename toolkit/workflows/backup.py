"""Off-host backups and failover: ``lifeboat backup``, ``backups list|verify`` and ``failover``.

A *repository* is one bucket of the backup target's object store (``backup: bucket:``, default
``lifeboat-backups``); a stack's backups sit under ``<stack>/``:

- ``repository.json``: the format, the scrypt salt and parameters, and a check value that tells a wrong
  key from a tampered part. No key is ever stored: the operator holds it (``backup: encrypt_with:``, a
  secret ``from: env`` or ``from: file``, never given to a target);
- ``backups/<id>/``: sealed parts (toolkit.stores.sealed): ``database.dump`` (pg_dump custom format, taken in an
  exported snapshot), ``media.json`` (every object: bucket, key, size, SHA-256), ``secrets.json``,
  ``stack.yml``, and last ``manifest.json``, which lists the others with their sizes and SHA-256 and the
  database's row counts and digests. A backup exists once its manifest does;
- ``blobs/<HMAC of the SHA-256>``: each distinct media object once, sealed. A backup uploads only the
  objects no earlier backup holds (incremental), and a blob's name reveals nothing of its content.

Every part is read back by the store (size and SHA-256 of what landed) as it is written; ``backups
verify`` opens every part and blob and checks what it holds. ``failover`` needs nothing from the source:
it restores a backup on the target, verifies it there, deploys, switches DNS and reports the recovery
point (RPO: how old the restored data is) and the recovery time (RTO).
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack

from toolkit.contract import Unsupported
from toolkit.errors import BadInput, ProviderError, VerificationFailed
from toolkit.run.engine import Engine, operator
from toolkit.run.faults import fault
from toolkit.run.journal import Journal
from toolkit.run.steps import run_steps
from toolkit.stores.sealed import (
    Produced,
    Tampered,
)
from toolkit.workflows.repository import FORMAT, PARTS, Repository, new_id

BACKUP_STEPS = ["database", "base", "wal", "cache", "media", "secrets", "stack", "manifest", "retention"]


class Backup:
    """One run of ``lifeboat backup --from SOURCE --to TARGET``: journalled, resumable, under the source's lock."""

    def __init__(self, engine: Engine, source: str, to: str | None = None, *, parallel: int = 8):
        stack = engine.stack
        self.engine, self.stack, self.events = engine, stack, engine.events
        to = to or (stack.backup.to if stack.backup else None)
        if to is None:
            raise BadInput(f"{stack.path.name} has no backup: section; say where with --to.", code="backup.no_target")
        if to == source:
            raise BadInput(f"backup: --from and --to both name {source}; a backup on the host it protects is lost "
                           "with it.", hint="back up to another target (backup: to:).", code="backup.same_target")
        self.source_name, self.to_name = source, to
        self.source = engine.runner(source)
        self.to = engine.provider(to)
        self.parallel = max(1, parallel)
        self.state = stack.root / ".lifeboat" / f"backup-{source}-{to}"
        self.repo: Repository | None = None
        self.journal: Journal | None = None
        self._wal: tuple | None = None  # (WalSource or None, why not), asked once per run

    def run(self, *, resume: bool = False) -> dict:
        began = time.monotonic()
        journal = Journal.current(self.state) if resume else None
        if resume and (journal is None or journal.complete):
            raise BadInput(f"backup: nothing to resume from {self.source_name} to {self.to_name}.",
                           hint="start it without --resume.", code="backup.nothing_to_resume")
        self.engine.preflight(self.source_name)
        self.engine.preflight(self.to_name)
        self.repo = Repository.open(self.to, self.stack, create=True)
        with self.source.lock(f"{operator()} (backup to {self.to_name})"):
            if journal is None:
                journal = Journal.start(self.state, {"from": self.source_name, "to": self.to_name,
                                                     "backup": new_id()}, run="backup")
            self.journal = journal
            self.id = journal.meta["backup"]
            steps = run_steps(self, journal, BACKUP_STEPS, "backup")
            journal.record("backup", "done")
        manifest = journal.finished("manifest") or {}
        return {"backup": self.id, "from": self.source_name, "to": self.to_name, "at": self.repo.where,
                "taken_at": manifest.get("taken_at"), "seconds": round(time.monotonic() - began, 3),
                "steps": steps}

    def _step_database(self) -> dict:
        from toolkit.stores.copier import Alongside

        if not self.stack.postgres:
            return {"skipped": "no postgres", "taken_at": time.time()}
        db = self.source.database()
        name = self.repo.part(self.id, "database.dump")
        with ExitStack() as held:
            try:
                snapshot, digests, _tables = held.enter_context(db.snapshot())
            except Unsupported:
                snapshot = digests = None
            taken_at = time.time()
            worker = Alongside(digests, "lifeboat-digests") if digests is not None else None
            with db.dump(snapshot=snapshot) as stream:
                written = self.repo.put(name, Progress(stream, self.events, "database"))
            # Without a snapshot the digests come after the dump: exact only on a source nobody writes to.
            found = worker.result() if worker is not None else db.table_digests()
        return {"part": written.as_dict(), "taken_at": round(taken_at, 3), "version": db.info().version,
                "exact": snapshot is not None,
                "digests": {t: [d.rows, d.digest] for t, d in sorted(found.items())}}

    def _wal_source(self):
        """The source's WAL archive, or why there is none (``backup: wal:`` off, or a provider that does
        not run PostgreSQL itself, such as RDS)."""
        if self._wal is None:
            self._wal = self._find_wal_source()
        return self._wal

    def _find_wal_source(self):
        if not self.stack.archives_wal:
            return None, "backup: wal: is off"
        try:
            source = self.source.database().wal_source()
        except Unsupported as exc:
            return None, f"{self.source.label} archives no WAL ({exc})"
        if not source.archiving():
            return None, (f"PostgreSQL on {self.source.label} does not archive its WAL yet: run `lifeboat up --on "
                          f"{self.source_name}` (it restarts PostgreSQL once)")
        return source, None

    def _step_base(self) -> dict:
        """A physical base backup (pg_basebackup) for point-in-time recovery from the archived WAL."""
        source, why = self._wal_source()
        if source is None:
            if self.stack.archives_wal:
                self.events.warn(f"backup: no base backup: {why}; a failover restores the dump alone.")
            return {"skipped": why}
        cluster, start = source.system_id(), source.current_segment()
        with source.base_backup() as stream:
            written = self.repo.put(self.repo.part(self.id, "base.tar"), Progress(stream, self.events, "base backup"))
        return {"part": written.as_dict(), "start_segment": start, "cluster": cluster,
                "taken_at": round(time.time(), 3)}

    def _step_wal(self) -> dict:
        from toolkit.workflows import walarchive

        source, why = self._wal_source()
        if source is None:
            return {"skipped": why}
        return walarchive.ship(self.repo, source, self.events)

    def ship_wal(self) -> dict:
        """``lifeboat backup --wal-only``: the spooled WAL into the repository, nothing else (no journal:
        each file is removed from the spool only once it is in the repository, so a re-run is the resume)."""
        from toolkit.workflows import walarchive

        began = time.monotonic()
        source, why = self._wal_source()
        if source is None:
            raise BadInput(f"backup --wal-only: {why}.", hint="set backup: wal: true on a source whose PostgreSQL "
                           "Lifeboat runs (local, baremetal, terraform).", code="backup.no_wal")
        self.engine.preflight(self.source_name)
        self.engine.preflight(self.to_name)
        self.repo = Repository.open(self.to, self.stack, create=True)
        with self.source.lock(f"{operator()} (WAL to {self.to_name})"):
            out = walarchive.ship(self.repo, source, self.events)
        return {"from": self.source_name, "to": self.to_name, "at": self.repo.where,
                "seconds": round(time.monotonic() - began, 3), "wal": out}

    def _step_cache(self) -> dict:
        spec = self.stack.redis
        if spec is None:
            return {"skipped": "no redis"}
        if spec.disposable:
            return {"skipped": "the stack marks the cache as disposable"}
        dump = CacheDump(self.source.cache().connection_url().reveal_text())
        written = self.repo.put(self.repo.part(self.id, "cache.jsonl"), dump)
        return {"part": written.as_dict(), "keys": dump.keys, "databases": dump.shown()}

    def _step_media(self) -> dict:
        from toolkit.stores.copier import releasing, run_parallel

        src, repo = self.source.objects(), self.repo
        entries = [(b, o) for b in sorted(self.stack.buckets) for o in src.list(b)]
        held = repo.blobs()
        total = sum(o.size for _, o in entries)
        tally = {"done": 0, "uploaded": 0, "bytes_uploaded": 0}
        index: dict[int, list] = {}
        import threading

        guard = threading.Lock()

        def upload(bucket: str, obj, sha: str, stream) -> None:
            written = repo.put(repo.blob(sha), stream, size=obj.size)
            if written.plain_sha256 != sha or written.plain_bytes != obj.size:
                raise VerificationFailed(f"backup: object {obj.key!r} of {bucket} changed while it was read "
                                         f"(expected {obj.size} bytes, SHA-256 {sha}).",
                                         hint="run the backup again.")
            with guard:
                tally["uploaded"] += 1
                tally["bytes_uploaded"] += obj.size

        def done(n: int, bucket: str, obj, sha: str) -> None:
            with guard:
                index[n] = [bucket, obj.key, obj.size, sha]
                tally["done"] += obj.size
                self.events.progress("media", tally["done"], total, unit="bytes")

        def save(group: list) -> None:
            """Objects of one bucket: those not held yet read (in one stream where the source reads in
            batches: an SSH host) and stored."""
            bucket = group[0][1]
            fetch = []
            for n, _, obj in group:
                sha = obj.sha256 or src.checksum(bucket, obj.key)
                if repo.blob(sha) in held:
                    done(n, bucket, obj, sha)
                else:
                    fetch.append((n, obj, sha))
            if fetch:
                with src.open_many(bucket, [obj.key for _, obj, _ in fetch]) as many:
                    for (n, obj, sha), (_, stream) in zip(fetch, many, strict=True):
                        upload(bucket, obj, sha, stream)
                        done(n, bucket, obj, sha)

        from toolkit.stores.copier import group_small

        numbered = [(n, b, o) for n, (b, o) in enumerate(entries)]
        if src.READS_IN_BATCHES:  # small objects in groups: one stream each, not one per object
            singles, groups = group_small(numbered, sorted(self.stack.buckets), bucket=lambda item: item[1],
                                          size=lambda item: item[2].size)
            groups += [[item] for item in singles]
        else:
            groups = [[item] for item in numbered]
        groups.sort(key=lambda g: -sum(item[2].size for item in g))  # largest first
        workers = max(1, min(self.parallel, src.PARALLEL, repo.store.PARALLEL))
        with releasing(src):
            run_parallel(save, [(g,) for g in groups], workers)
        listing = json.dumps([index[n] for n in range(len(entries))], ensure_ascii=False).encode()
        written = repo.put_bytes(repo.part(self.id, "media.json"), listing)
        return {"part": written.as_dict(), "objects": len(entries), "bytes": total,
                "uploaded": tally["uploaded"], "bytes_uploaded": tally["bytes_uploaded"],
                "already_held": len(entries) - tally["uploaded"]}

    def _step_secrets(self) -> dict:
        import base64

        names = sorted(n for n in self.stack.secrets if n != self.stack.backup_key)
        values: dict[str, str] = {}
        if names:
            store = self.source.secrets()
            for name in names:
                value = store.read(name)
                if value is None:
                    raise ProviderError(f"backup: secret {name} is missing on {self.source.label}.",
                                        code="backup.secret_missing")
                values[name] = base64.b64encode(value.reveal()).decode()
        written = self.repo.put_bytes(self.repo.part(self.id, "secrets.json"), json.dumps(values).encode())
        values.clear()
        return {"part": written.as_dict(), "names": names}

    def _step_stack(self) -> dict:
        written = self.repo.put_bytes(self.repo.part(self.id, "stack.yml"), self.stack.path.read_bytes())
        releases: dict[str, list[str]] = {}
        try:
            for inst in self.source.compute().instances():
                if inst.release:
                    releases.setdefault(inst.service, [])
                    if inst.release not in releases[inst.service]:
                        releases[inst.service].append(inst.release)
        except Unsupported:
            pass
        return {"part": written.as_dict(), "releases": releases}

    def _step_manifest(self) -> dict:
        j = self.journal
        db, cache, media, secrets, stack = (j.finished(s) for s in ("database", "cache", "media", "secrets", "stack"))
        base = j.finished("base") or {}
        manifest = {
            "format": FORMAT, "id": self.id, "stack": self.stack.name, "source": self.source_name,
            "taken_at": db["taken_at"], "made_by": operator(),
            "database": {k: db[k] for k in ("part", "version", "exact", "digests") if k in db} if "part" in db
            else None,
            "base": {k: base[k] for k in ("part", "start_segment", "cluster", "taken_at")} if "part" in base
            else None,
            "cache": {"part": cache["part"], "keys": cache["keys"]} if "part" in cache else None,
            "media": {"part": media["part"], "objects": media["objects"], "bytes": media["bytes"]},
            "secrets": {"part": secrets["part"], "names": secrets["names"]},
            "stack_file": {"part": stack["part"]}, "releases": stack["releases"],
        }
        written = self.repo.put_bytes(self.repo.part(self.id, "manifest.json"), json.dumps(manifest).encode())
        sealed = sum(p["part"]["sealed_bytes"] for p in (db, base, cache, media, secrets, stack) if "part" in p)
        return {"taken_at": db["taken_at"], "sealed_bytes": sealed + written.sealed_bytes,
                "objects": media["objects"]}

    def _step_retention(self) -> dict:
        keep = self.stack.backup.keep if self.stack.backup else 24
        return prune(self.repo, keep, current=self.id)


def prune(repo: Repository, keep: int, *, current: str | None = None) -> dict:
    """Keep the newest ``keep`` complete backups; remove older ones, unfinished ones older than the newest
    complete one (never ``current``), and blobs no kept backup lists."""
    listing = repo.listing()
    complete = sorted(i for i, parts in listing.items() if "manifest.json" in parts)
    kept = set(complete[-keep:])
    newest = complete[-1] if complete else ""
    gone = [i for i in listing if i not in kept and i != current and (i in complete or i < newest)]
    for ident in gone:
        for name in ("manifest.json", *PARTS):  # the manifest first: a half-removed backup is not listed
            if name in listing[ident]:
                repo.store.delete(repo.bucket, repo.part(ident, name))
    wanted: set[str] = set()
    for ident in kept:
        wanted.update(repo.blob(entry[3]) for entry in repo.media_index(ident))
    if current is not None and current not in kept and "media.json" in listing.get(current, {}):
        wanted.update(repo.blob(entry[3]) for entry in repo.media_index(current))
    removed_blobs = 0
    for name in repo.blobs():
        if name not in wanted:
            repo.store.delete(repo.bucket, name)
            removed_blobs += 1
    out = {"kept": len(kept), "removed_backups": sorted(gone), "removed_blobs": removed_blobs}
    # Per cluster, archived WAL older than every kept base backup of that cluster can never be replayed,
    # nor any of a cluster no kept backup has a base of (the running backup, kept as the newest, has a base
    # of the cluster it ships).
    from toolkit.workflows import walarchive

    keep_from: dict[str, str] = {}
    for manifest in (repo.manifest(i) for i in sorted(kept)):
        if manifest.get("base"):
            cluster, start = manifest["base"].get("cluster", walarchive.LEGACY), manifest["base"]["start_segment"]
            if cluster not in keep_from or walarchive.position(start) < walarchive.position(keep_from[cluster]):
                keep_from[cluster] = start
    out["removed_wal"] = walarchive.prune(repo, keep_from)
    return out


class CacheDump(Produced):
    """Every Redis key of every database in use as a line of JSON (key, milliseconds to live or 0, DUMP
    payload, both base64; then the database's number where it is not 0: lines of older backups have
    three fields, all db 0), read as a stream while the keys are scanned: nothing whole in memory."""

    def __init__(self, url: str):
        from toolkit.workflows import rediskeys

        super().__init__()
        self.keys = 0
        self.per_db: dict[int, int] = {}
        self._dbs = [(db, rediskeys.client(url, db)) for db in rediskeys.databases(url)]
        self._scan = None

    def shown(self) -> dict[str, int]:
        from toolkit.workflows import rediskeys

        return rediskeys.shown(self.per_db)

    def _fill(self) -> None:
        import base64

        key = next(self._scan, None) if self._scan is not None else None
        while key is None:
            if not self._dbs:
                self._ended = True
                return
            self.db, self.client = self._dbs.pop(0)
            self._scan = self.client.scan_iter(count=1000)
            key = next(self._scan, None)
        dumped = self.client.dump(key)
        if dumped is None:
            return  # expired meanwhile
        ttl = self.client.pttl(key)
        line = [base64.b64encode(key).decode(), ttl if ttl and ttl > 0 else 0, base64.b64encode(dumped).decode()]
        self._out += json.dumps(line + ([self.db] if self.db else [])).encode() + b"\n"
        self.keys += 1
        self.per_db[self.db] = self.per_db.get(self.db, 0) + 1


class Progress:
    def __init__(self, stream, events, what: str):
        self.stream, self.events, self.what, self.count = stream, events, what, 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.count += len(data)
        self.events.progress(self.what, self.count, None, unit="bytes")
        if data:
            fault(f"{self.what}:mid", "backup")  # the crash tests stop here, with the dump begun
        return data


class Guarded:
    """Reads through; remembers a :class:`Tampered` raised while reading (a consumer such as a subprocess
    pipe may report it as something else)."""

    def __init__(self, stream, seen: list):
        self.stream, self.seen = stream, seen

    def read(self, n: int = -1) -> bytes:
        try:
            return self.stream.read(n)
        except Tampered as exc:
            self.seen.append(exc)
            raise
