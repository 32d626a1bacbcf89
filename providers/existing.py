"""A deployment Lifeboat did not make (``type: existing``): the app as its owner already runs it on this
machine, described so that ``migrate`` and ``backup`` can take it as their source.

Lifeboat reads it and never changes it: its PostgreSQL is reached by the URL the app itself uses, its Redis
likewise, its media are the app's own folders in whatever layout the app writes (every file is an object,
its key the path under the folder), its secrets are read from the app's own env file by their names. The
one change ever made is the freeze a migration asks for, through the commands the stack gives (``freeze:
stop`` / ``start``). ``up``, ``destroy`` and every command that would write to it refuse (exit 2).
"""

from __future__ import annotations

import os
import subprocess
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from providers.common.pgremote import PostgresAt
from toolkit.config.schema import DictOf, Field, ListOf, Map, Str
from toolkit.contract import (
    CacheService,
    ComputeService,
    Host,
    Instance,
    ObjectInfo,
    Provider,
    Resource,
    SecretStore,
    SecretValue,
    Unsupported,
)
from toolkit.errors import BadInput, ProviderError, ProviderUnreachable
from toolkit.run.locks import FileLock, FileLocked
from toolkit.stores import layout
from toolkit.stores.dirstore import FolderReads, hash_file

ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


def refused(label: str, name: str) -> BadInput:
    """Exit 2: an existing target is never written to."""
    return BadInput(f"{label}: an existing target is only read: Lifeboat never changes a deployment it did not "
                    "make (the freeze commands a migration runs excepted).",
                    hint=f"it is a source: `lifeboat migrate --from {name} --to ...` or `lifeboat backup --from "
                         f"{name}`.", code="target.adopted")


def read_env_file(path: Path) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of an app's env file (docker's and systemd's ``EnvironmentFile`` form, with
    ``export``, comments and one level of single or double quotes)."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key] = value
    return out


