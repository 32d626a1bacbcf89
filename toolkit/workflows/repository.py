"""The backup repository: one bucket of the backup target's object store holding a stack's sealed
backups (see :mod:`toolkit.workflows.backup` for the layout), and what the workflows read from it."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass

from toolkit.contract import ObjectStore, Provider, Unsupported
from toolkit.errors import BadInput, ProviderError, VerificationFailed
from toolkit.run.engine import Engine, operator_secret
from toolkit.stores.sealed import (
    Opening,
    RepositoryKey,
    Sealing,
    Tampered,
    new_params,
    open_bytes,
    sealed_size,
)

FORMAT = 1
PARTS = ("database.dump", "base.tar", "cache.jsonl", "media.json", "secrets.json", "stack.yml")


def epoch_text(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def new_id() -> str:
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
        raw = read_small(store, bucket, config)
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
            store.write(bucket, config, bytes_stream(body), size=len(body), content_type="application/json")
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
        return self.put(name, bytes_stream(data), size=len(data))

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
        raw = read_small(self.store, self.bucket, name)
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


def read_small(store: ObjectStore, bucket: str, key: str) -> bytes | None:
    try:
        if store.head(bucket, key) is None:
            return None
    except ProviderError as exc:
        if exc.code == "objects.no_bucket":
            return None
        raise
    with store.open_read(bucket, key) as stream:
        return stream.read()


def bytes_stream(data: bytes):
    import io

    return io.BytesIO(data)


def manifest_parts(manifest: dict) -> list[tuple[str, dict]]:
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


def check_part(repo: Repository, name: str, size: int, sha: str) -> str | None:
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


def repository_target(engine: Engine, at: str | None) -> Provider:
    stack = engine.stack
    at = at or (stack.backup.to if stack.backup else None)
    if at is None:
        raise BadInput(f"{stack.path.name} has no backup: section; say where the backups are with --at.",
                       code="backup.no_target")
    engine.preflight(at)
    return engine.provider(at)
