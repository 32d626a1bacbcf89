"""The validated stack: plain, immutable value objects built from a checked stack file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Service:
    name: str
    role: str  # "web" or "worker"
    command: tuple[str, ...]
    image: str | None = None
    build: Path | None = None
    port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    replicas: int = 1
    health: str | None = None
    secrets: tuple[str, ...] = ()
    path: str | None = None  # web: URL prefix the proxy routes to this service
    release_command: tuple[str, ...] | None = None  # once per new release, before it takes traffic
    build_command: tuple[str, ...] | None = None  # when a release is built, in its folder
    health_timeout: int | None = None  # seconds a new release may take to be healthy (None: the provider's)
    packages: tuple[str, ...] = ()  # Debian packages it needs on its hosts (plus its build folder's Aptfile)
    singleton: bool = False  # exactly one process across the target
    # web: URL path prefixes the proxy serves itself: (prefix, "release", folder in the release) or
    # (prefix, "bucket", "BUCKET/" + the key prefix the path maps to, often empty)
    serve: tuple[tuple[str, str, str], ...] = ()
    writable: tuple[str, ...] = ()  # folders of the release the app account may write (Rails' tmp, log)

    @property
    def is_web(self) -> bool:
        return self.role == "web"


@dataclass(frozen=True)
class Postgres:
    version: int
    database: str
    user: str
    extensions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Redis:
    version: int | None = None
    disposable: bool = False


@dataclass(frozen=True)
class Bucket:
    name: str
    public: bool = False
    versioned: bool = False


@dataclass(frozen=True)
class Tls:
    acme_email: str | None = None
    certificate_secret: str | None = None
    key_secret: str | None = None


@dataclass(frozen=True)
class SecretRef:
    """Where a secret's value comes from. The value itself never lives in the stack file."""

    name: str
    source: str  # env | file | store | generate
    var: str | None = None
    path: Path | None = None
    length: int = 32


@dataclass(frozen=True)
class Target:
    """A named place the stack can run (``providers:`` entry)."""

    name: str
    type: str
    settings: dict
    line: int | None = None


@dataclass(frozen=True)
class DnsRecord:
    name: str  # relative to the zone, "@" for the apex
    type: str
    ttl: int
    values: tuple[str, ...] = ()
    target: str | None = None  # a service role ("web") whose addresses become the values


@dataclass(frozen=True)
class Dns:
    provider: str
    zone: str
    ttl: int
    records: tuple[DnsRecord, ...] = ()
    cutover_ttl: int = 60  # records are lowered to this before a migration switches them


@dataclass(frozen=True)
class Backup:
    to: str
    every: int
    keep: int
    encrypt_with: str | None = None
    bucket: str | None = None  # default: "lifeboat-backups"
    wal: bool = False  # archive PostgreSQL's write-ahead log too (where the source's provider runs PostgreSQL)

    @property
    def repository_bucket(self) -> str:
        return self.bucket or "lifeboat-backups"


@dataclass(frozen=True)
class Stack:
    name: str
    domain: str
    path: Path
    services: dict[str, Service]
    postgres: Postgres | None
    redis: Redis | None
    buckets: dict[str, Bucket]
    tls: Tls | None
    secrets: dict[str, SecretRef]
    targets: dict[str, Target]
    dns: Dns | None
    backup: Backup | None
    default_target: str | None = None

    @property
    def root(self) -> Path:
        return self.path.parent

    def target(self, name: str) -> Target:
        return self.targets[name]

    @property
    def archives_wal(self) -> bool:
        """``backup: wal: true`` with a database: where Lifeboat runs PostgreSQL, it archives its WAL."""
        return bool(self.postgres and self.backup and self.backup.wal)

    @property
    def backup_key(self) -> str | None:
        """The secret that seals backups: held by the operator, never given to a target."""
        return self.backup.encrypt_with if self.backup else None

    def web_services(self) -> list[Service]:
        return [s for s in self.services.values() if s.is_web]