class ExistingProvider(FileLocked, Provider):
    TYPE = "existing"
    DESCRIPTION = "a deployment Lifeboat did not make, on this machine: read only, a source for migrate and backup"
    SERVICES = frozenset({"compute", "database", "cache", "objects", "secrets"})
    FEATURES = {"adopted": True, "runs_services": False}
    SETTINGS = {
        "env_file": Field(Str(expected="a path"), doc="the app's own env file (KEY=VALUE lines) on this machine: "
                                                      "its secrets are read from it by their names, and the "
                                                      "variables named below"),
        "database_url_var": Field(Str(pattern=ENV_NAME, expected="an environment variable name"),
                                  doc="the variable (in env_file, else this machine's environment) holding the "
                                      "PostgreSQL URL the app uses"),
        "redis_url_var": Field(Str(pattern=ENV_NAME, expected="an environment variable name"),
                               doc="the variable holding the Redis URL the app uses"),
        "buckets": Field(DictOf(Str(expected="a folder path")), default=dict,
                         doc="each bucket of the stack: the folder on this machine the app keeps it in (any "
                             "layout: every file under it is an object, its key the path under the folder)"),
        "health": Field(DictOf(Str(pattern=r"https?://\S+", expected="an http(s) URL")), default=dict,
                        doc="a service's health URL, for status"),
        "addresses": Field(ListOf(Str(expected="an address")), default=list,
                           doc="where the app is served now (what DNS points at), for a migration's rollback"),
        "freeze": Field(Map({
            "stop": Field(ListOf(ListOf(Str(), min_items=1)), default=list,
                          doc="commands (argv lists) that stop the app's writers, run in order"),
            "start": Field(ListOf(ListOf(Str(), min_items=1)), default=list,
                           doc="commands that start them again (a failed or rolled back migration)"),
        }), doc="how a migration freezes the app for its final copy (the only change made here)"),
    }

    def __init__(self, stack, target):
        super().__init__(stack, target)
        self.root = stack.root

    # ------------------------------------------------------------------ what the settings say
    def env(self) -> dict[str, str]:
        path = self.settings.get("env_file")
        if not path:
            return {}
        file = (self.root / path) if not os.path.isabs(path) else Path(path)
        try:
            return read_env_file(file)
        except OSError as exc:
            raise ProviderUnreachable(f"{self.label}: cannot read env_file {file}: {exc.strerror}.",
                                      code="existing.env_file") from None

    def variable(self, setting: str) -> SecretValue:
        name = self.settings.get(setting)
        if not name:
            raise BadInput(f"{self.label}: the stack has a {setting.split('_')[0]} and the target does not say where "
                           f"it is: give {setting} (the variable the app reads its URL from).",
                           code="existing.unset")
        value = self.env().get(name, os.environ.get(name))
        if not value:
            raise ProviderUnreachable(f"{self.label}: {name} ({setting}) is set neither in env_file nor in this "
                                      "machine's environment.", code="existing.unset")
        return SecretValue(value)

    def folder(self, bucket: str) -> Path:
        path = (self.settings.get("buckets") or {}).get(bucket)
        if not path:
            raise BadInput(f"{self.label}: bucket {bucket} of the stack has no folder under buckets:.",
                           hint=f"buckets: {{{bucket}: /path/the/app/keeps/it/in}}", code="existing.unset")
        return Path(path) if os.path.isabs(path) else self.root / path

    # ------------------------------------------------------------------ lifecycle: read only
    def check(self) -> dict:
        facts: dict = {}
        if self.stack.postgres:
            info = self.database().info()
            facts["postgres"] = info.version
        if self.stack.redis is not None and not self.cache().ping():
            raise ProviderUnreachable(f"{self.label}: Redis at {self.cache().where()} does not answer.",
                                      code="existing.redis")
        for bucket in self.stack.buckets:
            if not self.folder(bucket).is_dir():
                raise ProviderUnreachable(f"{self.label}: bucket {bucket}: {self.folder(bucket)} is not a folder.",
                                          code="existing.no_folder")
        return facts

    def observe(self) -> list[Resource]:
        out = []
        if self.stack.postgres:
            try:
                info = self.database().info()
                out.append(Resource("database", self.stack.postgres.database,
                                    {"version": info.version, "extensions": list(info.extensions), "running": True}))
            except ProviderUnreachable:
                out.append(Resource("database", self.stack.postgres.database, {"running": False}))
        if self.stack.redis is not None:
            out.append(Resource("cache", "redis", {"running": self.cache().ping()}))
        for bucket in self.stack.buckets:
            folder = self.folder(bucket)
            if folder.is_dir():
                out.append(Resource("bucket", bucket, {"folder": str(folder)}))
        # the services' health is the instances' (status and plan ask for them once; not fetched twice here)
        out += [Resource("service", name, {"adopted": True}) for name in self.stack.services]
        return out

    def desired(self, resources, secrets=None) -> list[Resource]:
        return self.observe()  # what is there is what is wanted: planning changes nothing

    def refuse(self) -> BadInput:
        return refused(self.label, self.target.name)

    def create(self, resource: Resource) -> None:
        raise self.refuse()

    def update(self, before: Resource, after: Resource) -> None:
        raise self.refuse()

    def delete(self, resource: Resource) -> None:
        raise self.refuse()

    # ------------------------------------------------------------------ services
    def compute(self) -> ExistingCompute:
        return ExistingCompute(self)

    def database(self) -> ExistingDatabase:
        if self.stack.postgres is None:
            raise Unsupported(f"the stack {self.stack.name} has no postgres: section")
        return ExistingDatabase(self)

    def cache(self) -> ExistingCache:
        return ExistingCache(self)

    def objects(self) -> AdoptedFolders:
        return AdoptedFolders(self)

    def secrets(self) -> EnvFileSecrets:
        return EnvFileSecrets(self)

    # ------------------------------------------------------------------ the lock: on this machine
    def _file_lock(self) -> FileLock:
        return FileLock(self.root / ".lifeboat" / f"existing-{self.target.name}.lock", self.label, self.stack.name)



class ExistingDatabase(PostgresAt):
    """The app's own PostgreSQL, at the URL it uses (host, port, role and password from it; the password
    reaches pg_dump through its environment)."""

    def __init__(self, provider: ExistingProvider):
        self.p = provider
        self.label = provider.label
        self.version = provider.stack.postgres.version
        url = provider.variable("database_url_var").reveal_text()
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
            raise BadInput(f"{provider.label}: {provider.settings['database_url_var']} is not a PostgreSQL URL "
                           "(postgres://user:password@host:port/database).", code="existing.database_url")
        self._host, self._port = parts.hostname, parts.port or 5432
        self._user, self._password = unquote(parts.username or ""), SecretValue(unquote(parts.password or ""))
        self.database = unquote(parts.path.lstrip("/")) or provider.stack.postgres.database
        self.sslmode = (parse_qs(parts.query).get("sslmode") or [None])[-1]

    def endpoint(self) -> tuple[str, int]:
        return self._host, self._port

    def login(self, admin: bool = False) -> tuple[str, SecretValue]:
        return self._user, self._password

    def restore(self, stream, *, clean=True, part=None):
        raise self.p.refuse()


