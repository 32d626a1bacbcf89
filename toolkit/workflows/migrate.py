"""``lifeboat migrate``: the whole stack from one provider to another, verified and resumable.

Steps (each journalled before and after it runs; ``--resume`` skips the ones that finished):

1. preflight: both providers (and the DNS provider) reachable, credentials valid, PostgreSQL major versions
   equal; both locks held for the whole run (exit 3 if either is held);
2. lower_ttl: the records that will switch are lowered to ``dns: cutover_ttl`` (default 60 s) and the change
   confirmed on the authoritative servers; resolvers may keep the old answer for the old TTL, so the freeze
   (step 9) waits until that long after the lowering (the data copy runs meanwhile);
3. secrets: copied through the two secret stores (never printed, never journalled), read back and compared;
4. prepare: the target's data services and infrastructure (``up`` limited to those kinds; no apps yet);
5. database: ``pg_dump`` streamed into ``pg_restore`` (no temporary file, nothing whole in memory), then row
   counts and per-table digests computed on both sides must match (exit 4 otherwise);
6. cache: Redis keys of every database in use carried with DUMP/RESTORE and their TTLs (skipped when the stack
   marks it disposable);
7. media: objects streamed, skipping those already identical on the target (size and SHA-256), each copy
   verified; an interrupted copy resumes without re-sending what arrived;
8. deploy: the services on the target, health-checked (DNS still points at the source);
9. freeze: once the old TTL has run out, the source's services are paused (no more writes); skipped with
   ``--no-cutover``;
10. final_sync: with the target's services paused too, the database, cache and media are copied again
    (objects already identical are skipped) and verified, objects and cache keys the source no longer holds
    are removed from the target (after complete listings of both sides, never after an error; counted and
    journalled), both sides are compared in both directions (exit 4 on anything extra or missing), then the
    target's services start again;
11. cutover: DNS records switched to the target with the low TTL (so a rollback takes effect as fast) and
    confirmed on every authoritative server the DNS provider knows (skipped with ``--no-cutover``); the next
    ``lifeboat up`` on the target restores the stack's TTL;
12. verify and report: what moved, how much, how long each step took, what was verified.

A failure after the freeze and before the cutover lifts the freeze (the source serves as before). After
a crash (no chance to lift it) ``--resume`` continues; a new run without ``--resume`` first lifts the freeze
the interrupted one left (and says so), then starts over with the source serving.

``lifeboat rollback`` undoes the last completed migration's switch: the source's services start again, DNS
points back at the source, and the target's services are paused (its data is kept).
"""

from __future__ import annotations

import errno
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

from toolkit.contract import Provider, Record, Unsupported
from toolkit.errors import BadInput, LockHeld, ProviderError, ToolkitError, VerificationFailed
from toolkit.run.engine import Engine, operator
from toolkit.run.events import human_bytes
from toolkit.run.faults import fault
from toolkit.run.journal import Journal
from toolkit.run.steps import run_steps
from toolkit.stores.digests import method_of

STEPS = ["preflight", "lower_ttl", "secrets", "prepare", "database", "cache", "media", "deploy", "freeze", "final_sync", "cutover",
         "verify"]
DATA_KINDS = {"secret", "infra", "database", "cache", "bucket"}


@dataclass
class MigrationReport:
    id: str
    source: str
    target: str
    steps: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"id": self.id, "from": self.source, "to": self.target, "seconds": round(self.seconds, 3),
                "steps": self.steps}


VERIFY_GRACE = 30.0  # seconds the target may take to show every service healthy after the move

