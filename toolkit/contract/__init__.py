"""The provider contract: one interface per service, plain value objects, declared capabilities.

A provider is a named place the stack can run. It declares the services it offers (``SERVICES``) and
finer capabilities (``FEATURES``), checks its own settings (``SETTINGS``), and gives access to one object
per service. Lifecycle follows the Terraform plugin shape: the provider *observes* what exists and
*creates/updates/deletes* single resources; the engine, not the provider, computes the plan.

Nothing here holds a whole object or database dump in memory: data moves as streams.
"""

from __future__ import annotations

import hmac
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from toolkit.config.model import Stack, Target
from toolkit.run.events import Events

# --------------------------------------------------------------------------------------------------
# Value objects


class SecretValue:
    """A secret held in memory. It never prints, never serialises and compares in constant time."""

    __slots__ = ("_value",)

    def __init__(self, value: str | bytes):
        self._value = value.encode() if isinstance(value, str) else bytes(value)

    def reveal(self) -> bytes:
        return self._value

    def reveal_text(self) -> str:
        return self._value.decode("utf-8")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretValue) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "SecretValue(<redacted>)"

    __str__ = __repr__

    def __reduce__(self):  # refuse pickling: secrets do not go to journals or caches by accident
        raise TypeError("a SecretValue cannot be serialised")


@dataclass(frozen=True)
class Resource:
    """One thing a provider manages. ``attrs`` is what the planner compares; ``extra`` is informative."""

    kind: str  # database | cache | bucket | secret | service | record
    name: str
    attrs: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    roles: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Instance:
    """One running replica of a service."""

    service: str
    replica: int
    host: str
    state: str  # running | stopped | crashed | starting
    healthy: bool | None
    url: str | None = None
    release: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str | None = None
    md5: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TableDigest:
    table: str
    rows: int
    digest: str


@dataclass(frozen=True)
class DatabaseInfo:
    version: int
    database: str
    extensions: tuple[str, ...]
    size_bytes: int


@dataclass(frozen=True)
class Record:
    name: str  # relative to the zone, "@" for the apex
    type: str
    ttl: int
    values: tuple[str, ...]


@dataclass(frozen=True)
class LogSource:
    """One replica's output: a file (``path``) or a container's log (``container``, on the docker engine
    ``env`` names), read through ``conn`` (a Connection: this machine or an SSH host)."""

    service: str
    replica: int
    host: str | None
    conn: Any
    path: str | None = None
    container: str | None = None
    env: dict[str, str] | None = None

    @property
    def label(self) -> str:
        return f"{self.host + '/' if self.host else ''}{self.service}.{self.replica}"

    def where(self) -> dict:
        """Which replica, for JSON output."""
        return {"service": self.service, "replica": self.replica, "host": self.host}


# --------------------------------------------------------------------------------------------------
# One interface per service


class ComputeService(ABC):
    """Where the stack's services run."""

    @abstractmethod
    def hosts(self) -> list[Host]: ...

    @abstractmethod
    def instances(self) -> list[Instance]:
        """Every replica of every service with its state and health, as observed now."""

    @abstractmethod
    def addresses(self, role: str) -> list[str]:
        """Public addresses of the hosts running services of ``role`` (for DNS records)."""

    @abstractmethod
    def exec(self, service: str, argv: list[str], *, env: dict[str, str] | None = None) -> int:
        """Run a one-off command in a service's environment; return its exit code."""

    def pause(self, services: list[str]) -> None:
        """Stop ``services`` (kept deployed) so they write nothing: a migration's write freeze. The next
        ``resume`` or ``up`` starts them again."""
        raise Unsupported("this provider cannot pause services")

    def console(self, service: str, argv: list[str]) -> int:
        """``argv`` on a terminal in a service's environment (a pseudo-terminal on its host, as the account
        it runs as), wired to this one; its exit status. `exec` stays the non-interactive way."""
        raise Unsupported("this provider offers no console")

    def log_sources(self, service: str | None = None) -> list[LogSource]:
        """Where the output of each replica (of ``service``, or of every service) is kept, for `lifeboat
        logs` (toolkit/workflows/logs.py reads them)."""
        raise Unsupported("this provider keeps no service logs Lifeboat can read")

    def resume(self, services: list[str]) -> None:
        raise Unsupported("this provider cannot pause services")