class ExistingCache(CacheService):
    def __init__(self, provider: ExistingProvider):
        self.p = provider

    def connection_url(self) -> SecretValue:
        return self.p.variable("redis_url_var")

    def where(self) -> str:
        parts = urlsplit(self.connection_url().reveal_text())
        return f"{parts.hostname}:{parts.port or 6379}"

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.connection_url().reveal_text(), socket_timeout=5).ping())
        except redis.RedisError:
            return False


class ExistingCompute(ComputeService):
    """The app's processes are its owner's: Lifeboat looks at their health URLs and, for a migration's
    freeze, runs the commands the stack gives."""

    def __init__(self, provider: ExistingProvider):
        self.p = provider

    def hosts(self) -> list[Host]:
        return [Host("here", a) for a in self.p.settings.get("addresses") or []]

    def instances(self) -> list[Instance]:
        out = []
        for service, url in (self.p.settings.get("health") or {}).items():
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - the operator's own URL
                    healthy = resp.status < 400
            except OSError:
                healthy = False
            out.append(Instance(service, 0, "here", "running" if healthy else "unreachable", healthy, url))
        return out

    def addresses(self, role: str) -> list[str]:
        return list(self.p.settings.get("addresses") or [])

    def exec(self, service: str, argv: list[str], *, env: dict[str, str] | None = None) -> int:
        raise self.p.refuse()

    def _run(self, which: str) -> None:
        commands = (self.p.settings.get("freeze") or {}).get(which) or []
        if not commands:
            raise Unsupported(f"{self.p.label} names no freeze: {which} commands")
        for argv in commands:
            try:
                done = subprocess.run(argv, capture_output=True, timeout=300, check=False)  # noqa: S603 - argv
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ProviderError(f"{self.p.label}: freeze {which} command {argv[0]} failed: {exc}.",
                                    code="existing.freeze") from None
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).decode(errors="replace")[-800:]
                raise ProviderError(f"{self.p.label}: freeze {which} command {argv[0]} exited with "
                                    f"{done.returncode}:\n{tail}", code="existing.freeze")

    def pause(self, services: list[str]) -> None:
        self._run("stop")

    def resume(self, services: list[str]) -> None:
        self._run("start")


class EnvFileSecrets(SecretStore):
    """The app's secrets, read from its env file (else this machine's environment) by the stack's names."""

    def __init__(self, provider: ExistingProvider):
        self.p = provider

    def names(self) -> list[str]:
        env = self.p.env()
        return sorted(n for n in self.p.stack.secrets if n in env or n in os.environ)

    def read(self, name: str) -> SecretValue | None:
        value = self.p.env().get(name, os.environ.get(name))
        return SecretValue(value) if value else None

    def write(self, name: str, value: SecretValue) -> None:
        raise self.p.refuse()

    delete = write


class AdoptedFolders(FolderReads):
    """The app's media folders as they are: every regular file under a folder is an object whose key is its
    path there; anything that is not a file (a link, a FIFO) is an error naming it, as in every store.
    Nothing is written, not even a checksum cache: checksums are computed on every read."""

    def __init__(self, provider: ExistingProvider):
        self.p, self.label = provider, provider.label
        self.folders = {b: str(provider.folder(b)) for b in provider.stack.buckets}

    def _bucket(self, bucket: str) -> layout.Bucket:
        if bucket not in self.folders:
            raise ProviderError(f"{self.label}: no folder for bucket {bucket}.", code="objects.no_bucket")
        if not os.path.isdir(self.folders[bucket]):  # never an empty listing for a folder gone or mistyped
            raise ProviderError(f"{self.label}: bucket {bucket}: {self.folders[bucket]} is not a folder.",
                                code="objects.no_bucket")
        return layout.Bucket.alone(self.folders[bucket], bucket)

    def bucket_exists(self, bucket: str) -> bool:
        return bucket in self.folders and os.path.isdir(self.folders[bucket])

    def _info(self, data: str, meta: str | None, key: str | None) -> ObjectInfo | None:
        try:
            size = os.lstat(data).st_size
            sha, md5 = hash_file(data)
        except FileNotFoundError:  # the app removed it since the listing
            return None
        return ObjectInfo(key, size, sha, md5, {"content_type": None})

    def write(self, bucket: str, key: str, stream, *, size: int | None = None,
              content_type: str | None = None) -> ObjectInfo:
        raise self.p.refuse()

    def delete(self, bucket: str, key: str) -> None:
        raise self.p.refuse()

    def create_bucket(self, bucket: str) -> None:
        raise self.p.refuse()
