"""``lifeboat backups list`` and ``backups verify``: what a repository keeps, every part and blob opened
and checked."""

from __future__ import annotations

import time

from toolkit.errors import BadInput, VerificationFailed
from toolkit.run.engine import Engine
from toolkit.workflows.repository import Repository, check_part, epoch_text, manifest_parts, repository_target


def list_backups(engine: Engine, at: str | None = None) -> dict:
    provider = repository_target(engine, at)
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
        for name, entry in manifest_parts(manifest):
            info = parts.get(name.rsplit("/", 1)[1])
            if info is None or info.size != entry["sealed_bytes"]:
                found = "missing" if info is None else f"{info.size} bytes, not {entry['sealed_bytes']}"
                problems.append(f"{name} is {found}")
            else:
                sealed += info.size
        missing = sum(1 for e in repo.media_index(ident) if repo.blob(e[3]) not in blobs) if not problems else 0
        if missing:
            problems.append(f"{missing} media objects missing")
        out.append({"id": ident, "taken_at": epoch_text(manifest["taken_at"]),
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
    provider = repository_target(engine, at)
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
            for name, entry in manifest_parts(manifest):
                problem = check_part(repo, name, entry["plain_bytes"], entry["plain_sha256"])
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
                        checked_blobs[blob] = check_part(repo, blob, size, sha)
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
