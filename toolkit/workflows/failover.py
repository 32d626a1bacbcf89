"""``lifeboat failover``: the stack brought up on a target from its newest (or a named) backup, needing
nothing from the source: every sealed part checked first, then restored, verified on the target, deployed,
DNS switched; the recovery point (RPO) and time (RTO) reported."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager

from toolkit.contract import SecretValue
from toolkit.errors import BadInput, ProviderError, VerificationFailed
from toolkit.run.engine import Engine, operator
from toolkit.run.faults import fault
from toolkit.run.journal import Journal
from toolkit.run.steps import run_steps
from toolkit.stores.digests import differing, method_of
from toolkit.stores.sealed import (
    Tampered,
)
from toolkit.workflows.backup import Guarded, Progress
from toolkit.workflows.repository import Repository, check_part, epoch_text, manifest_parts, repository_target

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
        self.target = engine.runner(to, change=True)
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
                           + (f" taken at or before {epoch_text(self.before)}" if self.before else "") + ".",
                           code="backup.none")
        return ids[-1]

    def run(self, *, resume: bool = False) -> dict:
        began_epoch = time.time()
        journal = Journal.current(self.state) if resume else None
        if resume and (journal is None or journal.complete):
            raise BadInput(f"failover: nothing to resume on {self.to_name}.", hint="start it without --resume.",
                           code="failover.nothing_to_resume")
        self.engine.preflight(self.to_name)
        repo = Repository.open(repository_target(self.engine, self.at), self.stack)
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
                "recovery_point": epoch_text(taken), "rpo_seconds": round(first - taken, 3),
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

        parts = manifest_parts(self.manifest)
        with ThreadPoolExecutor(4) as pool:
            found = list(pool.map(lambda part: check_part(self.repo, part[0], part[1]["plain_bytes"],
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
                target.restore(Guarded(Progress(opening, self.events, "database"), tampered), clean=True)
            except Exception:
                if tampered:
                    raise VerificationFailed(f"{self.repo.where}: {tampered[0]}.", code="backup.tampered") from None
                raise
            opening.drain()
        if opening.plain_sha256.hexdigest() != db["part"]["plain_sha256"]:
            raise VerificationFailed(f"{name} does not hold what the manifest records.", code="backup.tampered")
        out = {"bytes": opening.plain_bytes}
        if db.get("exact"):
            differ = differing(db["digests"], target.table_digests(method_of(db["digests"])))
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
        from toolkit.workflows import replay, walarchive

        pg = self.stack.postgres
        cluster = replay.ReplayCluster(replay.server_bindir(int(db["version"])),
                                       os_user=replay.replay_account(), database=pg.database, user=pg.user)
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
                    replayed = cluster.restore(Progress(opening, self.events, "base backup"), until=self.before)
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

        from toolkit.workflows import rediskeys

        url = self.target.cache().connection_url().reveal_text()
        clients: dict[int, object] = {}
        restored = 0
        with self.repo.reading(self.repo.part(self.id, "cache.jsonl")) as opening:
            pending = b""
            while True:
                data = opening.read(1 << 20)
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    key, ttl, dumped, *db = json.loads(line)  # (the database: not 0, or a backup before it was kept)
                    db = db[0] if db else 0
                    if db not in clients:
                        clients[db] = rediskeys.client(url, db)
                    clients[db].restore(base64.b64decode(key), max(0, ttl), base64.b64decode(dumped), replace=True)
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
                        info = dst.write(bucket, key, Guarded(opening, tampered), size=size)
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
                    yield Guarded(opening, tampered)

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