class DatabaseService(ABC):
    """The stack's PostgreSQL database."""

    #: whether its dump and restore streams cross a network to reach this machine (compressing them pays)
    remote: bool = True

    @abstractmethod
    def info(self) -> DatabaseInfo: ...

    @abstractmethod
    def dump(self, snapshot: str | None = None, part=None, compress: int = 1) -> AbstractContextManager[BinaryIO]:
        """A stream of the database in pg_dump's custom format (``compress``: its zlib level, 0 for none);
        closed when the context exits.
        ``snapshot``: an id from :meth:`snapshot`, so the dump sees exactly what that snapshot sees;
        ``part``: one part of a parallel copy (toolkit.commands.pgcommands.Part), None for everything."""

    def snapshot(self) -> AbstractContextManager[tuple[str, Callable[[], dict[str, TableDigest]],
                                                       Callable[[], list[tuple[str, str, int]]]]]:
        """Hold a repeatable-read transaction open and yield (snapshot id, digests, tables): ``digests()``
        computes :meth:`table_digests` in that same snapshot (``digests(method)`` likewise), ``tables()`` lists (schema, table, bytes)
        largest first. A dump taken with the id and those digests describe the same rows even while the
        app keeps writing. Call ``tables()`` before ``digests()`` runs (one connection)."""
        raise Unsupported("this database service cannot export a snapshot")

    def wal_source(self):
        """Its WAL archive (toolkit.workflows.walarchive.WalSource), where the provider runs PostgreSQL with
        ``backup: wal: true``."""
        raise Unsupported("this database service archives no WAL")

    @abstractmethod
    def restore(self, stream: BinaryIO, *, clean: bool = True, part=None) -> None:
        """Load a custom-format dump read from ``stream`` into the database (``part``: as dumped)."""

    @abstractmethod
    def table_digests(self, method: str = "auto") -> dict[str, TableDigest]:
        """Row count and an order-independent content digest per table, computed where the data is
        (``method``: toolkit.stores.digests, "auto", "r1" or "text")."""

    @abstractmethod
    def connection_url(self) -> SecretValue:
        """A libpq URL that reaches the database from this machine (it carries the password)."""


class CacheService(ABC):
    """The stack's Redis."""

    @abstractmethod
    def connection_url(self) -> SecretValue: ...

    @abstractmethod
    def ping(self) -> bool: ...


class ObjectStore(ABC):
    """Buckets of objects, read and written as streams with size and checksum."""

    #: checksum algorithms the store computes itself (no data pulled back to verify)
    NATIVE_CHECKSUMS: tuple[str, ...] = ()

    @abstractmethod
    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, sorted by key, with its size; ``sha256`` where the listing
        carries it cheaply, else None (S3 lists no recorded digests: :meth:`checksum` or :meth:`head` give
        it, and the stream :meth:`open_read` yields carries it as ``recorded_sha256``)."""

    @abstractmethod
    def head(self, bucket: str, key: str) -> ObjectInfo | None: ...

    @abstractmethod
    def open_read(self, bucket: str, key: str) -> AbstractContextManager[BinaryIO]: ...

    @abstractmethod
    def write(self, bucket: str, key: str, stream: BinaryIO, *, size: int | None = None,
              content_type: str | None = None) -> ObjectInfo:
        """Store what ``stream`` yields under ``key``; atomic: readers see the old or the new object."""

    @abstractmethod
    def delete(self, bucket: str, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""

    @abstractmethod
    def checksum(self, bucket: str, key: str) -> str:
        """The object's SHA-256, computed where the data lives."""

    #: objects a copy may move at once through this store (per-connection limits of its transport)
    PARALLEL: int = 16
    #: whether :meth:`open_many` reads many objects at the cost of one (an SSH host: one stream for all,
    #: where opening each would start a connection); readers then group small objects
    READS_IN_BATCHES: bool = False

    @contextmanager
    def open_many(self, bucket: str, keys: list[str]):
        """An iterator of (key, stream) for ``keys``, in that order; each stream is read (or left) before
        the next is asked for. Here: one :meth:`open_read` after the other; stores with a cheaper way to
        read many objects at once override it (and say so in READS_IN_BATCHES)."""

        def each():
            for key in keys:
                with self.open_read(bucket, key) as stream:
                    yield key, stream

        items = each()
        try:
            yield items
        finally:
            items.close()

    def _recorded_or_read_sha256(self, bucket: str, key: str, where: str) -> str:
        """For :meth:`checksum` on stores that cannot hash on request: the SHA-256 recorded when Lifeboat
        wrote the object, else the object read and hashed here (objects written by others)."""
        import hashlib

        head = self.head(bucket, key)
        if head is None:
            from toolkit.errors import ProviderError

            raise ProviderError(f"{where}: no object {key!r} in bucket {bucket}.", code="objects.missing")
        if head.sha256:
            return head.sha256
        sha = hashlib.sha256()
        with self.open_read(bucket, key) as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                sha.update(chunk)
        return sha.hexdigest()

    def create_bucket(self, bucket: str) -> None:
        """Make ``bucket`` outside the stack's plan (a backup repository); making one that exists is not an
        error. Stores whose buckets only their infrastructure code makes do not offer it."""
        raise Unsupported("this object store makes buckets only through the stack's plan")

    def release(self) -> None:  # noqa: B027 - optional hook
        """Close connections or sessions the store keeps between operations."""

    def sweep_partial(self) -> int:
        """Remove what writes killed mid-way left behind (a killed writer cannot clean up after itself);
        return how many. Never touches a write that may still be running."""
        return 0