class Migration:
    def __init__(self, engine: Engine, source: str, target: str, *, cutover: bool = True, parallel: int = 8,
                 db_jobs: int | str = "auto"):
        if source == target:
            raise BadInput("migrate: --from and --to name the same target.", code="migrate.same_target")
        self.engine = engine
        self.stack = engine.stack
        self.source_name, self.target_name = source, target
        self.source: Provider = engine.runner(source)
        self.target: Provider = engine.runner(target, change=True)
        self.cutover = cutover
        self.parallel = max(1, parallel)
        self.db_jobs = db_jobs
        self.journal: Journal | None = None
        self.events = engine.events
        self.state = self.stack.root / ".lifeboat" / f"migrate-{source}-{target}"

    # ------------------------------------------------------------------ dry run
    def plan(self) -> dict:
        """What a run would do, with data volumes and rough durations. Reads only."""
        self._preflight()
        out: dict = {"from": self.source_name, "to": self.target_name, "steps": list(STEPS)}
        if not self.cutover:
            out["steps"].remove("cutover")
            out["steps"].remove("lower_ttl")
        if self.stack.postgres:
            info = self.source.database().info()
            out["database"] = {"version": info.version, "size_bytes": info.size_bytes,
                               "tables": len(self.source.database().table_digests())}
        space = self.space()  # lists the source's objects once, for the media totals too
        objects, total = space["source_objects"], space["source_bytes"]
        out["media"] = {"objects": objects, "bytes": total}
        out["secrets"] = sorted(n for n in self.stack.secrets if n != self.stack.backup_key)
        out["space"] = {"rooms": space["rooms"], "enough": not space["short"], "short": space["short"]}
        target_plan = self.engine.plan(self.target_name, warnings=[])
        out["target_plan"] = target_plan.summary()
        # Rough: 50 MB/s for dumps and object streams, plus a fixed cost per object.
        db_bytes = out.get("database", {}).get("size_bytes", 0)
        out["estimated_seconds"] = {"database": round(db_bytes / 50e6 * 2, 1),
                                    "media": round(total / 50e6 + objects * 0.01, 1)}
        if self.cutover:
            out["dns"] = self._dns_plan(out["estimated_seconds"])
        resumable = Journal.current(self.state)
        out["resumable"] = resumable.id if resumable and not resumable.complete else None
        return out

    # ------------------------------------------------------------------ run
    def run(self, *, resume: bool = False) -> MigrationReport:
        began = time.monotonic()
        journal = Journal.current(self.state) if resume else None
        if resume and (journal is None or journal.complete):
            raise BadInput(f"migrate: nothing to resume from {self.source_name} to {self.target_name}.",
                           hint="start it without --resume.", code="migrate.nothing_to_resume")
        with ExitStack() as locks:
            self._preflight()
            owner = operator()
            locks.enter_context(self.source.lock(f"{owner} (migrate to {self.target_name})"))
            locks.enter_context(self.target.lock(f"{owner} (migrate from {self.source_name})"))
            if journal is None:  # only once both locks are held: a refused run leaves no journal
                interrupted = Journal.current(self.state)
                self._lift_left_freeze(interrupted)
                journal = Journal.start(self.state, {"from": self.source_name, "to": self.target_name,
                                                     "cutover": self.cutover})
            self.journal = journal
            report = MigrationReport(journal.id, self.source_name, self.target_name)
            skip = () if self.cutover else ("lower_ttl", "cutover")
            report.steps = run_steps(self, journal, STEPS, "migrate", skip=skip, cleanup=self._after_failure,
                                     explain=self._explain)
            journal.record("migration", "done")
        report.seconds = time.monotonic() - began
        return report

    def _lift_left_freeze(self, interrupted: Journal | None) -> None:
        """A new run (not --resume) after one that was killed with the source frozen: the source serves again
        before anything else (the new run copies while it does, and freezes it again for the final pass); a
        run killed inside the freeze step may have paused some services, so all of them are resumed."""
        if interrupted is None or interrupted.complete or interrupted.finished("cutover"):
            return
        done = interrupted.finished("freeze")
        last = next((e for e in reversed(interrupted.events) if e.get("step") == "freeze"), None)
        if done is not None:
            services = done.get("paused") or []
        elif last is not None and last.get("event") in ("begin", "failed"):
            services = sorted(self.stack.services)
        else:
            return
        if not services:
            return
        self.events.warn(f"the interrupted migration {interrupted.id} left {self.source_name} frozen; its services "
                         "start again and this run starts over (--resume would have continued it).")
        self._thaw(services)
        interrupted.record("freeze", "undone", reason="lifted by a new run that did not resume")

    def _after_failure(self, step: str, exc: BaseException) -> None:
        """A step failed (or was interrupted): a write freeze not yet followed by the cutover is lifted, so
        that the source serves again."""
        frozen = self.journal.finished("freeze")
        if frozen and frozen.get("paused") and not self.journal.finished("cutover"):
            self._thaw(frozen["paused"])
            self.journal.record("freeze", "undone", reason="lifted after a failure before the cutover")
        elif step == "freeze" and frozen is None:  # it failed part-way: some services may be paused already
            self._thaw(sorted(self.stack.services))
            self.journal.record("freeze", "undone", reason="lifted after the freeze itself failed")

    def _preflight(self) -> None:
        self.engine.preflight(self.source_name)
        self.engine.preflight(self.target_name)
        dns = self.stack.dns
        if self.cutover and dns and dns.records and dns.provider not in (self.source_name, self.target_name):
            self.engine.preflight(dns.provider)

    def _switching(self, service) -> list[tuple]:
        """The stack's records that follow a service role (they move in the cutover), each with what the
        zone serves for it now (None when it does not exist yet)."""
        dns = self.stack.dns
        switching = [r for r in (dns.records if dns else ()) if r.target]
        if not switching:
            return []
        existing = {(r.name, r.type): r for r in service.records(dns.zone)}
        return [(r, existing.get((r.name, r.type))) for r in switching]

    def _dns_plan(self, estimates: dict) -> dict:
        dns = self.stack.dns
        switching = self._switching(self.engine.dns_provider().dns()) if dns else []
        if not switching:
            return {"records": []}
        records, wait = [], 0
        for rec, now in switching:
            ttl = now.ttl if now else None
            records.append({"record": f"{rec.name} {rec.type}", "ttl_now": ttl,
                            "lowered_to": dns.cutover_ttl if ttl and ttl > dns.cutover_ttl else None})
            if ttl and ttl > dns.cutover_ttl:
                wait = max(wait, ttl)
        copying = sum(estimates.values())
        return {"zone": dns.zone, "provider": dns.provider, "records": records, "cutover_ttl": dns.cutover_ttl,
                "freeze_waits_seconds": round(max(0.0, wait - copying), 1),
                "why": (f"resolvers may cache the current answer for up to {wait} s after the TTL is lowered; the "
                        "freeze starts only once that has passed (the data copy runs meanwhile), so clients reach "
                        "the target within the low TTL of the switch") if wait else
                       "the records' TTL is already at or below the cutover TTL: no wait"}

    def _explain(self, step: str, exc: Exception) -> ToolkitError | None:
        """After a failure: if a provider stopped answering (a host died mid-copy), say which, as the
        reason; an I/O error with both still reachable is reported as what it is. None: raise as it was."""
        if isinstance(exc, BadInput | LockHeld):
            return None
        resume = f"lifeboat migrate --from {self.source_name} --to {self.target_name} --resume"
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return ProviderError(f"migrate: step {step} stopped: {self.target.label} ran out of space"
                                 f"{f' writing {exc.filename}' if exc.filename else ''}. The source keeps serving as "
                                 "before.", hint=f"free space or grow the disk there, then: {resume}",
                                 code="migrate.no_space")
        hint = f"what was copied and verified is kept; once it answers again: {resume}"
        for name in (self.source_name, self.target_name):
            try:
                self.engine.preflight(name, fresh=True)
            except ToolkitError as down:
                return ProviderError(f"migrate: step {step} stopped: {down.message}", hint=hint,
                                     code="migrate.interrupted")
            except Exception as down:  # noqa: BLE001 - any failure to reach it is the answer
                return ProviderError(f"migrate: step {step} stopped: {name} does not answer ({down}).", hint=hint,
                                     code="migrate.interrupted")
        if isinstance(exc, ToolkitError):
            return None
        if isinstance(exc, OSError | EOFError) or type(exc).__module__.startswith("paramiko"):
            return ProviderError(f"migrate: step {step} stopped: {type(exc).__name__}: {exc}.", hint=hint,
                                 code="migrate.interrupted")
        return None

    # ------------------------------------------------------------------ steps
    def space(self) -> dict:
        """What the copy needs on the target against what its filesystems have free. The database needs
        its size plus a quarter (WAL and index builds while restoring) minus what the target's copy already
        takes; media need the bytes not already there under the same key and size."""
        need: dict[str, int] = {}
        if self.stack.postgres:
            size = self.source.database().info().size_bytes
            running = {r.id: r for r in self.target.observe()}.get(f"database/{self.stack.postgres.database}")
            if running is not None and running.attrs.get("running"):  # asked only then: reading changes nothing
                size -= self.target.database().info().size_bytes  # replaced by the restore
            need["database"] = max(0, int(size * 1.25)) + (64 << 20)
        objects = total = missing = 0
        for bucket in self.stack.buckets:
            try:
                there = {o.key: o.size for o in self.target.objects().list(bucket)}
            except Exception:  # noqa: BLE001 - the bucket does not exist yet
                there = {}
            for obj in self.source.objects().list(bucket):
                objects += 1
                total += obj.size
                missing += obj.size if there.get(obj.key) != obj.size else 0
        if self.stack.buckets:
            need["objects"] = missing + (16 << 20)
        rooms, short = [], []
        for room in self.target.free_space():
            wanted = sum(need.get(k, 0) for k in room["kinds"])
            rooms.append({**room, "needed": wanted})
            if wanted > room["free"]:
                short.append(f"{room['where']} has {human_bytes(room['free'])} free, the copy needs about "
                             f"{human_bytes(wanted)} ({' + '.join(f'{k} {human_bytes(need[k])}' for k in room['kinds'] if k in need)})")
        return {"needed": need, "rooms": rooms, "short": short, "source_objects": objects, "source_bytes": total}

    def _step_preflight(self) -> dict:
        out: dict = {}
        space = self.space()
        if space["short"]:
            raise ProviderError(f"migrate: not enough space on {self.target.label}: {'; '.join(space['short'])}. "
                                "Nothing was copied.", hint="free space or grow the disk there, then run it again.",
                                code="migrate.no_space")
        out["space"] = [{"where": r["where"], "free": r["free"], "needed": r["needed"]} for r in space["rooms"]]
        if self.stack.postgres:
            version = self.source.database().info().version
            if version != self.stack.postgres.version:
                raise ProviderError(f"migrate: the source runs PostgreSQL {version}, the stack says "
                                    f"{self.stack.postgres.version}; a migration does not change major versions.",
                                    code="migrate.pg_version")
            out["postgres"] = version
        return out

    def _step_lower_ttl(self) -> dict:
        dns = self.stack.dns
        service = self.engine.dns_provider().dns() if dns else None
        switching = self._switching(service) if dns else []
        if not switching:
            return {"skipped": "no dns records follow the services"}
        low = dns.cutover_ttl
        ttls = {f"{r.name} {r.type}": now.ttl for r, now in switching if now is not None}
        # Resolvers may cache what was served before the first attempt lowered anything: a resumed run keeps
        # the TTLs and the time the first attempt saw (journalled before any change).
        first = self.journal.last("lower_ttl", "seen")
        if first is None:
            first = self.journal.record("lower_ttl", "seen", ttls=ttls, at_epoch=time.time())
        old = max([t for t in (*ttls.values(), *first["ttls"].values()) if t > low], default=0)
        lowered, confirmed = {}, set()
        for rec, now in switching:
            if now is None or now.ttl <= low:
                continue
            record = Record(now.name, now.type, low, tuple(now.values))
            service.upsert(dns.zone, record)
            confirmed.update(service.confirm(dns.zone, record))
            lowered[f"{rec.name} {rec.type}"] = now.ttl
        for name, ttl in first["ttls"].items():  # lowered by the attempt that crashed
            if ttl > low:
                lowered.setdefault(name, ttl)
        return {"lowered": lowered, "to": low, "confirmed_on": sorted(confirmed),
                "wait_until_epoch": round(first["at_epoch"] + old, 3) if old else 0}

    def _step_secrets(self) -> dict:
        names = sorted(n for n in self.stack.secrets if n != self.stack.backup_key)
        if not names:
            return {"secrets": []}
        src, dst = self.source.secrets(), self.target.secrets()
        copied = []
        for name in names:
            value = src.read(name)
            if value is None:
                raise ProviderError(f"migrate: secret {name} is missing on {self.source.label}.",
                                    code="migrate.secret_missing")
            if dst.read(name) != value:
                dst.write(name, value)
            if dst.read(name) != value:
                raise VerificationFailed(f"migrate: secret {name} reads back differently on {self.target.label}.")
            copied.append(name)
        return {"secrets": copied}

    def _step_prepare(self) -> dict:
        applied = self.engine.up(self.target_name, kinds=DATA_KINDS, locked=True)
        return {"applied": [a["resource"] for a in applied.applied]}

    def _step_database(self, *, frozen: bool = False) -> dict:
        if not self.stack.postgres:
            return {"skipped": "no postgres"}
        from toolkit.stores.copier import copy_database

        try:
            return copy_database(self.source.database(), self.target.database(), events=self.events,
                                 frozen=frozen, fault=_migrate_fault, jobs=self.db_jobs)
        except VerificationFailed as exc:
            raise VerificationFailed(f"migrate: {exc.message}", hint=exc.hint) from None

    def _step_cache(self, *, frozen: bool = False) -> dict:
        """Every key of every database in use, with its TTL (DUMP/RESTORE). ``frozen`` (the pass after the
        freeze): afterwards the target holds exactly the source's keys: those the source no longer has are
        removed (after a complete scan of both), then both are compared again (exit 4 on a difference).
        Before the freeze such extras are only counted."""
        redis_spec = self.stack.redis
        if redis_spec is None:
            return {"skipped": "no redis"}
        if getattr(redis_spec, "disposable", False):
            return {"skipped": "the stack marks the cache as disposable"}
        from toolkit.workflows import rediskeys

        src_url = self.source.cache().connection_url().reveal_text()
        dst_url = self.target.cache().connection_url().reveal_text()
        used = rediskeys.databases(src_url)
        per_db: dict[int, int] = {}
        out: dict = {"keys": 0, "already_there": 0}
        extra_total = removed = 0
        for db in sorted(set(used) | set(rediskeys.databases(dst_url) if frozen else [])):
            copied, same, extra = self._copy_db(rediskeys.client(src_url, db), rediskeys.client(dst_url, db), db,
                                                frozen)
            per_db[db] = copied
            out["keys"] += copied
            out["already_there"] += same
            extra_total += extra
            removed += extra if frozen else 0
        out["databases"] = rediskeys.shown(per_db)
        if not frozen:
            if extra_total:
                out["extra_on_target"] = extra_total  # removed by the pass after the freeze
            return out
        out.update(removed_from_target=removed, verified="the target holds exactly the source's keys, in every "
                                                         "database")
        return out

    def _copy_db(self, src, dst, db: int, frozen: bool) -> tuple[int, int, int]:
        """One database's keys onto the target's database of the same number: (keys copied, already there,
        keys on the target the source lacks: removed when ``frozen``)."""
        copied: set[bytes] = set()
        same = 0
        for key in src.scan_iter(count=1000):
            dumped = src.dump(key)
            if dumped is None:
                continue  # expired meanwhile
            ttl = src.pttl(key)
            copied.add(key)
            if dst.dump(key) == dumped and (ttl is None or ttl < 0) == (dst.pttl(key) < 0):
                same += 1  # already there with the same value (a second pass): not sent again
                continue
            dst.restore(key, ttl if ttl and ttl > 0 else 0, dumped, replace=True)
        held = set(dst.scan_iter(count=1000))
        extra = sorted(held - copied)
        # a copied key missing on the target is a fault unless it expired on the source too (its TTL ran out)
        missing = [key for key in copied - held if src.exists(key)]
        if not frozen:
            if missing:
                raise VerificationFailed(f"migrate: {len(missing)} of the {len(copied)} keys copied into Redis "
                                         f"database {db} are not in the target's.", code="cache.differ")
            return len(copied), same, len(extra)
        for start in range(0, len(extra), 500):
            dst.delete(*extra[start:start + 500])
        left = set(dst.scan_iter(count=1000)) - copied
        if left or missing:
            raise VerificationFailed(f"migrate: after the final pass the target's Redis database {db} has "
                                     f"{len(left)} keys the source lacks and lacks {len(missing)} of the "
                                     "source's.", code="cache.differ")
        return len(copied), same, len(extra)

    def _step_media(self, *, frozen: bool = False) -> dict:
        if not self.stack.buckets:
            return {"skipped": "no buckets"}
        from toolkit.stores.copier import copy_objects

        return copy_objects(self.source.objects(), self.target.objects(), sorted(self.stack.buckets),
                            parallel=self.parallel, events=self.events, fault=_migrate_fault, mirror=frozen)

    def _step_deploy(self) -> dict:
        applied = self.engine.up(self.target_name, locked=True)
        fault("deploy:mid", "migrate")
        return {"applied": [a["resource"] for a in applied.applied]}

    def _step_freeze(self) -> dict:
        if not self.cutover:
            return {"skipped": "no cutover: the source keeps serving"}
        waited = self._wait_for_old_ttl()
        services = sorted(self.stack.services)
        try:
            self.source.compute().pause(services)
            fault("freeze:mid", "migrate")
        except Unsupported as exc:
            self.events.warn(f"the source cannot pause its services ({exc}); writes made after the final pass "
                             "will not be carried over.")
            return {"skipped": str(exc), "paused": [], "waited_for_ttl_seconds": waited}
        return {"paused": services, "waited_for_ttl_seconds": waited}

    def _wait_for_old_ttl(self) -> float:
        """Until resolvers can no longer hold an answer with the TTL the records had before lower_ttl."""
        lowered = self.journal.finished("lower_ttl") if self.journal else None
        until = (lowered or {}).get("wait_until_epoch") or 0
        began = time.time()
        while time.time() < until:
            left = until - time.time()
            self.events.progress("waiting for the old DNS TTL to run out", round(until - began - left),
                                 round(until - began), unit="seconds")
            time.sleep(min(1.0, left))
        return round(time.time() - began, 1)

    def _step_final_sync(self) -> dict:
        frozen = self._journal_paused()
        if not frozen:
            return {"skipped": "no freeze"}
        services = sorted(self.stack.services)
        target = self.target.compute()
        target.pause(services)  # the target's apps must not write while their database is replaced
        try:
            out = {"database": self._step_database(frozen=True), "cache": self._step_cache(frozen=True),
                   "media": self._step_media(frozen=True)}
        finally:
            target.resume(services)
        return out

    def _journal_paused(self) -> list[str]:
        journal = Journal.current(self.state)
        frozen = journal.finished("freeze") if journal else None
        return (frozen or {}).get("paused") or []

    def _thaw(self, services: list[str]) -> None:
        try:
            self.source.compute().resume(services)
        except Exception as exc:  # the original failure matters more; say how to lift it by hand
            how = ("start the app the way its owner does (Lifeboat never changes an existing target)"
                   if self.source.supports("adopted") else f"run `lifeboat up --on {self.source_name}`")
            self.events.warn(f"could not restart the source's services ({exc}); {how}.")

    def _step_cutover(self) -> dict:
        dns = self.stack.dns
        if not dns or not dns.records:
            return {"skipped": "no dns records"}
        service = self.engine.dns_provider().dns()
        plan = self.engine.plan(self.target_name, take_dns=True, warnings=[])
        lowered = (self.journal.finished("lower_ttl") or {}).get("lowered") or {}
        switched, confirmed = [], set()
        for change in plan.changes:
            if change.kind != "record" or change.action not in ("create", "update"):
                continue
            name, rtype = change.name.rsplit(" ", 1)
            ttl = change.after.attrs["ttl"]
            if change.name in lowered:  # keep the low TTL: a rollback then takes effect as fast
                ttl = min(ttl, dns.cutover_ttl)
            record = Record(name, rtype, ttl, tuple(change.after.attrs["values"]))
            service.upsert(dns.zone, record)
            fault("cutover:mid", "migrate")
            confirmed.update(service.confirm(dns.zone, record))
            switched.append({"record": change.name, "values": list(record.values), "ttl": ttl})
        out: dict = {"records": switched, "confirmed_on": sorted(confirmed)}
        if lowered:
            out["next"] = (f"the records keep TTL {dns.cutover_ttl} s so a rollback takes effect quickly; "
                           f"`lifeboat up --on {self.target_name}` restores TTL {dns.ttl} s.")
        return out

    def _step_verify(self) -> dict:
        status = self.engine.status(self.target_name)
        deadline = time.monotonic() + VERIFY_GRACE
        while not status.get("healthy") and time.monotonic() < deadline:
            # a replica the supervisor is restarting shows as not running for a moment: looked at again
            # until the grace runs out (one that keeps failing still fails the step)
            time.sleep(2)
            status = self.engine.status(self.target_name)
        if not status.get("healthy"):
            raise VerificationFailed(f"migrate: {self.target.label} is not healthy after the move: "
                                     f"{'; '.join(status.get('problems') or [])}.")
        out = {"target_healthy": True}
        if self.stack.postgres:
            before = self.source.database().table_digests()
            after = self.target.database().table_digests(method_of(before))
            differ = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
            if not differ:
                out["database"] = "identical"
            elif self._journal_paused():  # the final copy was verified equal while the source was frozen
                out["database"] = ("written on the target since the final copy, by its own services: the copy "
                                   "was verified equal while the source was frozen")
            else:
                out["database"] = ("the source kept serving after the copy (no write freeze), so it has taken "
                                   "writes since (the target's services may have written too)")
            if differ:
                out["database_tables"] = differ[:20]
        try:
            dns = self.engine.dns_provider()
            if dns is not None and self.cutover:
                records = {(r.name, r.type): r for r in dns.dns().records(self.stack.dns.zone)}
                addresses = self.target.compute().addresses("web")
                for rec in self.stack.dns.records:
                    if rec.target and tuple(sorted(records[(rec.name, rec.type)].values)) != \
                            tuple(sorted(addresses)):
                        raise VerificationFailed(f"migrate: DNS {rec.name} {rec.type} does not point at the target.")
                out["dns"] = "points at the target"
        except Unsupported:
            pass
        return out


