"""A deployment Lifeboat did not make (``type: existing``): the app as its owner already runs it, on SSH
hosts (``hosts:``) or on this machine, described so that ``migrate`` and ``backup`` can take it as their
source.

Lifeboat reads it and never changes it: its PostgreSQL is reached by the URL the app itself uses (through an
SSH tunnel from the app's host, where the URL means what it means to the app), its Redis likewise, its media
are the app's own folders in whatever layout the app writes (every file is an object, its key the path under
the folder; read on their host by the same programs as a bare-metal store, with nothing written there), its
secrets are read from the app's own env file by their names. The one change ever made is the freeze a
migration asks for, through the commands the stack gives (``freeze: stop`` / ``start``), run where they
say. ``up``, ``destroy`` and every command that would write to it refuse (exit 2).

Paths and commands are on the first host of ``hosts:`` unless they name another (``NAME:/path``, ``{host:
NAME, run: [...]}``); with no ``hosts:``, on this machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.request
from urllib.parse import parse_qs, unquote, urlsplit

from providers.common.pgremote import PostgresAt
from toolkit.config.schema import AnyOf, DictOf, Field, Int, ListOf, Map, Str
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
from toolkit.stores.s3 import S3Store  # (boto3 itself is imported when a client is made)
from toolkit.stores.sftpstore import RemoteDirectoryStore

ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
HOST_NAME = r"[a-z0-9][a-z0-9-]{0,62}"
HOST = Map({
    "name": Field(Str(pattern=HOST_NAME, expected="a host name (lowercase letters, digits, -)"), required=True),
    "address": Field(Str(expected="an IP address, a DNS name or a Host alias of ~/.ssh/config"), required=True),
    "port": Field(Int(min=1, max=65535, expected="an SSH port")),
    "user": Field(Str(expected="the SSH login user")),
    "key": Field(Str(expected="a private key file")),
    "host_keys": Field(ListOf(Str(pattern=r"(ssh-ed25519|ecdsa-sha2-nistp\d+|ssh-rsa) [A-Za-z0-9+/=]+",
                                  expected='a public key "TYPE BASE64"'), min_items=1),
                       doc="pinned keys: used instead of known_hosts"),
    "jump": Field(Str(expected="the name of another host (or an ssh_config alias) to connect through")),
})
FROM_ENV = r".*\$\{[A-Za-z_][A-Za-z0-9_]*\}.*"
S3_BUCKET = Map({
    "s3": Field(Str(expected="the bucket's name, or ${VAR} of the env file"), required=True),
    "endpoint": Field(Str(expected="the S3 endpoint's URL, or ${VAR}"), doc="none: AWS itself"),
    "region": Field(Str(expected="a region name, or ${VAR}"), doc="default us-east-1"),
    "access_key_id": Field(Str(pattern=FROM_ENV, expected="${VAR}: the env file's variable holding it")),
    "secret_access_key": Field(Str(pattern=FROM_ENV, expected="${VAR}: the env file's variable holding it (a "
                                                              "key never sits in the stack file)")),
})
BUCKET_PLACE = AnyOf((lambda v: isinstance(v, str), Str(expected="a folder path")),
                     (lambda v: isinstance(v, dict), S3_BUCKET),
                     expected="a folder path, or {s3: NAME, endpoint: ...} for a bucket the app keeps in S3")
COMMAND = ListOf(Str(), min_items=1)
FREEZE_COMMAND = AnyOf((lambda v: isinstance(v, list), COMMAND),
                       (lambda v: isinstance(v, dict), Map({
                           "host": Field(Str(pattern=HOST_NAME, expected="a host of hosts:"), required=True),
                           "run": Field(COMMAND, required=True)})),
                       expected="a command (an argv list) or {host: NAME, run: [argv]}")


def refused(label: str, name: str) -> BadInput:
    """Exit 2: an existing target is never written to."""
    return BadInput(f"{label}: an existing target is only read: Lifeboat never changes a deployment it did not "
                    "make (the freeze commands a migration runs excepted).",
                    hint=f"it is a source: `lifeboat migrate --from {name} --to ...` or `lifeboat backup --from "
                         f"{name}`.", code="target.adopted")


def split_place(value: str, hosts: list[str]) -> tuple[str | None, str]:
    """``NAME:/path`` as (NAME, /path) when it looks like one (NAME a host name, then a colon); else
    (None, value). A NAME not among ``hosts`` is returned as it is, for the settings check to name."""
    name, colon, rest = value.partition(":")
    if colon and re.fullmatch(HOST_NAME, name) and (name in hosts or rest.startswith("/")):
        return name, rest
    return None, value


def parse_env_file(text: str) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of an app's env file (docker's and systemd's ``EnvironmentFile`` form, with
    ``export``, comments and one level of single or double quotes)."""
    out = {}
    for line in text.splitlines():
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
    DESCRIPTION = ("a deployment Lifeboat did not make, on SSH hosts or this machine: read only, a source for "
                   "migrate and backup")
    SERVICES = frozenset({"compute", "database", "cache", "objects", "secrets"})
    FEATURES = {"adopted": True, "runs_services": False}
    SETTINGS = {
        "hosts": Field(ListOf(HOST, min_items=1),
                       doc="the SSH hosts the app runs on (none: this machine); the paths and commands below are "
                           "on the first unless they name another (NAME:/path)"),
        "known_hosts": Field(Str(expected="a known_hosts file"), doc="default ~/.ssh/known_hosts"),
        "ssh_config": Field(Str(expected="an OpenSSH client config file"), doc="default ~/.ssh/config when present"),
        "connect_timeout": Field(Int(min=1, max=300), default=10),
        "env_file": Field(Str(expected="a path"), doc="the app's own env file (KEY=VALUE lines): its secrets are "
                                                      "read from it by their names, and the variables named below"),
        "database_url_var": Field(Str(pattern=ENV_NAME, expected="an environment variable name"),
                                  doc="the variable (in env_file; with no hosts, else this machine's "
                                      "environment) holding the PostgreSQL URL the app uses"),
        "redis_url_var": Field(Str(pattern=ENV_NAME, expected="an environment variable name"),
                               doc="the variable holding the Redis URL the app uses"),
        "reach_via": Field(Str(pattern=HOST_NAME, expected="a host of hosts:, or none"),
                           doc="the host whose view the database and Redis URLs are (reached through an SSH "
                               "tunnel from it): default the env file's host; none: directly from this machine"),
        "buckets": Field(DictOf(BUCKET_PLACE), default=dict,
                         doc="each bucket of the stack: the folder the app keeps it in (any layout: every file "
                             "under it is an object, its key the path under the folder), or the S3 bucket "
                             "({s3: NAME, endpoint:, region:, access_key_id:, secret_access_key:}, values "
                             "${VAR} of the env file where the app keeps them)"),
        "health": Field(DictOf(Str(pattern=r"https?://\S+", expected="an http(s) URL")), default=dict,
                        doc="a service's health URL, for status (fetched on the first host, or here)"),
        "addresses": Field(ListOf(Str(expected="an address")), default=list,
                           doc="where the app is served now (what DNS points at), for a migration's rollback"),
        "freeze": Field(Map({
            "stop": Field(ListOf(FREEZE_COMMAND), default=list,
                          doc="commands (argv lists, or {host: NAME, run: [argv]}) that stop the app's writers, "
                              "run in order"),
            "start": Field(ListOf(FREEZE_COMMAND), default=list,
                           doc="commands that start them again (a failed or rolled back migration)"),
        }), doc="how a migration freezes the app for its final copy (the only change made here)"),
    }

    @staticmethod
    def check_settings(settings: dict, where, report, raw) -> None:
        """Every host a path, a command or reach_via names is one of hosts:; paths on a host are absolute."""
        from toolkit.config.schema import item_line, value_line

        names = [h["name"] for h in settings.get("hosts") or []]
        shown = ", ".join(names) or "none given"

        def named(host: str | None, at, what: str) -> None:
            if host is not None and host not in names:
                report.add(at, f'{what} names host "{host}", which is not one of hosts: ({shown}).',
                           code="existing.unknown_host")

        def path(value: str, at) -> None:
            host, folder = split_place(value, names)
            named(host, at, "the path")
            if (host or names) and not folder.startswith("/"):
                report.add(at, f"{value!r} is on an SSH host: give an absolute path.", code="existing.relative")

        if settings.get("env_file"):
            path(settings["env_file"], where.child("env_file", value_line(raw, "env_file")))
        for bucket, folder in (settings.get("buckets") or {}).items():
            buckets = raw.get("buckets") if isinstance(raw, dict) else None
            if isinstance(folder, str):
                path(folder, where.child("buckets", value_line(raw, "buckets")).child(bucket,
                                                                                       value_line(buckets, bucket)))
        via = settings.get("reach_via")
        if via and via != "none":
            named(via, where.child("reach_via", value_line(raw, "reach_via")), "reach_via")
        freeze = raw.get("freeze") if isinstance(raw, dict) else None
        for which in ("stop", "start"):
            listed = freeze.get(which) if isinstance(freeze, dict) else None
            at = where.child("freeze", value_line(raw, "freeze")).child(which, value_line(freeze, which))
            for index, command in enumerate((settings.get("freeze") or {}).get(which) or []):
                if isinstance(command, dict):
                    named(command["host"], at.child(index, item_line(listed, index)), "the command")

    def __init__(self, stack, target):
        super().__init__(stack, target)
        self.root = stack.root
        self._directory = None
        self._tunnels: dict = {}  # (via, host, port) -> (context, local end)
        self._env: dict[str, str] | None = None  # the env file, read once (over SSH, a session each time)
        self._s3 = None  # the store of buckets kept in S3, made once (its client loads botocore's model)

    # ------------------------------------------------------------------ where things are
    def host_names(self) -> list[str]:
        return [h["name"] for h in self.settings.get("hosts") or []]

    def place(self, value: str) -> tuple[str | None, str]:
        """(host, path) of a path setting: ``NAME:/path`` on that host, a plain path on the first host, or
        with no hosts on this machine (relative to the stack file)."""
        host, path = split_place(value, self.host_names())
        if host is None and self.host_names():
            host = self.host_names()[0]
        if host is None and not os.path.isabs(path):
            path = str(self.root / path)
        return host, path

    def supports(self, feature: str) -> bool:
        if feature == "ssh_keys":  # `hosts trust` (reads keys, changes nothing there)
            return bool(self.host_names())
        return super().supports(feature)

    @property
    def specs(self):
        """The hosts as a bare-metal target's (no roles: nothing runs there by Lifeboat's doing)."""
        from toolkit.transport.hosts import host_specs

        return host_specs({"hosts": self.settings.get("hosts") or []}, self.root)

    @property
    def directory(self):
        """The hosts as verified SSH connections (host keys from known_hosts or pinned, never added)."""
        if self._directory is None:
            from toolkit.transport.hosts import SshDirectory

            self._directory = SshDirectory(self.specs, known_hosts=self.settings.get("known_hosts"),
                                           ssh_config=self.settings.get("ssh_config"), base=self.root,
                                           connect_timeout=self.settings.get("connect_timeout", 10),
                                           target=self.target.name)
        return self._directory

    def conn(self, host: str | None):
        """The SSH connection to ``host`` (its key checked against known_hosts), or this machine for None."""
        if host is None:
            from toolkit.transport.connection import LocalConnection

            return LocalConnection()
        return self.directory.connection(host)

    def shown(self, host: str | None, path: str) -> str:
        return f"{host}:{path}" if host else path

    def reach_host(self) -> str | None:
        """The host the database and Redis URLs are reached from (through a tunnel), or None: directly."""
        via = self.settings.get("reach_via")
        if via == "none" or not self.host_names():
            return None
        if via:
            return via
        return self.place(self.settings["env_file"])[0] if self.settings.get("env_file") else self.host_names()[0]

    def reach(self, host: str, port: int) -> tuple[str, int]:
        """(host, port) on this machine that reaches ``host:port`` as the app's host sees it: a tunnel through
        that host kept while this provider lives, or the address itself."""
        via = self.reach_host()
        if via is None:
            return host, port
        key = (via, host, port)
        if key not in self._tunnels:
            from toolkit.transport.tunnel import forward

            ctx = forward(self.conn(via), host, port)
            self._tunnels[key] = (ctx, ctx.__enter__())
        return self._tunnels[key][1]

    def close_tunnels(self) -> None:
        """End the tunnels and SSH connections (they are daemon threads: a command's exit ends them too)."""
        for ctx, _ in self._tunnels.values():
            ctx.__exit__(None, None, None)
        self._tunnels.clear()
        if self._directory is not None:
            self._directory.close()
            self._directory = None

    # ------------------------------------------------------------------ what the settings say
    def env(self) -> dict[str, str]:
        """The app's env file, read once for this provider (every secret and URL is looked up in it)."""
        if self._env is None:
            self._env = self._read_env()
        return self._env

    def _read_env(self) -> dict[str, str]:
        setting = self.settings.get("env_file")
        if not setting:
            return {}
        host, path = self.place(setting)
        try:
            data = self.conn(host).read_bytes(path)
        except OSError as exc:
            raise ProviderUnreachable(f"{self.label}: cannot read env_file {self.shown(host, path)}: {exc}.",
                                      code="existing.env_file") from None
        if data is None:
            raise ProviderUnreachable(f"{self.label}: env_file {self.shown(host, path)} does not exist.",
                                      code="existing.env_file")
        return parse_env_file(data.decode("utf-8", "replace"))

    def variable(self, setting: str) -> SecretValue:
        name = self.settings.get(setting)
        if not name:
            raise BadInput(f"{self.label}: the stack has a {setting.split('_')[0]} and the target does not say where "
                           f"it is: give {setting} (the variable the app reads its URL from).",
                           code="existing.unset")
        here = {} if self.host_names() else os.environ  # on a host, the app's environment is its env file
        value = self.env().get(name, here.get(name))
        if not value:
            raise ProviderUnreachable(f"{self.label}: {name} ({setting}) is not set in env_file"
                                      + ("." if self.host_names() else " nor in this machine's environment."),
                                      code="existing.unset")
        return SecretValue(value)

    def folder(self, bucket: str) -> tuple[str | None, str]:
        """(host, folder) where the app keeps ``bucket`` (a folder; ``in_s3`` says when it is not)."""
        path = (self.settings.get("buckets") or {}).get(bucket)
        if not path:
            raise BadInput(f"{self.label}: bucket {bucket} of the stack has no folder under buckets:.",
                           hint=f"buckets: {{{bucket}: /path/the/app/keeps/it/in}}, or {{{bucket}: {{s3: NAME, "
                                "endpoint: ...}} for a bucket in S3", code="existing.unset")
        if isinstance(path, dict):
            raise ProviderError(f"{self.label}: bucket {bucket} is in S3, not a folder.", code="existing.in_s3")
        return self.place(path)

    def in_s3(self, bucket: str) -> bool:
        return isinstance((self.settings.get("buckets") or {}).get(bucket), dict)

    def s3_place(self, bucket: str) -> dict[str, str | None]:
        """Where the app keeps ``bucket`` in S3: its settings with each ``${VAR}`` read from the app's env file
        (on this machine with no hosts: or its environment), as the app reads them."""
        from toolkit.config.envtemplate import render

        here = {} if self.host_names() else dict(os.environ)
        context = {**here, **self.env()}
        out: dict[str, str | None] = {}
        for key, value in (self.settings.get("buckets") or {})[bucket].items():
            try:
                out[key] = render(str(value), context)
            except KeyError as exc:
                raise ProviderUnreachable(f"{self.label}: bucket {bucket}: {key} refers to ${{{exc.args[0]}}}, "
                                          "which is not set in env_file" + ("." if self.host_names() else
                                                                            " nor in this machine's environment."),
                                          code="existing.unset") from None
        return out

    def shown_bucket(self, bucket: str) -> str:
        if self.in_s3(bucket):
            place = self.s3_place(bucket)
            return f"s3://{place['s3']}" + (f" at {place['endpoint']}" if place.get("endpoint") else "")
        return self.shown(*self.folder(bucket))

    def is_folder(self, host: str | None, path: str) -> bool:
        if host is None:
            return os.path.isdir(path)
        return self.conn(host).run(["test", "-d", path], check=False).ok

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
            if self.in_s3(bucket):
                if not self.objects().bucket_exists(bucket):
                    raise ProviderUnreachable(f"{self.label}: bucket {bucket}: {self.shown_bucket(bucket)} does not "
                                              "exist there.", code="existing.no_bucket")
            elif not self.is_folder(*self.folder(bucket)):
                raise ProviderUnreachable(f"{self.label}: bucket {bucket}: {self.shown_bucket(bucket)} is not a "
                                          "folder.", code="existing.no_folder")
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
            if self.in_s3(bucket):
                if self.objects().bucket_exists(bucket):
                    out.append(Resource("bucket", bucket, {"s3": self.shown_bucket(bucket)}))
                continue
            host, folder = self.folder(bucket)
            if self.is_folder(host, folder):
                out.append(Resource("bucket", bucket, {"folder": self.shown(host, folder)}))
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

    def objects(self):
        in_s3 = [b for b in self.stack.buckets if self.in_s3(b)]
        if in_s3:
            return self._s3_objects(in_s3)
        places = {b: self.folder(b) for b in self.stack.buckets}
        hosts = {host for host, _ in places.values()}
        if hosts <= {None}:
            return AdoptedFolders(self)
        if len(hosts) > 1:
            raise BadInput(f"{self.label}: the buckets' folders are on more than one host ({', '.join(sorted(map(str, hosts)))}); "
                           "an existing target reads them on one.", code="existing.buckets_apart")
        host = hosts.pop()
        return AdoptedRemoteFolders(self, self.conn(host), {b: folder for b, (_, folder) in places.items()})

    def _s3_objects(self, in_s3: list[str]):
        """The buckets the app keeps in S3, read with the app's own credentials (one endpoint and key pair)."""
        if self._s3 is not None:
            return self._s3
        if len(in_s3) != len(self.stack.buckets):
            raise BadInput(f"{self.label}: some buckets are in S3 ({', '.join(in_s3)}) and some in folders; an "
                           "existing target reads them in one place.", code="existing.buckets_apart")
        places = {b: self.s3_place(b) for b in in_s3}
        where = {tuple((k, v) for k, v in sorted(p.items()) if k != "s3") for p in places.values()}
        if len(where) > 1:
            raise BadInput(f"{self.label}: the buckets in S3 are at more than one endpoint or with more than one "
                           "key pair; an existing target reads them with one.", code="existing.buckets_apart")
        first = next(iter(places.values()))
        self._s3 = AdoptedS3(self, AdoptedS3Api(first, self.label), {b: str(p["s3"]) for b, p in places.items()})
        return self._s3

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
        self._host, self._port = parts.hostname, parts.port or 5432  # as the app's host sees it
        self._user, self._password = unquote(parts.username or ""), SecretValue(unquote(parts.password or ""))
        self.database = unquote(parts.path.lstrip("/")) or provider.stack.postgres.database
        self.sslmode = (parse_qs(parts.query).get("sslmode") or [None])[-1]

    def endpoint(self) -> tuple[str, int]:
        return self.p.reach(self._host, self._port)

    def where(self) -> str:
        via = self.p.reach_host()
        return f"{self._host}:{self._port}" + (f" (as {via} sees it)" if via else "")

    def login(self, admin: bool = False) -> tuple[str, SecretValue]:
        return self._user, self._password

    def restore(self, stream, *, clean=True, part=None):
        raise self.p.refuse()