def read_full(stream, n: int) -> bytes:
    """Up to ``n`` bytes of ``stream``, fewer only at its end (streams may return short reads)."""
    parts, got = [], 0
    while got < n:
        data = stream.read(n - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


class DnsService(ABC):
    """Records of one or more zones, with TTLs."""

    #: what this service is, for people ("Route53", "the zone file"): where a change was confirmed
    NAME = "the DNS provider's API"

    @abstractmethod
    def records(self, zone: str) -> list[Record]: ...

    @abstractmethod
    def upsert(self, zone: str, record: Record) -> None: ...

    @abstractmethod
    def delete(self, zone: str, name: str, type: str) -> None: ...

    #: seconds :meth:`confirm` waits by default
    confirm_seconds: float = 300.0

    def confirm(self, zone: str, record: Record, *, timeout: float | None = None) -> list[str]:
        """Wait until ``record`` is what the zone serves (up to ``timeout``, default the service's own);
        return where that was confirmed. This default reads it back through the service's own API;
        services that can ask the authoritative servers do so."""
        import time

        timeout = self.confirm_seconds if timeout is None else timeout
        want = (record.ttl, tuple(sorted(record.values)))
        deadline = time.monotonic() + timeout
        while True:
            found = {(r.name, r.type): r for r in self.records(zone)}.get((record.name, record.type))
            if found is not None and (found.ttl, tuple(sorted(found.values))) == want:
                return [f"{self.NAME}, read back"]
            if time.monotonic() > deadline:
                from toolkit.errors import ProviderError

                raise ProviderError(f"DNS {record.name}.{zone} {record.type} does not read back as "
                                    f"{', '.join(record.values)} (TTL {record.ttl}) after {timeout:.0f} s.",
                                    code="dns.not_confirmed")
            time.sleep(1)


class SecretStore(ABC):
    """Secrets by name. Values are :class:`SecretValue`; they never reach logs or argv."""

    @abstractmethod
    def names(self) -> list[str]: ...

    @abstractmethod
    def read(self, name: str) -> SecretValue | None: ...

    @abstractmethod
    def write(self, name: str, value: SecretValue) -> None: ...

    @abstractmethod
    def delete(self, name: str) -> None: ...

    def written_at(self, name: str) -> float | None:
        """When secret ``name`` was last written (epoch seconds), where the store knows it (else None)."""
        return None


# --------------------------------------------------------------------------------------------------
# The provider


class Unsupported(Exception):
    """Raised by a provider asked for a service it does not declare."""


class Provider(ABC):
    """A named place the stack can run. Subclass, declare, implement; register by name."""

    #: registry name of the type (``type:`` in the stack file)
    TYPE: str = ""
    #: one-line description for ``lifeboat providers``
    DESCRIPTION: str = ""
    #: the services offered: any of compute, database, cache, objects, dns, secrets
    SERVICES: frozenset[str] = frozenset()
    #: finer capabilities, e.g. {"tls": False, "replicas": True}. The command line reads these, never probes
    #: for methods: "releases" (``ex_releases``/``ex_rollback``: `lifeboat release`), "ssh_hosts" (a
    #: ``directory`` of SSH hosts with ``facts``/``bootstrap``: `lifeboat hosts`), "adopted" (a deployment
    #: Lifeboat did not make: read only, a source for migrate and backup; see ``refuse``)
    FEATURES: dict[str, bool] = {}

    def supports(self, feature: str) -> bool:
        return bool(self.FEATURES.get(feature))

    def env_templates(self, svc) -> dict[str, str]:
        """The service's ``env:`` and then its target's over it (toolkit/config/envtemplate.py), unresolved."""
        return {**svc.env, **(self.settings.get("env") or {})}
    #: settings accepted under the target in the stack file: name -> toolkit.config.schema.Field
    SETTINGS: dict = {}

    def __init__(self, stack: Stack, target: Target):
        self.stack = stack
        self.target = target
        self.settings = target.settings
        self.events: Events = Events()

    @property
    def label(self) -> str:
        return f"{self.target.name} ({self.TYPE})"

    # -- preflight
    @abstractmethod
    def check(self) -> dict[str, Any]:
        """Reachability, credentials and prerequisites; raise ProviderUnreachable or ProviderError.

        Returns facts worth showing (versions found, where state lives)."""

    # -- lifecycle: observe / create / update / delete, one resource at a time
    @abstractmethod
    def observe(self) -> list[Resource]:
        """What exists now for this stack on this target. Changes nothing."""

    @abstractmethod
    def desired(self, resources: list[Resource], secrets: dict[str, SecretValue] | None = None) -> list[Resource]:
        """Fill in provider-specific attributes of the stack's desired resources. ``secrets`` holds the
        values the secrets will have after this plan, for fingerprints of what services are given.
        Read-only: planning changes nothing."""

    @abstractmethod
    def create(self, resource: Resource) -> None: ...

    @abstractmethod
    def update(self, before: Resource, after: Resource) -> None: ...

    @abstractmethod
    def delete(self, resource: Resource) -> None: ...

    def finish_destroy(self) -> None:  # noqa: B027 - optional hook
        """Called after every resource was deleted: remove what is left of the target's own state."""

    # -- service accessors
    def compute(self) -> ComputeService:
        raise Unsupported(f"{self.label} offers no compute service")

    def database(self) -> DatabaseService:
        raise Unsupported(f"{self.label} offers no database service")

    def cache(self) -> CacheService:
        raise Unsupported(f"{self.label} offers no cache service")

    def objects(self) -> ObjectStore:
        raise Unsupported(f"{self.label} offers no object store")

    def dns(self) -> DnsService:
        raise Unsupported(f"{self.label} offers no DNS service")

    def secrets(self) -> SecretStore:
        raise Unsupported(f"{self.label} offers no secret store")

    def scratch_settings(self, name: str) -> dict:
        """Settings of a throwaway copy of this target named ``name`` that shares nothing with it (its own
        state, data services and ports): where ``lifeboat drill`` rehearses a failover."""
        raise Unsupported(f"{self.label} cannot hold a scratch copy of the stack yet")

    def free_space(self) -> list[dict]:
        """Room for data on this target, per filesystem: ``{"where": ..., "kinds": ["database", "objects"],
        "free": bytes}``. Kinds absent from every entry are unbounded or unknown (not checked)."""
        return []

    def refuse(self):
        """The error (exit 2) for a change asked of a target that takes none: FEATURES "adopted", a
        deployment Lifeboat did not make, which it only reads."""
        from toolkit.errors import BadInput

        return BadInput(f"{self.label} is only read by Lifeboat; it takes no changes.", code="target.adopted")

    def lock(self, owner: str):
        """A context manager holding this stack's lock on this target (exit 3 when held)."""
        raise Unsupported(f"{self.label} offers no lock")

    def lock_status(self) -> dict | None:
        """Who holds the lock (owner, command, since), or None."""
        raise Unsupported(f"{self.label} offers no lock")

    def lock_release(self) -> None:
        """Break the lock (after its holder died)."""
        raise Unsupported(f"{self.label} offers no lock")


def bucket_var(bucket: str, suffix: str) -> str:
    """``BUCKET_<NAME>_<SUFFIX>``: the variable an app reads for a bucket of the stack."""
    return f"BUCKET_{bucket.upper().replace('-', '_')}_{suffix}"


class BucketsOnly(ABC):
    """Mixin for providers that offer only an object store: the stack's buckets are their resources, named
    ``<prefix><bucket>`` there (the prefix from the setting ``PREFIX_SETTING``, default
    ``<stack>-<target>-``). A provider gives ``objects()`` (a store with create_bucket/remove_bucket) and
    ``bucket_names_there()``."""

    PREFIX_SETTING = "bucket_prefix"

    def names(self) -> dict[str, str]:
        prefix = self.settings.get(self.PREFIX_SETTING) or f"{self.stack.name}-{self.target.name}-"
        return {b: f"{prefix}{b}" for b in self.stack.buckets}

    @abstractmethod
    def bucket_names_there(self) -> set[str]:
        """The names of the buckets that exist at the provider now."""

    @abstractmethod
    def app_env(self, bucket: str) -> dict[str, str]:
        """What an app needs to use ``bucket`` here, as ``BUCKET_<NAME>_*`` variables (docs/app-contract.md):
        ``_URL`` (``s3://``, ``az://`` or ``gs://`` and the real name), ``_ENDPOINT`` and the credentials,
        read from the variables the target names on this machine (the values are secrets: they go into the
        services' environment only)."""

    def observe(self) -> list[Resource]:
        there = self.bucket_names_there()
        return [Resource("bucket", name, {}) for name, real in sorted(self.names().items()) if real in there]

    def desired(self, resources, secrets=None) -> list[Resource]:
        return [Resource("bucket", r.name, {}) for r in resources if r.kind == "bucket"]

    def create(self, resource: Resource) -> None:
        self._bucket_only(resource)
        self.objects().create_bucket(resource.name)

    def update(self, before: Resource, after: Resource) -> None:
        self._bucket_only(after)

    def delete(self, resource: Resource) -> None:
        self._bucket_only(resource)
        self.objects().remove_bucket(resource.name)

    def _bucket_only(self, resource: Resource) -> None:
        if resource.kind != "bucket":
            from toolkit.errors import ProviderError

            raise ProviderError(f"{self.label} holds buckets only, not {resource.kind} {resource.name}.",
                                code=f"{self.TYPE}.not_a_bucket")


class KindDispatch:
    """Mixin for providers: ``create``/``update`` go to ``_apply_<kind>(before, after)`` and ``delete`` to
    ``_delete_<kind>(resource)``, one method pair per resource kind."""

    def create(self, resource: Resource) -> None:
        getattr(self, f"_apply_{resource.kind}")(None, resource)

    def update(self, before: Resource, after: Resource) -> None:
        getattr(self, f"_apply_{after.kind}")(before, after)

    def delete(self, resource: Resource) -> None:
        getattr(self, f"_delete_{resource.kind}")(resource)


class DnsOnlyProvider(Provider):
    """Base of the DNS-only targets (rfc2136, the clouds' DNS APIs): they hold no resource of the stack,
    so ``up`` on one changes nothing and anything asking one to make a resource is told why not."""

    SERVICES = frozenset({"dns"})

    def observe(self) -> list[Resource]:
        return []

    def desired(self, resources: list[Resource], secrets: dict[str, SecretValue] | None = None) -> list[Resource]:
        return []

    def create(self, resource: Resource) -> None:
        from toolkit.errors import ProviderError

        raise ProviderError(f"{self.label} only serves DNS records.", code=f"{self.TYPE}.dns_only")

    def update(self, before: Resource, after: Resource) -> None:
        self.create(after)

    def delete(self, resource: Resource) -> None:
        self.create(resource)


def data_resource(res: Resource, *, wal_archive: bool = False) -> Resource | None:
    """The desired form of a data resource on a provider that runs its own servers: buckets carry no
    attributes, servers must be running, and PostgreSQL archives its WAL when ``wal_archive``
    (``Stack.archives_wal``). None for other kinds."""
    if res.kind == "bucket":
        return Resource("bucket", res.name, {})
    if res.kind == "cache":
        return Resource("cache", res.name, {"running": True})
    if res.kind == "database":
        return Resource("database", res.name, {**res.attrs, "running": True, **({"wal_archive": True} if wal_archive
                                                                                else {})})
    return None


def desired_resources(stack, resources: list[Resource], service_attrs, bucket_attrs: dict | None = None
                      ) -> list[Resource]:
    """The planned ``resources`` as a provider that runs them will hold them: the data kinds as
    :func:`data_resource` gives them, each service with ``service_attrs(svc)`` (what its release and
    configuration are) and running, each bucket with ``bucket_attrs`` (how its store keeps it), anything
    else as planned."""
    out = []
    for res in resources:
        data = data_resource(res, wal_archive=stack.archives_wal)
        if data is not None and data.kind == "bucket" and bucket_attrs:
            out.append(Resource("bucket", data.name, {**data.attrs, **bucket_attrs}, data.extra))
        elif data is not None:
            out.append(data)
        elif res.kind == "service":
            out.append(Resource("service", res.name, {**service_attrs(stack.services[res.name]), "running": True}))
        else:
            out.append(res)
    return out