def last_migration(engine: Engine) -> Journal | None:
    """The most recent completed migration of this stack (any pair of targets)."""
    base = engine.stack.root / ".lifeboat"
    found = []
    for path in sorted(base.glob("migrate-*/migrations/*/journal.jsonl")) if base.is_dir() else []:
        journal = Journal(path)
        if journal.complete:
            found.append(journal)
    return max(found, key=lambda j: j.id) if found else None


def rollback(engine: Engine) -> dict:
    """Point traffic back at the source of the last migration; the target keeps its data, paused."""
    journal = last_migration(engine)
    if journal is None:
        raise BadInput("rollback: no completed migration of this stack to roll back.",
                       code="rollback.nothing")
    if journal.finished("rollback"):
        raise BadInput(f"rollback: migration {journal.id} was already rolled back.", code="rollback.done")
    source, target = journal.meta["from"], journal.meta["to"]
    src, dst = engine.provider(source), engine.provider(target)
    services = sorted(engine.stack.services)
    owner = operator()
    with ExitStack() as locks:
        locks.enter_context(src.lock(f"{owner} (rollback from {target})"))
        locks.enter_context(dst.lock(f"{owner} (rollback to {source})"))
        journal.record("rollback", "begin")
        src.compute().resume(services)
        records = []
        if engine.stack.dns and engine.stack.dns.records:
            plan = engine.plan(source, take_dns=True, warnings=[])
            for change in plan.changes:
                if change.kind == "record" and change.action in ("create", "update"):
                    engine._apply_record(change)
                    records.append(change.name)
        try:
            dst.compute().pause(services)
            paused = services
        except Unsupported:
            paused = []
        journal.record("rollback", "done", records=records, target_paused=paused)
    return {"migration": journal.id, "from": target, "to": source, "records": records,
            "source_services": "running", "target_paused": paused}


def _migrate_fault(point: str) -> None:
    """The crash tests' points inside the copies (database:mid, media:mid)."""
    fault(point, "migrate")