class ExistingCache(CacheService):
    def __init__(self, provider: ExistingProvider):
        self.p = provider

    def _url(self):
        return urlsplit(self.p.variable("redis_url_var").reveal_text())

    def connection_url(self) -> SecretValue:
        """The app's URL, reaching the server from this machine (through the tunnel where there is one)."""
        parts = self._url()
        host, port = self.p.reach(parts.hostname or "127.0.0.1", parts.port or 6379)
        login = parts.netloc.rpartition("@")[0]
        return SecretValue(parts._replace(netloc=(login + "@" if login else "") + f"{host}:{port}").geturl())

    def where(self) -> str:
        parts = self._url()
        via = self.p.reach_host()
        return f"{parts.hostname}:{parts.port or 6379}" + (f" (as {via} sees it)" if via else "")

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
        hosts = self.p.host_names()
        where = hosts[0] if hosts else "here"
        for service, url in (self.p.settings.get("health") or {}).items():
            healthy = self._fetch(hosts[0], url) if hosts else self._fetch_here(url)
            out.append(Instance(service, 0, where, "running" if healthy else "unreachable", healthy, url))
        return out

    @staticmethod
    def _fetch_here(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - the operator's own URL
                return resp.status < 400
        except OSError:
            return False

    def _fetch(self, host: str, url: str) -> bool:
        """Whether ``url`` answers below 400 on ``host`` (fetched there by its python3: the URL means what it
        means to the app's host, often a loopback address)."""
        program = ("import sys, urllib.request\ntry:\n    urllib.request.urlopen(sys.argv[1], timeout=5).close()\n"
                   "except Exception:\n    sys.exit(1)\n")
        try:
            return self.p.conn(host).run(["python3", "-c", program, url], check=False, timeout=30).ok
        except OSError:
            return False

    def addresses(self, role: str) -> list[str]:
        return list(self.p.settings.get("addresses") or [])

    def exec(self, service: str, argv: list[str], *, env: dict[str, str] | None = None) -> int:
        raise self.p.refuse()

    def _run(self, which: str) -> None:
        commands = (self.p.settings.get("freeze") or {}).get(which) or []
        if not commands:
            raise Unsupported(f"{self.p.label} names no freeze: {which} commands")
        hosts = self.p.host_names()
        for command in commands:
            host, argv = (command["host"], command["run"]) if isinstance(command, dict) else \
                (hosts[0] if hosts else None, command)
            shown = f"{argv[0]}" + (f" on {host}" if host else "")
            try:
                if host is None:
                    done = subprocess.run(argv, capture_output=True, timeout=300, check=False)  # noqa: S603 - argv
                    code, out, err = done.returncode, done.stdout, done.stderr
                else:  # an argv list, quoted for the host's shell by the connection (never pasted)
                    done = self.p.conn(host).run(argv, check=False, timeout=300)
                    code, out, err = done.exit_code, done.stdout, done.stderr
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ProviderError(f"{self.p.label}: freeze {which} command {shown} failed: {exc}.",
                                    code="existing.freeze") from None
            if code != 0:
                tail = (err or out).decode(errors="replace")[-800:]
                raise ProviderError(f"{self.p.label}: freeze {which} command {shown} exited with {code}:\n{tail}",
                                    code="existing.freeze")

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
        self.folders = {b: provider.folder(b)[1] for b in provider.stack.buckets}

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


class AdoptedS3Api:
    """The S3 client of an app's own bucket: its endpoint (none: AWS), region and keys as the app has them
    (none: this machine's AWS credentials, as boto3 finds them)."""

    def __init__(self, place: dict, label: str):
        self.place, self.label = place, label
        self._client = None

    def client(self, service: str = "s3"):
        if self._client is None:
            import boto3

            from toolkit.stores.s3 import botocore_session, client_config, unsigned_payload_when_checksummed

            keys = {}
            if self.place.get("access_key_id") or self.place.get("secret_access_key"):
                keys = {"aws_access_key_id": self.place.get("access_key_id"),
                        "aws_secret_access_key": self.place.get("secret_access_key")}
            session = boto3.session.Session(botocore_session=botocore_session())
            self._client = unsigned_payload_when_checksummed(session.client(
                "s3", endpoint_url=self.place.get("endpoint") or None, region_name=self.place.get("region") or "us-east-1",
                config=client_config("path" if self.place.get("endpoint") else "virtual"), **keys))
        return self._client


class AdoptedS3(S3Store):
    """The buckets an app keeps in S3, read as they are with the app's own credentials: listed, read and
    hashed (a SHA-256 the app never recorded is computed from the bytes), never written, tagged or
    deleted."""

    def __init__(self, provider: ExistingProvider, api: AdoptedS3Api, names: dict[str, str]):
        super().__init__(api, names)
        self.p = provider

    def bucket_exists(self, bucket: str) -> bool:
        import botocore.exceptions

        try:
            self.s3.head_bucket(Bucket=self.real(bucket))
            return True
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
                return False
            raise self._fail(f"bucket {bucket} ({self.real(bucket)})", exc) from None

    def write(self, bucket, key, stream, *, size=None, content_type=None):
        raise self.p.refuse()

    def delete(self, bucket, key):
        raise self.p.refuse()

    def purge(self, bucket: str) -> int:
        raise self.p.refuse()

    def create_bucket(self, bucket: str) -> None:
        raise self.p.refuse()

    def remove_bucket(self, bucket: str) -> None:
        raise self.p.refuse()


class AdoptedRemoteFolders(RemoteDirectoryStore):
    """The app's media folders on its SSH host, as they are: listed, hashed and read there by the programs of
    a bare-metal store (toolkit/stores/sftpstore.py) told the folder is a bucket by itself (``alone=``), so
    nothing is written there, not even a checksum cache."""

    def __init__(self, provider: ExistingProvider, conn, folders: dict[str, str]):
        super().__init__(conn, "/")
        self.p, self.folders = provider, folders

    def _where(self, bucket: str) -> list[str]:
        if bucket not in self.folders:
            raise ProviderError(f"{self.p.label}: no folder for bucket {bucket}.", code="objects.no_bucket")
        return ["alone=" + self.folders[bucket], bucket]

    def _no_bucket(self, bucket: str) -> ProviderError:
        return ProviderError(f"{self.p.label}: bucket {bucket}: {self.conn.host}:{self.folders.get(bucket)} is not "
                             "a folder.", code="objects.no_bucket")

    def bucket_exists(self, bucket: str) -> bool:
        return bucket in self.folders and self.conn.run(["test", "-d", self.folders[bucket]], check=False).ok

    def write(self, bucket, key, stream, *, size=None, content_type=None):
        raise self.p.refuse()

    def write_batch(self, bucket, items):
        raise self.p.refuse()

    def delete(self, bucket: str, key: str) -> None:
        raise self.p.refuse()

    def create_bucket(self, bucket: str) -> None:
        raise self.p.refuse()

    def remove_bucket(self, bucket: str) -> None:
        raise self.p.refuse()

    def convert_layout(self, log=None) -> int:
        raise self.p.refuse()

    def sweep_partial(self) -> int:
        return 0
