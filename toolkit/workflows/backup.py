"""Off-host backups and failover: ``lifeboat backup``, ``backups list|verify`` and ``failover``.

A *repository* is one bucket of the backup target's object store (``backup: bucket:``, default
``lifeboat-backups``); a stack's backups sit under ``<stack>/``:

- ``repository.json``: the format, the scrypt salt and parameters, and a check value that tells a wrong
  key from a tampered part. No key is ever stored: the operator holds it (``backup: encrypt_with:``, a
  secret ``from: env`` or ``from: file``, never given to a target);
- ``backups/<id>/``: sealed parts (toolkit.sealed): ``database.dump`` (pg_dump custom format, taken in an
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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from toolkit.contract import ObjectStore, Provider, SecretValue, Unsupported
from toolkit.errors import BadInput, ProviderError, VerificationFailed
from toolkit.paths import private_dir
from toolkit.run.engine import Engine, operator, operator_secret
from toolkit.run.faults import fault
from toolkit.run.journal import Journal
from toolkit.run.steps import run_steps
from toolkit.stores.digests import method_of
from toolkit.stores.sealed import (
    Opening,
    Produced,
    RepositoryKey,
    Sealing,
    Tampered,
    new_params,
    open_bytes,
    sealed_size,
)

FORMAT = 1
PARTS = ("database.dump", "base.tar", "cache.jsonl", "media.json", "secrets.json", "stack.yml")


def _epoch_text(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _new_id() -> str:
    now = time.time()
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}Z"


# ---------------------------------------------------------------------------------------------- repository
@dataclass
class Written:
    plain_bytes: int
    plain_sha256: str
    sealed_bytes: int
    sealed_sha256: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Repository:
    """The stack's backups in one bucket of an object store, sealed with the operator's key."""

    def __init__(self, store: ObjectStore, bucket: str, stack_name: str, key: RepositoryKey, where: str):
        self.store, self.bucket, self.prefix, self.key, self.where = store, bucket, f"{stack_name}/", key, where

    @classmethod
    def open(cls, provider: Provider, stack, *, create: bool = False) -> Repository:
        if not stack.backup or not stack.backup.encrypt_with:
            raise BadInput(f"{stack.path.name}: backups need a key: the backup: section names no encrypt_with.",
                           hint="add `encrypt_with: NAME` under backup:, with NAME a secret `from: env` or "
                                "`from: file` that only you hold.", code="backup.no_key")
        secret = operator_secret(stack.secrets[stack.backup.encrypt_with]).reveal()
        store, bucket = provider.objects(), stack.backup.repository_bucket
        where = f"bucket {bucket} of {provider.label}"
        config = f"{stack.name}/repository.json"
        raw = _read_small(store, bucket, config)
        if raw is None:
            if not create:
                raise BadInput(f"no backups of stack {stack.name} in {where}.",
                               hint=f"make one: lifeboat backup --from TARGET --to {provider.target.name}.",
                               code="backup.none")
            try:
                store.create_bucket(bucket)
            except Unsupported as exc:
                raise BadInput(f"{provider.label} cannot make the backup bucket {bucket} ({exc}).",
                               hint="create it there and name it under backup: bucket:.",
                               code="backup.no_bucket") from None
            params = new_params()
            key = RepositoryKey(secret, params)
            params.update(format=FORMAT, check=key.check_value())
            body = json.dumps(params, indent=1).encode()
            store.write(bucket, config, _bytes_stream(body), size=len(body), content_type="application/json")
            return cls(store, bucket, stack.name, key, where)
        try:
            params = json.loads(raw)
            key = RepositoryKey(secret, params)
        except (ValueError, KeyError) as exc:
            raise VerificationFailed(f"{where}: {config} is damaged ({exc}).", code="backup.damaged") from None
        if key.check_value() != params.get("check"):
            raise BadInput(f"the key in secret {stack.backup.encrypt_with} does not open the backups in {where}.",
                           hint="give the key these backups were made with (its value is never printed).",
                           code="backup.wrong_key")
        return cls(store, bucket, stack.name, key, where)

    # -- names
    def part(self, backup_id: str, name: str) -> str:
        return f"{self.prefix}backups/{backup_id}/{name}"

    def blob(self, sha256: str) -> str:
        return f"{self.prefix}blobs/{self.key.mac('blob:' + sha256)}"

    # -- writing and reading sealed parts
    def put(self, name: str, stream, *, size: int | None = None) -> Written:
        sealing = Sealing(stream, self.key, name)
        info = self.store.write(self.bucket, name, sealing, size=sealed_size(size) if size is not None else None)
        sealed = sealing.sealed_sha256.hexdigest()
        landed = info.sha256 or self.store.checksum(self.bucket, name)
        if info.size != sealing.sealed_bytes or landed != sealed:
            raise VerificationFailed(f"{self.where}: {name} arrived with size {info.size} and SHA-256 {landed}, "
                                     f"sent {sealing.sealed_bytes} bytes with SHA-256 {sealed}.")
        return Written(sealing.plain_bytes, sealing.plain_sha256.hexdigest(), sealing.sealed_bytes, sealed)

    def put_bytes(self, name: str, data: bytes) -> Written:
        return self.put(name, _bytes_stream(data), size=len(data))

    @contextmanager
    def reading(self, name: str):
        """An :class:`Opening` of a sealed part; Tampered while reading becomes VerificationFailed."""
        try:
            with self.store.open_read(self.bucket, name) as stream:
                yield Opening(stream, self.key, name)
        except Tampered as exc:
            raise VerificationFailed(f"{self.where}: {exc}; this backup cannot be trusted.",
                                     code="backup.tampered") from None

    def read_bytes(self, name: str) -> bytes:
        raw = _read_small(self.store, self.bucket, name)
        if raw is None:
            raise VerificationFailed(f"{self.where}: {name} is missing.", code="backup.incomplete")
        try:
            return open_bytes(raw, self.key, name)
        except Tampered as exc:
            raise VerificationFailed(f"{self.where}: {exc}; this backup cannot be trusted.",
                                     code="backup.tampered") from None

    # -- what is there
    def listing(self) -> dict[str, dict[str, object]]:
        """backup id -> {part name: ObjectInfo} for every backup folder, complete or not."""
        out: dict[str, dict[str, object]] = {}
        base = f"{self.prefix}backups/"
        for info in self.store.list(self.bucket, base):
            ident, _, name = info.key[len(base):].partition("/")
            out.setdefault(ident, {})[name] = info
        return out

    def complete_ids(self) -> list[str]:
        return sorted(i for i, parts in self.listing().items() if "manifest.json" in parts)

    def manifest(self, backup_id: str) -> dict:
        return json.loads(self.read_bytes(self.part(backup_id, "manifest.json")))

    def media_index(self, backup_id: str) -> list[list]:
        return json.loads(self.read_bytes(self.part(backup_id, "media.json")))

    def blobs(self) -> dict[str, object]:
        return {info.key: info for info in self.store.list(self.bucket, f"{self.prefix}blobs/")}


def _read_small(store: ObjectStore, bucket: str, key: str) -> bytes | None:
    try:
        if store.head(bucket, key) is None:
            return None
    except ProviderError as exc:
        if exc.code == "objects.no_bucket":
            return None
        raise
    with store.open_read(bucket, key) as stream:
        return stream.read()


def _bytes_stream(data: bytes):
    import io

    return io.BytesIO(data)


# ---------------------------------------------------------------------------------------------- backup
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
                                                     "backup": _new_id()}, run="backup")
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
                written = self.repo.put(name, _Progress(stream, self.events, "database"))
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
            written = self.repo.put(self.repo.part(self.id, "base.tar"), _Progress(stream, self.events, "base backup"))
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
        import redis

        client = redis.Redis.from_url(self.source.cache().connection_url().reveal_text(), socket_timeout=30)
        dump = _CacheDump(client)
        written = self.repo.put(self.repo.part(self.id, "cache.jsonl"), dump)
        return {"part": written.as_dict(), "keys": dump.keys}

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


# ---------------------------------------------------------------------------------------------- list, verify
def list_backups(engine: Engine, at: str | None = None) -> dict:
    provider = _repository_target(engine, at)
    repo = Repository.open(provider, engine.stack)
    blobs = repo.blobs()
    now = time.time()
    out = []
    for ident, parts in sorted(repo.listing().items()):
        if "manifest.json" not in parts:
            out.append({"id": ident, "complete": False, "problems": ["unfinished (no manifest)"]})
            continue
        try:
            manifest = repo.manifest(ident)
        except VerificationFailed as exc:
            out.append({"id": ident, "complete": False, "problems": [exc.message]})
            continue
        problems, sealed = [], parts["manifest.json"].size
        for name, entry in _parts(manifest):
            info = parts.get(name.rsplit("/", 1)[1])
            if info is None or info.size != entry["sealed_bytes"]:
                found = "missing" if info is None else f"{info.size} bytes, not {entry['sealed_bytes']}"
                problems.append(f"{name} is {found}")
            else:
                sealed += info.size
        missing = sum(1 for e in repo.media_index(ident) if repo.blob(e[3]) not in blobs) if not problems else 0
        if missing:
            problems.append(f"{missing} media objects missing")
        out.append({"id": ident, "taken_at": _epoch_text(manifest["taken_at"]),
                    "age_seconds": round(now - manifest["taken_at"]), "source": manifest["source"],
                    "database_bytes": (manifest["database"] or {}).get("part", {}).get("plain_bytes", 0),
                    "objects": manifest["media"]["objects"], "media_bytes": manifest["media"]["bytes"],
                    "sealed_bytes": sealed, "point_in_time": bool(manifest.get("base")), "complete": not problems,
                    "problems": problems})
    from toolkit.workflows import walarchive

    return {"at": repo.where, "backups": out, "wal": walarchive.held(repo)}


def verify_backups(engine: Engine, at: str | None = None, backup_id: str | None = None) -> dict:
    """Open every part and every media blob of each backup (or of ``backup_id``) and check what they hold
    against the manifest: sizes and SHA-256 of the plaintext. The result lists every backup with what
    failed, and the ids that failed under ``failed``."""
    provider = _repository_target(engine, at)
    repo = Repository.open(provider, engine.stack)
    ids = repo.complete_ids()
    if backup_id is not None:
        if backup_id not in ids:
            raise BadInput(f"no complete backup {backup_id} in {repo.where}.",
                           hint="`lifeboat backups list` shows them.", code="backup.unknown")
        ids = [backup_id]
    checked_blobs: dict[str, str | None] = {}  # blob -> problem (None: fine), checked once across backups
    checked_wal: dict[tuple[str, str], tuple[int, list[str]]] = {}  # (cluster, start segment) -> (files, problems)
    results, failed = [], []
    for ident in ids:
        problems: list[str] = []
        objects = 0
        try:
            manifest = repo.manifest(ident)
            for name, entry in _parts(manifest):
                problem = _check_part(repo, name, entry["plain_bytes"], entry["plain_sha256"])
                if problem:
                    problems.append(problem)
            if manifest.get("base"):  # its point-in-time recovery: every archived WAL file after its base
                from toolkit.workflows import walarchive

                chain = (manifest["base"].get("cluster", walarchive.LEGACY), manifest["base"]["start_segment"])
                if chain not in checked_wal:
                    checked_wal[chain] = walarchive.check(repo, chain[1], chain[0])
                problems.extend(f"archived WAL (failover --no-wal restores the dump alone): {p}"
                                for p in checked_wal[chain][1])
            if not any("media.json" in p for p in problems):
                for bucket, key, size, sha in repo.media_index(ident):
                    objects += 1
                    blob = repo.blob(sha)
                    if blob not in checked_blobs:
                        checked_blobs[blob] = _check_part(repo, blob, size, sha)
                    if checked_blobs[blob]:
                        problems.append(f"object {key!r} of {bucket}: {checked_blobs[blob]}")
        except VerificationFailed as exc:
            problems.append(exc.message)
        entry = {"id": ident, "ok": not problems, "objects": objects, "problems": problems}
        results.append(entry)
        if problems:
            failed.append(ident)
        engine.events.step(f"backup {ident}: {'verified' if not problems else 'FAILED'}")
    return {"at": repo.where, "backups": results, "failed": failed}


def _parts(manifest: dict) -> list[tuple[str, dict]]:
    ident = manifest["id"]
    prefix = f"{manifest['stack']}/backups/{ident}/"
    out = []
    if manifest.get("database"):
        out.append((prefix + "database.dump", manifest["database"]["part"]))
    if manifest.get("base"):
        out.append((prefix + "base.tar", manifest["base"]["part"]))
    if manifest.get("cache"):
        out.append((prefix + "cache.jsonl", manifest["cache"]["part"]))
    out.append((prefix + "media.json", manifest["media"]["part"]))
    out.append((prefix + "secrets.json", manifest["secrets"]["part"]))
    out.append((prefix + "stack.yml", manifest["stack_file"]["part"]))
    return out


def _check_part(repo: Repository, name: str, size: int, sha: str) -> str | None:
    try:
        with repo.reading(name) as opening:
            opening.drain()
    except VerificationFailed as exc:
        return exc.message
    except Exception as exc:  # noqa: BLE001 - missing or unreadable: that is the finding
        return f"{name} cannot be read ({exc})"
    if opening.plain_bytes != size or opening.plain_sha256.hexdigest() != sha:
        return f"{name} holds {opening.plain_bytes} bytes with another SHA-256 than recorded"
    return None


def _repository_target(engine: Engine, at: str | None) -> Provider:
    stack = engine.stack
    at = at or (stack.backup.to if stack.backup else None)
    if at is None:
        raise BadInput(f"{stack.path.name} has no backup: section; say where the backups are with --at.",
                       code="backup.no_target")
    engine.preflight(at)
    return engine.provider(at)


# ---------------------------------------------------------------------------------------------- failover
FAILOVER_STEPS = ["check", "secrets", "prepare", "database", "cache", "media", "deploy", "cutover", "verify"]


class Failover:
    """``lifeboat failover --to TARGET``: a backup restored and verified on TARGET, the services deployed,
    DNS switched. Reads nothing from the source."""

    def __init__(self, engine: Engine, to: str, *, at: str | None = None, backup_id: str | None = None,
                 before: float | None = None, cutover: bool = True, parallel: int = 8, wal: bool = True):
        self.engine, self.stack, self.events = engine, engine.stack, engine.events
        self.wal = wal  # replay the archived WAL where the backup has a base backup
        self.replay_refused = False  # the base backup or the archived WAL failed verification
        self.to_name = to
        self.target = engine.runner(to)
        self.at = at
        self.backup_id, self.before, self.cutover = backup_id, before, cutover
        self.parallel = max(1, parallel)
        self.state = self.stack.root / ".lifeboat" / f"failover-{to}"

    def choose(self, repo: Repository) -> str:
        ids = repo.complete_ids()
        if self.backup_id is not None:
            if self.backup_id not in ids:
                raise BadInput(f"failover: no complete backup {self.backup_id} in {repo.where}.",
                               hint="`lifeboat backups list` shows them.", code="backup.unknown")
            return self.backup_id
        if self.before is not None:
            ids = [i for i in ids if repo.manifest(i)["taken_at"] <= self.before]
        if not ids:
            raise BadInput(f"failover: no complete backup of stack {self.stack.name} in {repo.where}"
                           + (f" taken at or before {_epoch_text(self.before)}" if self.before else "") + ".",
                           code="backup.none")
        return ids[-1]

    def run(self, *, resume: bool = False) -> dict:
        began_epoch = time.time()
        journal = Journal.current(self.state) if resume else None
        if resume and (journal is None or journal.complete):
            raise BadInput(f"failover: nothing to resume on {self.to_name}.", hint="start it without --resume.",
                           code="failover.nothing_to_resume")
        self.engine.preflight(self.to_name)
        repo = Repository.open(_repository_target(self.engine, self.at), self.stack)
        self.repo = repo
        ident = journal.meta["backup"] if journal is not None else self.choose(repo)
        self.id = ident
        self.manifest = repo.manifest(ident)
        with self.target.lock(f"{operator()} (failover from backup {ident})"):
            if journal is None:
                journal = Journal.start(self.state, {"to": self.to_name, "backup": ident, "began": began_epoch},
                                        run="failover")
            self.journal = journal
            try:
                steps = run_steps(self, journal, FAILOVER_STEPS, "failover")
            except VerificationFailed as exc:
                raise VerificationFailed(f"failover: backup {ident} failed verification: {exc.message} "
                                         f"{self._left(journal)}",
                                         hint="restore "
                                              + ("its dump alone (--no-wal) or " if self.replay_refused else "")
                                              + f"an older one: lifeboat failover --to {self.to_name} --backup ID "
                                              "(`lifeboat backups list`).",
                                         code=exc.code) from None
            first = journal.meta.get("began", began_epoch)
            finished = time.time()
            taken = (journal.finished("database") or {}).get("recovery_point") or self.manifest["taken_at"]
            journal.record("failover", "done", rto_seconds=round(finished - first, 3),
                           rpo_seconds=round(first - taken, 3))
        return {"backup": ident, "to": self.to_name, "from_repository": repo.where,
                "recovery_point": _epoch_text(taken), "rpo_seconds": round(first - taken, 3),
                "rto_seconds": round(finished - first, 3), "steps": steps}

    def _left(self, journal: Journal) -> str:
        """What a failover refused part-way left on the target, in words."""
        restored = [what for step, what in (("secrets", "its secrets"), ("database", "its database"),
                                            ("cache", "its cache"))
                    if journal.finished(step) and "skipped" not in journal.finished(step)]
        if not restored and journal.last("media", "begin") is None:
            return f"Nothing on {self.to_name} was changed; DNS still points where it did."
        media = ""
        if journal.last("media", "begin") is not None and not journal.finished("media"):
            written = getattr(self, "_media_tally", {}).get("written", 0)
            media = f"; {written} of {self.manifest['media']['objects']} media objects were written before it stopped"
        return (f"Left on {self.to_name}: {', '.join(restored) or 'nothing restored'} from this backup{media}; its "
                "services were not deployed and DNS still points where it did.")

    def _step_check(self) -> dict:
        """Before anything on the target changes: every sealed part the backup holds authenticated and
        compared with its manifest (the dump too where the WAL replay will not read it: a backup is trusted
        whole, as `backups verify` says), and, for a point-in-time recovery, every archived WAL file its
        replay reads (gaps, alterations, another cluster's segments). The media objects are checked as they
        are restored: reading them twice would double the restore."""
        from concurrent.futures import ThreadPoolExecutor

        from toolkit.workflows import walarchive

        parts = _parts(self.manifest)
        with ThreadPoolExecutor(4) as pool:
            found = list(pool.map(lambda part: _check_part(self.repo, part[0], part[1]["plain_bytes"],
                                                           part[1]["plain_sha256"]), parts))
        problems = [p for p in found if p]
        out = {"parts": len(parts), "bytes": sum(entry["plain_bytes"] for _, entry in parts)}
        base = self.manifest.get("base")
        if base and self.wal and self.manifest.get("database"):
            files, wal_problems = walarchive.check(self.repo, base["start_segment"],
                                                   base.get("cluster", walarchive.LEGACY))
            if wal_problems or any("base.tar" in p for p in problems):
                self.replay_refused = not any("base.tar" not in p for p in problems)
            problems += wal_problems
            out["wal_files"] = files
        if problems:
            code = "backup.wal_gap" if all("gap" in p for p in problems) else "backup.tampered"
            raise VerificationFailed("; ".join(problems) + ".", code=code)
        out["verified"] = "every part authenticated and equal to the manifest" + (
            "; the archived WAL complete and of the base backup's cluster" if "wal_files" in out else "")
        return out

    def _step_secrets(self) -> dict:
        import base64

        part = self.repo.part(self.id, "secrets.json")
        values = json.loads(self.repo.read_bytes(part))
        if not values:
            return {"secrets": []}
        store = self.target.secrets()
        for name in sorted(values):
            value = SecretValue(base64.b64decode(values[name]))
            if store.read(name) != value:
                store.write(name, value)
            if store.read(name) != value:
                raise ProviderError(f"failover: secret {name} reads back differently on {self.target.label}.")
        names = sorted(values)
        values.clear()
        return {"secrets": names}

    def _step_prepare(self) -> dict:
        from toolkit.workflows.migrate import DATA_KINDS

        applied = self.engine.up(self.to_name, kinds=DATA_KINDS, locked=True, records=False)
        return {"applied": [a["resource"] for a in applied.applied]}

    def _step_database(self) -> dict:
        db = self.manifest.get("database")
        if not db:
            return {"skipped": "the backup holds no database"}
        if self.manifest.get("base") and self.wal:
            return self._replay(db, self.manifest["base"])
        target = self.target.database()
        name = self.repo.part(self.id, "database.dump")
        with self.repo.reading(name) as opening:
            tampered: list[Tampered] = []
            try:
                target.restore(_Guarded(_Progress(opening, self.events, "database"), tampered), clean=True)
            except Exception:
                if tampered:
                    raise VerificationFailed(f"{self.repo.where}: {tampered[0]}.", code="backup.tampered") from None
                raise
            opening.drain()
        if opening.plain_sha256.hexdigest() != db["part"]["plain_sha256"]:
            raise VerificationFailed(f"{name} does not hold what the manifest records.", code="backup.tampered")
        out = {"bytes": opening.plain_bytes}
        if db.get("exact"):
            found = target.table_digests(method_of(db["digests"]))
            after = {t: [d.rows, d.digest] for t, d in sorted(found.items())}
            differ = sorted(t for t in set(after) | set(db["digests"]) if after.get(t) != db["digests"].get(t))
            if differ:
                raise VerificationFailed(f"tables differ from the backup after the restore: {', '.join(differ)}.")
            out["verified"] = "row counts and per-table digests equal to the backup's"
        else:
            out["verified"] = "the dump's SHA-256 (the source could not export a snapshot for exact digests)"
        out["tables"] = sum(1 for t in db["digests"] if not t.startswith("sequence:"))
        out["rows"] = sum(r for r, _ in db["digests"].values())
        return out

    def _replay(self, db: dict, base: dict) -> dict:
        """Point-in-time recovery: the base backup and every archived WAL segment after it replayed in a
        scratch cluster on this machine (up to --before when given), then copied into the target and
        verified there table by table. The recovery point is the last transaction replayed."""
        from toolkit.stores.copier import copy_database
        from toolkit.workflows import walarchive

        pg = self.stack.postgres
        cluster = walarchive.ReplayCluster(walarchive.server_bindir(int(db["version"])),
                                           os_user=walarchive.replay_account(), database=pg.database, user=pg.user)
        try:
            try:  # what fails here is the base backup or the archive: the dump may still restore
                self.events.step(f"fetching the archived WAL from {base['start_segment']}")
                fetched = walarchive.fetch(self.repo, base["start_segment"], cluster.wal_dir, self.events,
                                           cluster=base.get("cluster", walarchive.LEGACY))
                self.events.step("replaying the WAL in a scratch PostgreSQL")
                name = self.repo.part(self.id, "base.tar")
                if cluster.swept:
                    self.events.warn(f"removed {len(cluster.swept)} scratch PostgreSQL folders a killed run left: "
                                     + ", ".join(cluster.swept))
                with self.repo.reading(name) as opening:
                    replayed = cluster.restore(_Progress(opening, self.events, "base backup"), until=self.before)
                    opening.drain()
                fault("replay:done", "failover")  # the crash tests stop here, the scratch cluster running
                if opening.plain_sha256.hexdigest() != base["part"]["plain_sha256"]:
                    raise VerificationFailed(f"{name} does not hold what the manifest records.", code="backup.tampered")
                reached = walarchive.lsn_position(replayed["lsn"])
                if self.before is None and fetched["newest"] and reached < walarchive.position(fetched["newest"]) - 1:
                    raise VerificationFailed(f"the replay stopped at {replayed['lsn']}, before the newest archived segment "
                                             f"{fetched['newest']}; the archive is damaged there.",
                                             code="backup.wal_damaged")
            except VerificationFailed:
                self.replay_refused = True
                raise
            copied = copy_database(cluster.database_service(), self.target.database(), events=self.events)
        finally:
            cluster.stop()
        point = replayed["replayed_until"]
        if point is None or point < base["taken_at"] - 1:  # nothing written after the base backup
            point = base["taken_at"]
        if self.before is not None:
            point = min(point, self.before)
        return {"replayed_wal_files": fetched["files"], "newest_segment": fetched["newest"], "lsn": replayed["lsn"],
                "recovery_point": round(point, 3), "tables": copied["tables"], "rows": copied["rows"],
                "verified": "base backup and archived WAL replayed (every segment unsealed and checked, no gap); "
                            + copied["verified"] + " (replayed copy and target)"}

    def _step_cache(self) -> dict:
        cache = self.manifest.get("cache")
        if not cache:
            return {"skipped": "the backup holds no cache"}
        import base64

        import redis

        client = redis.Redis.from_url(self.target.cache().connection_url().reveal_text(), socket_timeout=30)
        restored = 0
        with self.repo.reading(self.repo.part(self.id, "cache.jsonl")) as opening:
            pending = b""
            while True:
                data = opening.read(1 << 20)
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    key, ttl, dumped = json.loads(line)
                    client.restore(base64.b64decode(key), max(0, ttl), base64.b64decode(dumped), replace=True)
                    restored += 1
                if not data:
                    break
        if opening.plain_sha256.hexdigest() != cache["part"]["plain_sha256"] or restored != cache["keys"]:
            raise VerificationFailed(f"the cache part holds {restored} keys, the manifest records {cache['keys']}.",
                                     code="backup.tampered")
        return {"keys": restored}

    def _step_media(self) -> dict:
        from toolkit.stores.copier import releasing, run_parallel

        index = self.repo.media_index(self.id)
        dst = self.target.objects()
        dst.sweep_partial()  # what a killed earlier attempt left writing there
        buckets = sorted({e[0] for e in index})
        held = {}
        for bucket in buckets:
            try:
                held.update(((bucket, o.key), o) for o in dst.list(bucket))
            except ProviderError as exc:
                if exc.code != "objects.no_bucket":
                    raise
        total = sum(e[2] for e in index)
        tally = self._media_tally = {"done": 0, "written": 0}
        import threading

        guard = threading.Lock()

        def already(bucket: str, key: str, size: int, sha: str) -> bool:
            there = held.get((bucket, key))
            return there is not None and there.size == size and (there.sha256 or dst.checksum(bucket, key)) == sha

        def restore(bucket: str, key: str, size: int, sha: str) -> None:
            same = already(bucket, key, size, sha)
            if not same:
                tampered: list[Tampered] = []
                with self.repo.reading(self.repo.blob(sha)) as opening:
                    try:
                        info = dst.write(bucket, key, _Guarded(opening, tampered), size=size)
                    except Exception:
                        if tampered:
                            raise VerificationFailed(f"object {key!r} of {bucket}: {tampered[0]}.",
                                                     code="backup.tampered") from None
                        raise
                if info.size != size or info.sha256 != sha or opening.plain_sha256.hexdigest() != sha:
                    raise VerificationFailed(f"object {key!r} of {bucket} restored with size {info.size} and "
                                             f"SHA-256 {info.sha256}, the backup records {size} and {sha}.",
                                             code="backup.tampered")
            with guard:
                tally["done"] += size
                tally["written"] += 0 if same else 1
                self.events.progress("media", tally["done"], total, unit="bytes")

        def restore_batch(group: list) -> None:
            """Small objects of one bucket to a store that takes them in batches (an SSH host: one stream,
            not a connection per object); each checked as in restore()."""
            bucket = group[0][0]
            todo = [e for e in group if not already(*e)]
            openings: dict[str, object] = {}
            tampered: list[Tampered] = []

            @contextmanager
            def opened(key: str, sha: str):
                with self.repo.reading(self.repo.blob(sha)) as opening:
                    openings[key] = opening
                    yield _Guarded(opening, tampered)

            if todo:
                try:
                    infos = dst.write_batch(bucket, [(key, (lambda k=key, s=sha: opened(k, s)), size, None, sha)
                                                     for _, key, size, sha in todo])
                except Exception:
                    if tampered:
                        raise VerificationFailed(f"objects of {bucket}: {tampered[0]}.",
                                                 code="backup.tampered") from None
                    raise
                for (_, key, size, sha), info in zip(todo, infos, strict=True):
                    if info.size != size or info.sha256 != sha or openings[key].plain_sha256.hexdigest() != sha:
                        raise VerificationFailed(f"object {key!r} of {bucket} restored with size {info.size} and "
                                                 f"SHA-256 {info.sha256}, the backup records {size} and {sha}.",
                                                 code="backup.tampered")
            with guard:
                tally["done"] += sum(e[2] for e in group)
                tally["written"] += len(todo)
                self.events.progress("media", tally["done"], total, unit="bytes")

        workers = max(1, min(self.parallel, dst.PARALLEL, self.repo.store.PARALLEL))
        if hasattr(dst, "write_batch"):
            from toolkit.stores.copier import group_small

            singles, groups = group_small(index, buckets, bucket=lambda e: e[0], size=lambda e: e[2])
            tasks = [(restore, tuple(e)) for e in singles] + [(restore_batch, (group,)) for group in groups]
        else:
            tasks = [(restore, tuple(e)) for e in index]
        with releasing(dst):
            run_parallel(lambda func, args: func(*args), tasks, workers)
        return {"objects": len(index), "written": tally["written"], "already_there": len(index) - tally["written"],
                "bytes": total, "verified": "size and SHA-256 of every object"}

    def _step_deploy(self) -> dict:
        applied = self.engine.up(self.to_name, locked=True, records=False)  # DNS: the next step, if it answers
        return {"applied": [a["resource"] for a in applied.applied]}

    def _step_cutover(self) -> dict:
        dns = self.stack.dns
        if not self.cutover:
            return {"skipped": "--no-cutover"}
        if not dns or not dns.records:
            return {"skipped": "no dns records"}
        try:
            self.engine.preflight(dns.provider, fresh=True)
        except Exception as exc:  # noqa: BLE001 - DNS served by the host that is gone: say so, keep serving
            message = getattr(exc, "message", str(exc))
            self.events.warn(f"DNS is served by {dns.provider}, which does not answer ({message}); point "
                             f"{dns.zone} at {self.to_name} where it is served now.")
            return {"skipped": f"the DNS provider {dns.provider} does not answer"}
        service = self.engine.dns_provider().dns()
        plan = self.engine.plan(self.to_name, take_dns=True, warnings=[])
        switched, confirmed = [], set()
        from toolkit.contract import Record

        for change in plan.changes:
            if change.kind != "record" or change.action not in ("create", "update"):
                continue
            name, rtype = change.name.rsplit(" ", 1)
            record = Record(name, rtype, change.after.attrs["ttl"], tuple(change.after.attrs["values"]))
            service.upsert(dns.zone, record)
            confirmed.update(service.confirm(dns.zone, record))
            switched.append({"record": change.name, "values": list(record.values), "ttl": record.ttl})
        return {"records": switched, "confirmed_on": sorted(confirmed)}

    def _step_verify(self) -> dict:
        status = self.engine.status(self.to_name)
        if not status.get("healthy"):
            raise ProviderError(f"failover: {self.target.label} is not healthy after the restore: "
                                f"{'; '.join(status.get('problems') or [])}.", code="failover.unhealthy")
        return {"target_healthy": True}


# ---------------------------------------------------------------------------------------------- drill
class Drill:
    """``lifeboat drill --to TARGET``: a failover rehearsed into a scratch copy of TARGET (its own state,
    data services and ports; DNS left alone), the restored data compared with the live source when one is
    named, the scratch copy torn down, and a report (JSON and markdown) with the measured RTO and RPO."""

    def __init__(self, engine: Engine, to: str, *, at: str | None = None, backup_id: str | None = None,
                 against: str | None = None, report_dir=None, parallel: int = 8):
        self.engine, self.stack, self.events = engine, engine.stack, engine.events
        self.to_name, self.at, self.backup_id, self.against = to, at, backup_id, against
        self.base = engine.runner(to)
        self.parallel = parallel
        self.report_dir = report_dir or self.stack.root / ".lifeboat" / "drills"

    def run(self) -> dict:
        import dataclasses

        from toolkit.config.model import Target

        began = time.time()
        name = f"drill-{self.to_name}"
        try:
            settings = self.base.scratch_settings(name)
        except Unsupported as exc:
            raise BadInput(f"drill: {exc}.", hint="drill into a local, bare-metal, terraform or aws target, or run a failover "
                                                  "on a spare one.",
                           code="drill.unsupported") from None
        if self.against is not None:
            self.engine.runner(self.against)  # a typo fails before anything starts
        # A rehearsal never touches DNS, and asks no CA for certificates (the TLS proxy is not rehearsed).
        scratch = dataclasses.replace(self.stack, dns=None, tls=None,
                                      targets={**self.stack.targets, name: Target(name, self.base.TYPE, settings)})
        engine = Engine(scratch, self.events)
        failover = Failover(engine, name, at=self.at or (self.stack.backup.to if self.stack.backup else None),
                            backup_id=self.backup_id, cutover=False, parallel=self.parallel)
        report: dict = {"drill": _new_id(), "stack": self.stack.name, "target": self.to_name, "scratch": name,
                        "began": _epoch_text(began)}
        error = None
        try:
            result = failover.run()
            steps = {s["step"]: s for s in result["steps"]}
            report.update(backup=result["backup"], recovery_point=result["recovery_point"],
                          rpo_seconds=result["rpo_seconds"], rto_seconds=result["rto_seconds"],
                          journal=str(Journal.current(failover.state).path),
                          steps=[{"step": s["step"], "seconds": s.get("seconds", 0)} for s in result["steps"]],
                          checked={"database": steps["database"].get("verified"),
                                   "media": f"{steps['media']['objects']} objects: "
                                            f"{steps['media'].get('verified', '-')}",
                                   "secrets": f"{len(steps['secrets'].get('secrets', []))} restored and read back",
                                   "services": "deployed and healthy on the scratch copy"})
            if self.against is not None:
                report["against_source"] = self._against(engine.provider(name), failover)
        except Exception as exc:
            error = exc
            report["error"] = getattr(exc, "message", str(exc))
        finally:
            try:
                engine.destroy(name)  # everything of the scratch copy, its state folder included
                report["torn_down"] = True
            except Exception as exc:  # noqa: BLE001 - reported; the drill's own result matters more
                report["torn_down"] = False
                report["teardown_error"] = getattr(exc, "message", str(exc))
            report["seconds"] = round(time.time() - began, 3)
            report["ok"] = error is None and report["torn_down"]
            report["report"] = self._write(report)
        if error is not None:
            raise error
        return report

    def _against(self, restored: Provider, failover: Failover) -> dict:
        """The restored copy next to the live source now: what the source has written since the backup."""
        out: dict = {"source": self.against}
        try:
            self.engine.preflight(self.against, fresh=True)
            live = self.engine.provider(self.against)
            if self.stack.postgres:
                now = live.database().table_digests()
                there = restored.database().table_digests(method_of(now))
                same = sorted(t for t in there if now.get(t) == there[t])
                changed = {t: {"rows_backup": there[t].rows, "rows_source": now[t].rows if t in now else None}
                           for t in sorted(set(there) | set(now)) if now.get(t) != there.get(t)}
                out["database"] = {"tables_identical": len(same), "changed_since_backup": changed}
            index = failover.repo.media_index(failover.id)
            backed = {(b, k): (size, sha) for b, k, size, sha in index}
            src = live.objects()
            live_objects = {(b, o.key): o for b in sorted(self.stack.buckets) for o in src.list(b)}

            def changed(bucket: str, key: str, obj) -> bool:
                size, sha = backed[(bucket, key)]
                if obj.size != size:
                    return True
                there = obj.sha256 or (src.head(bucket, key) or obj).sha256  # what the store records; not read
                return there is not None and there != sha

            differ = [f"{b}/{k}" for (b, k), o in live_objects.items() if (b, k) in backed and changed(b, k, o)]
            out["media"] = {"in_both": len(set(live_objects) & set(backed)),
                            "written_since_backup": len(set(live_objects) - set(backed)),
                            "gone_from_source": len(set(backed) - set(live_objects)), "differ": differ[:20]}
        except Exception as exc:  # noqa: BLE001 - a source that does not answer is what a drill may meet
            out["unreachable"] = getattr(exc, "message", str(exc))
        return out

    def _write(self, report: dict) -> dict:
        from toolkit.paths import write_private

        folder = self.report_dir
        private_dir(folder)
        base = folder / f"drill-{self.to_name}-{report['drill']}"
        paths = {"json": str(base.with_suffix(".json")), "markdown": str(base.with_suffix(".md"))}
        write_private(base.with_suffix(".json"), json.dumps({**report, "report": paths}, indent=2).encode())
        write_private(base.with_suffix(".md"), _markdown(report).encode())
        return paths


def _markdown(report: dict) -> str:
    lines = [f"# Failover drill: stack {report['stack']} on {report['target']}", "",
             f"- began: {report['began']}, took {report.get('seconds', 0):.1f} s; scratch copy "
             f"`{report['scratch']}` {'torn down' if report.get('torn_down') else 'NOT torn down'}",
             f"- result: **{'passed' if report.get('ok') else 'FAILED'}**"]
    if "error" in report:
        lines.append(f"- error: {report['error']}")
    if "backup" in report:
        lines += [f"- backup restored: {report['backup']} (recovery point {report['recovery_point']})",
                  f"- **RPO {report['rpo_seconds']:.0f} s** (age of the restored data when the drill began)",
                  f"- **RTO {report['rto_seconds']:.1f} s** (restore, verify and deploy; DNS not switched in a drill)",
                  f"- journal: `{report['journal']}`", "", "| step | seconds |", "|---|---|"]
        lines += [f"| {s['step']} | {s['seconds']:.3f} |" for s in report["steps"]]
        lines += ["", "## What was checked", ""]
        lines += [f"- {k}: {v}" for k, v in report["checked"].items()]
    against = report.get("against_source")
    if against:
        lines += ["", f"## Against the live source ({against['source']})", ""]
        if "unreachable" in against:
            lines.append(f"- not reachable: {against['unreachable']}")
        if "database" in against:
            db = against["database"]
            lines.append(f"- database: {db['tables_identical']} tables identical to the backup; changed since: "
                         + (", ".join(f"{t} ({v['rows_backup']} -> {v['rows_source']} rows)"
                                      for t, v in db["changed_since_backup"].items()) or "none"))
        if "media" in against:
            m = against["media"]
            lines.append(f"- media: {m['in_both']} objects in both, {m['written_since_backup']} written since, "
                         f"{m['gone_from_source']} gone from the source, {len(m['differ'])} differ")
    return "\n".join(lines) + "\n"


class _CacheDump(Produced):
    """Every Redis key as a line of JSON (key, milliseconds to live or 0, DUMP payload; base64), read as a
    stream while the keys are scanned: nothing whole in memory."""

    def __init__(self, client):
        super().__init__()
        self.client = client
        self.keys = 0
        self._scan = client.scan_iter(count=1000)

    def _fill(self) -> None:
        import base64

        key = next(self._scan, None)
        if key is None:
            self._ended = True
            return
        dumped = self.client.dump(key)
        if dumped is None:
            return  # expired meanwhile
        ttl = self.client.pttl(key)
        self._out += json.dumps([base64.b64encode(key).decode(), ttl if ttl and ttl > 0 else 0,
                                 base64.b64encode(dumped).decode()]).encode() + b"\n"
        self.keys += 1


class _Progress:
    def __init__(self, stream, events, what: str):
        self.stream, self.events, self.what, self.count = stream, events, what, 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.count += len(data)
        self.events.progress(self.what, self.count, None, unit="bytes")
        if data:
            fault(f"{self.what}:mid", "backup")  # the crash tests stop here, with the dump begun
        return data


class _Guarded:
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
