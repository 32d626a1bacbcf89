"""The ``local`` provider (see the package's docstring)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets as pysecrets
import shlex
import shutil
import sys
import time
from pathlib import Path

from providers.common.hostservices import HostCache
from providers.local.services import LocalCompute, LocalDatabase, LocalSecrets
from providers.local.state import PG_SUPERUSER, LocalState, pid_alive
from toolkit.config.envtemplate import resolve
from toolkit.config.schema import Field, Int, Str
from toolkit.contract import (
    KindDispatch,
    Provider,
    Resource,
    SecretValue,
    bucket_var,
    desired_resources,
)
from toolkit.dns.zonefile import ZoneFileDns
from toolkit.errors import BadInput, CommandFailed, ProviderError, tail
from toolkit.hostops.builds import SKIP_IN_BUILD, release_id, requirements_of
from toolkit.hostops.postgres import PostgresHost
from toolkit.hostops.redis import RedisHost
from toolkit.hostops.releases import Releases
from toolkit.hostops.runtime import ProcessRuntime
from toolkit.paths import private_dir, write_private
from toolkit.run.locks import FileLock, FileLocked
from toolkit.stores.dirstore import DirectoryStore
from toolkit.stores.layout import LAYOUT_NAMES
from toolkit.transport.connection import LocalConnection


class LocalProvider(FileLocked, KindDispatch, Provider):
    TYPE = "local"
    DESCRIPTION = "this machine: processes, its own PostgreSQL and Redis, a directory store, a zone file"
    SERVICES = frozenset({"compute", "database", "cache", "objects", "dns", "secrets"})
    FEATURES = {"runtime.process": True, "runtime.docker": False, "replicas": True, "tls": False,
                "lock": True, "public_addresses": False}
    SETTINGS = {
        "state_dir": Field(Str(expected="a directory for this target's state (relative to the stack file)"),
                           doc="default .lifeboat/<target> next to the stack file"),
        "user": Field(Str(pattern=r"[a-z_][a-z0-9_-]{0,31}", expected="a system account name"),
                      default="lifeboat", doc="account PostgreSQL runs as when Lifeboat runs as root"),
        "http_port": Field(Int(min=0, max=65535, expected="a TCP port, or 0 to pick a free one"), default=0,
                           doc="port of the first web replica; 0 picks a free one"),
        "address": Field(Str(pattern=r"127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}",
                             expected="a loopback IPv4 address (127.x.y.z)"), default="127.0.0.1",
                         doc="where the web services listen, and what DNS records of this target point at"),
        "postgres_bin": Field(Str(expected="the directory holding initdb and pg_ctl")),
        "redis_server": Field(Str(expected="the path of redis-server")),
    }

    def __init__(self, stack, target):
        super().__init__(stack, target)
        configured = self.settings.get("state_dir")
        root = (stack.root / configured) if configured else stack.root / ".lifeboat" / target.name
        self.state = LocalState(root.resolve(), stack.name, target.name)

    def scratch_settings(self, name: str) -> dict:
        root = self.state.root.parent / name
        return {**self.settings, "state_dir": os.path.relpath(root, self.stack.root), "http_port": 0}

    # ------------------------------------------------------------------ helpers
    @property
    def address(self) -> str:
        return self.settings.get("address") or "127.0.0.1"

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    def pg_user(self) -> str | None:
        return self.settings.get("user") or "lifeboat" if self.as_root else None

    def wal_spool(self) -> Path:
        return self.pg_root() / "wal-archive"

    def pg_root(self) -> Path:
        recorded = self.state.load().get("pg_root")
        if recorded:
            return Path(recorded)
        if self.as_root:
            ident = hashlib.sha256(str(self.state.root).encode()).hexdigest()[:10]
            return Path("/var/lib/lifeboat") / f"{self.stack.name}-{self.target.name}-{ident}"
        return self.state.root / "postgres"

    def pg_bindir(self) -> Path:
        if self.settings.get("postgres_bin"):
            return Path(self.settings["postgres_bin"])
        version = self.stack.postgres.version if self.stack.postgres else None
        candidates = []
        if version:
            candidates.append(Path(f"/usr/lib/postgresql/{version}/bin"))
        found = shutil.which("initdb")
        if found:
            candidates.append(Path(os.path.realpath(found)).parent)
        for candidate in candidates:
            if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
                return candidate
        raise ProviderError(
            f"{self.label}: PostgreSQL {version} server binaries (initdb, pg_ctl) were not found.",
            hint=f"install them (Debian: apt-get install postgresql-{version}) or set postgres_bin.",
            code="local.missing_postgres")

    def _redis_server(self) -> str | None:
        return self.settings.get("redis_server") or shutil.which("redis-server") or \
            ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)

    def redis_binary(self) -> str:
        found = self._redis_server()
        if not found:
            raise ProviderError(f"{self.label}: the stack uses Redis but redis-server is not installed.",
                                hint="install it (Debian: apt-get install redis-server) or set redis_server.",
                                code="local.missing_redis")
        return found

    def internal_secret(self, name: str, *, create: bool = True) -> SecretValue | None:
        """Passwords and keys Lifeboat makes for itself; generated once, kept 0600 in the state dir."""
        path = self.state.internal / name
        try:
            return SecretValue(path.read_bytes())
        except FileNotFoundError:
            if not create:
                return None
            value = pysecrets.token_urlsafe(32)
            private_dir(self.state.root)
            write_private(path, value)
            return SecretValue(value)

    def http_ok(self, url: str, timeout: float = 2.0) -> bool:
        """A web service's health, asked as a proxy in front of it would (toolkit/hostops/health.py)."""
        from toolkit.hostops.health import healthy, proxy_headers

        return healthy(url, proxy_headers(self.stack), timeout=timeout)

    def free_space(self) -> list[dict]:
        kinds = [k for k, wanted in (("database", self.stack.postgres), ("objects", self.stack.buckets)) if wanted]
        if not kinds:
            return []
        path = self.state.root
        while not path.exists():
            path = path.parent
        return [{"where": str(self.state.root), "kinds": kinds, "free": shutil.disk_usage(path).free}]

    # ------------------------------------------------------------------ contract: preflight
    def check(self) -> dict:
        facts = {"state_dir": str(self.state.root)}
        if self.stack.postgres:
            bindir = self.pg_bindir()
            out = LocalConnection().run([str(bindir / "initdb"), "--version"]).text.strip()
            major = int(out.split()[-1].split(".")[0])
            if major != self.stack.postgres.version:
                raise ProviderError(
                    f"{self.label}: the stack asks for PostgreSQL {self.stack.postgres.version}, "
                    f"this machine has {major} ({bindir}).",
                    hint=f"install postgresql-{self.stack.postgres.version} or set postgres_bin.",
                    code="local.postgres_version")
            facts["postgres"] = out
            share = self._pg_share(bindir)
            missing = [e for e in self.stack.postgres.extensions if not (share / f"{e}.control").exists()]
            if missing:
                raise ProviderError(f"{self.label}: PostgreSQL extension(s) {', '.join(missing)} are not "
                                    f"installed ({share}).", hint="install the package that ships them "
                                    "(Debian: postgresql-contrib for most).", code="local.missing_extension")
        if self.stack.redis is not None:
            binary = self.redis_binary()
            facts["redis"] = LocalConnection().run([binary, "--version"]).text.strip()
        for svc in self.stack.services.values():
            if svc.image and not svc.build:
                raise BadInput(f'service "{svc.name}" runs the image {svc.image}; the local provider runs '
                               "processes from a build: directory and has no container runtime.",
                               hint="give the service build: (a directory with the app), or run it on a "
                                    "provider with the docker runtime.", code="local.image_unsupported")
        return facts

    def _pg_share(self, bindir: Path) -> Path:
        try:
            out = LocalConnection().run([str(bindir / "pg_config"), "--sharedir"]).text.strip()
            return Path(out) / "extension"
        except CommandFailed:
            return Path(f"/usr/share/postgresql/{self.stack.postgres.version}/extension")

    # ------------------------------------------------------------------ contract: lifecycle
    def observe(self) -> list[Resource]:
        state = self.state.load()
        out: list[Resource] = []
        pg = self.stack.postgres
        pg_state = state.get("postgres")
        if pg_state:
            running = self._pg_running()
            wal = {"wal_archive": True} if pg_state.get("wal_archive") else {}
            out.append(Resource("database", pg_state["database"],
                                {"version": pg_state["version"], "extensions": sorted(pg_state.get("extensions", [])),
                                 "running": running, **wal},
                                {"port": state.get("ports", {}).get("postgres"), "data": str(self.pg_root())}))
        elif pg and (self.pg_root() / "data").exists():
            out.append(Resource("database", pg.database, {"version": pg.version, "extensions": [],
                                                          "running": self._pg_running()}))
        if state.get("redis"):
            out.append(Resource("cache", "redis", {"running": self.redis().running()},
                                {"port": state.get("ports", {}).get("redis")}))
        store = DirectoryStore(self.state.objects)
        if self.state.objects.is_dir():
            layout = LAYOUT_NAMES.get(store.layout_found())
            for entry in sorted(self.state.objects.iterdir()):
                if entry.is_dir() and not entry.name.startswith("."):
                    try:
                        count, size = store.stats(entry.name)
                        extra = {"objects": count, "bytes": size}
                    except ProviderError as exc:  # what is wrong in it, shown (never a count that skips it)
                        extra = {"problem": str(exc)}
                    out.append(Resource("bucket", entry.name, {"layout": layout}, extra))
        running = self.supervisor_pid() is not None
        status = self.supervisor_status()
        for name, svc in sorted(state.get("services", {}).items()):
            programs = [status.get(f"{name}.{i}", {}) for i in range(svc.get("replicas", 1))]
            up = running and all(p.get("state") == "running" and pid_alive(p.get("pid")) for p in programs)
            # A release counts as deployed only once it was seen healthy: an `up` killed while waiting
            # for health leaves it unconfirmed, and the next `up` waits again (without a restart).
            release = svc.get("release") if svc.get("confirmed") else None
            out.append(Resource("service", name, {"release": release, "config": svc.get("config"),
                                                  "replicas": svc.get("replicas", 1), "running": up}))
        return out

    def desired(self, resources: list[Resource], secrets: dict[str, SecretValue] | None = None) -> list[Resource]:
        return desired_resources(self.stack, resources, lambda svc: {
            "release": self.release_id(svc), "config": self.config_id(svc, secrets), "replicas": svc.replicas},
            bucket_attrs={"layout": "nested"})

    def finish_destroy(self) -> None:
        self.stop_supervisor()
        pg_root = self.pg_root()
        if pg_root.exists() and pg_root != self.state.root / "postgres":
            shutil.rmtree(pg_root, ignore_errors=True)
        shutil.rmtree(self.state.root, ignore_errors=True)
        # Remove the empty folders above the state dir that Lifeboat made, up to the stack's folder.
        stack_root = self.stack.root.resolve()
        parent = self.state.root.parent
        while parent != stack_root and stack_root in parent.parents:
            try:
                parent.rmdir()  # only when empty
            except OSError:
                break
            parent = parent.parent

    # ------------------------------------------------------------------ database (the host machinery, here)
    def postgres(self, port: int | None = None) -> PostgresHost:
        """This target's cluster, run by toolkit.hostops over a LocalConnection as on any host. As root, it
        runs as the account ``user`` (default lifeboat) with its data under /var/lib/lifeboat."""
        pg = self.stack.postgres
        return PostgresHost(LocalConnection(umask=0o077), base=str(self.pg_root()), version=pg.version if pg else 0,
                            listen="127.0.0.1", port=port or self.state.recorded_port("postgres") or 0,
                            account=self.pg_user() or "", as_root=self.as_root, bindir=str(self.pg_bindir()),
                            wal=self.stack.archives_wal)

    def _pg_running(self) -> bool:
        pidfile = self.pg_root() / "data" / "postmaster.pid"  # no binaries needed to tell (observe, destroy)
        try:
            pid = int(pidfile.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return False
        return pid_alive(pid)

    def _apply_database(self, before: Resource | None, after: Resource) -> None:
        pg = self.stack.postgres
        root = self.pg_root()
        if self.as_root:  # /var/lib/lifeboat: open to the account the cluster runs as
            root.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        self.state.update(pg_root=str(root))
        port = self.state.port_to_start("postgres", running=self._pg_running())
        self.postgres(port).ensure(superuser=PG_SUPERUSER, clients=[], database=pg.database, app_user=pg.user,
                                   superuser_password=self.internal_secret("pg_superuser").reveal(),
                                   app_password=self.internal_secret("pg_app").reveal(), extensions=pg.extensions,
                                   events=self.events)
        self.state.update(postgres={"database": pg.database, "user": pg.user, "version": pg.version,
                                    "extensions": sorted(pg.extensions), "wal_archive": self.stack.archives_wal})

    def pg_connect(self, database: str, *, app: bool = False):
        import psycopg

        pg = self.stack.postgres
        user = pg.user if app else PG_SUPERUSER
        password = self.internal_secret("pg_app" if app else "pg_superuser").reveal_text()
        return psycopg.connect(host="127.0.0.1", port=self.state.port("postgres"), user=user, password=password,
                               dbname=database, connect_timeout=10, autocommit=True)

    def _delete_database(self, resource: Resource) -> None:
        if self._pg_running():
            self.postgres().remove()  # stopped first, and its data never removed while it runs
        shutil.rmtree(self.pg_root(), ignore_errors=True)  # (no server binaries needed when it is down)
        state = self.state.load()
        state.pop("postgres", None)
        state.pop("pg_root", None)
        self.state.save(state)

    def database_url(self) -> SecretValue:
        from urllib.parse import quote

        pg = self.stack.postgres
        password = quote(self.internal_secret("pg_app").reveal_text(), safe="")
        port = self.state.port("postgres")
        return SecretValue(f"postgresql://{pg.user}:{password}@127.0.0.1:{port}/{pg.database}")

    # ------------------------------------------------------------------ cache
    def redis(self, port: int | None = None) -> RedisHost:
        """This target's Redis, run by toolkit.hostops over a LocalConnection as on any host."""
        return RedisHost(LocalConnection(umask=0o077), base=str(self.state.redis), listen="127.0.0.1",
                         port=port or self.state.recorded_port("redis") or 0,
                         binary=self._redis_server() or "redis-server")

    def _apply_cache(self, before: Resource | None, after: Resource) -> None:
        self.redis_binary()  # installed, else a clear error
        private_dir(self.state.root)
        port = self.state.port_to_start("redis", running=self.redis().running())
        self.redis(port).start(self.internal_secret("redis").reveal())
        self.state.update(redis={"version": self.stack.redis.version if self.stack.redis else None})

    def _delete_cache(self, resource: Resource) -> None:
        self.redis().remove()
        state = self.state.load()
        state.pop("redis", None)
        self.state.save(state)

    def redis_url(self) -> SecretValue:
        from urllib.parse import quote

        password = quote(self.internal_secret("redis").reveal_text(), safe="")
        return SecretValue(f"redis://:{password}@127.0.0.1:{self.state.port('redis')}/0")

    # ------------------------------------------------------------------ buckets
    def _apply_bucket(self, before: Resource | None, after: Resource) -> None:
        private_dir(self.state.root)
        store = DirectoryStore(self.state.objects)
        if self.state.objects.is_dir():
            store.convert_layout()  # a store of the flat layout (an older Lifeboat's) gets nested paths
        store.create_bucket(after.name)

    def _delete_bucket(self, resource: Resource) -> None:
        store = DirectoryStore(self.state.objects)
        shutil.rmtree(store.bucket_dir(resource.name), ignore_errors=True)
        for folder in (".meta", ".keys", ".meta/.keys"):
            shutil.rmtree(self.state.objects / folder / resource.name, ignore_errors=True)

    # ------------------------------------------------------------------ services
    def release_id(self, svc) -> str:
        return release_id(svc)

    def config_id(self, svc, secrets: dict[str, SecretValue] | None = None, *, create: bool = False) -> str:
        """Keyed digest of what the service is given (its env, secret values, replicas): a change restarts
        it, and the digest reveals nothing about secret values. Read-only unless ``create``."""
        key = self.internal_secret("release_key", create=create)
        key_bytes = key.reveal() if key is not None else b"not-yet-created"
        env = self.service_env(svc, replica=0, fingerprint=True, secrets=secrets)
        blob = json.dumps({"env": env, "replicas": svc.replicas, "port": svc.port}, sort_keys=True).encode()
        return hmac.new(key_bytes, blob, hashlib.sha256).hexdigest()[:16]

    def releases(self) -> Releases:
        """Releases of the services (copies of their build folders, as on hosts): the previous one stays
        until the next is healthy, and a build command writes into its own copy, never the source."""
        return Releases(LocalConnection(), str(self.state.root))

    def service_cwd(self, svc, release: str | None = None) -> str:
        """Where ``svc`` runs: its release folder (the deployed one unless ``release``), else the state folder."""
        if not svc.build:
            return str(self.state.root)
        if release is None:
            release = (self.state.load().get("services", {}).get(svc.name) or {}).get("release") or self.release_id(svc)
        return self.releases().path(svc.name, release)

    def service_env(self, svc, *, replica: int, fingerprint: bool = False,
                    secrets: dict[str, SecretValue] | None = None, release: str | None = None) -> dict[str, str]:
        """The service's environment. With ``fingerprint`` only what the stack decides (no ports or
        generated passwords), and nothing is written."""
        env = {"LIFEBOAT_STACK": self.stack.name, "LIFEBOAT_SERVICE": svc.name, "LIFEBOAT_REPLICA": str(replica),
               "LIFEBOAT_BIND": self.address}
        if not fingerprint:
            if self.stack.postgres:
                env["DATABASE_URL"] = self.database_url().reveal_text()
            if self.stack.redis is not None:
                env["REDIS_URL"] = self.redis_url().reveal_text()
        for bucket in self.stack.buckets:
            env[bucket_var(bucket, "URL")] = (self.state.objects / bucket).as_uri()
        if svc.is_web and not fingerprint:
            env["PORT"] = str(self._web_port(svc, replica))
        store = self.secrets()
        given = {name: value.reveal_text() for name in svc.secrets
                 if (value := (secrets or {}).get(name) or store.read(name)) is not None}
        templates = self.env_templates(svc)
        # the fingerprint keeps the templates as written (what the stack decides, no ports or passwords)
        env.update(templates if fingerprint else resolve(templates, {**env, **given},
                                                         where=f"{self.label}: service {svc.name}"))
        env.update(given)
        venv = self._venv_dir(svc)
        if venv is not None:
            env["VIRTUAL_ENV"] = str(venv)
            env["PATH"] = f"{venv / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        if svc.build and not fingerprint:
            env["PYTHONPATH"] = self.service_cwd(svc, release)
        return env

    def _web_port(self, svc, replica: int) -> int:
        name = f"{svc.name}.{replica}"
        data = self.state.load()
        if name not in data.get("ports", {}):
            wanted = self.settings.get("http_port") or 0
            first_web = self.stack.web_services()[0].name == svc.name and replica == 0
            if wanted and first_web:
                data.setdefault("ports", {})[name] = wanted
                self.state.save(data)
        return self.state.port(name)

    def _venv_dir(self, svc) -> Path | None:
        requirements = requirements_of(svc)
        if requirements is None:
            return None
        return self.state.builds / f"venv-{hashlib.sha256(requirements).hexdigest()[:12]}"

    def build(self, svc) -> None:
        venv = self._venv_dir(svc)
        if venv is None or (venv / ".complete").exists():
            return
        if venv.exists():
            shutil.rmtree(venv)
        private_dir(venv.parent)
        self.events.step(f"building {svc.name}: a virtualenv with the requirements of {svc.build}")
        log = venv.parent / f"{venv.name}.log"
        conn = LocalConnection()
        base = getattr(sys, "_base_executable", sys.executable)
        try:
            conn.run([base, "-m", "venv", str(venv)], timeout=300)
            (venv / "requirements.txt").write_bytes(requirements_of(svc))
            result = conn.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                               "-q", "-r", str(venv / "requirements.txt")], timeout=900)
            log.write_bytes(result.stdout + result.stderr)
        except CommandFailed as exc:
            raise ProviderError(f"{self.label}: building {svc.name} failed: {exc.message}",
                                code="local.build") from None
        (venv / ".complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def _programs(self) -> list[dict]:
        state = self.state.load()
        paused = set(state.get("paused", []))
        programs = []
        for name, info in sorted(state.get("services", {}).items()):
            if name not in paused:
                programs.extend(info.get("programs", []))
        return programs

    def set_paused(self, services: list[str], paused: bool) -> None:
        data = self.state.load()
        now = set(data.get("paused", []))
        now = (now | set(services)) if paused else (now - set(services))
        data["paused"] = sorted(now)
        self.state.save(data)
        self._start_or_reload_supervisor()
        if paused:
            deadline = time.time() + 60
            while time.time() < deadline:
                status = self.supervisor_status()
                if not any(n.rsplit(".", 1)[0] in services for n in status):
                    return
                time.sleep(0.1)
            raise ProviderError(f"{self.label}: {', '.join(services)} did not stop within 60 s.",
                                code="local.pause")
        for name in services:
            if name in data.get("services", {}):
                self.wait_healthy(self.stack.services[name])

    def runtime(self) -> ProcessRuntime:
        """The services' supervisor: the host machinery's, over a LocalConnection, in the state folder."""
        return ProcessRuntime(LocalConnection(umask=0o077), str(self.state.root), python=sys.executable)

    def supervisor_pid(self) -> int | None:
        return self.runtime().pid()

    def supervisor_status(self) -> dict:
        return self.runtime().status()

    def _start_or_reload_supervisor(self) -> None:
        self.runtime().apply(self._programs())

    def stop_supervisor(self) -> None:
        self.runtime().stop()

    def _apply_service(self, before: Resource | None, after: Resource) -> None:
        svc = self.stack.services[after.name]
        release = after.attrs["release"]
        self.build(svc)
        if svc.build:
            private_dir(self.state.root / "releases")  # the releases inside have release modes (0755/0644)
            cwd = Path(self.releases().upload(svc.name, release, svc.build, SKIP_IN_BUILD))
            if svc.build_command and not (cwd / ".lifeboat-built").exists():
                self.events.step(f"building {svc.name} release {release}: {shlex.join(svc.build_command)}")
                self._phase(svc, release, svc.build_command, "build command", "local.build")
                (cwd / ".lifeboat-built").write_text("ok\n")
        data = self.state.load()
        previous = data.get("services", {}).get(svc.name)
        released = (previous or {}).get("released")
        if svc.release_command and released != release:
            # once per new release, before any replica of it runs: the previous release still serves
            self.events.step(f"release phase of {svc.name} {release}: {shlex.join(svc.release_command)}")
            self._phase(svc, release, svc.release_command, "release command", "local.release_failed",
                        "; the new release was not started and the previous one still serves")
            released = release
        logs = self.state.services / "logs"
        private_dir(logs)
        config = self.config_id(svc, create=True)
        generation = f"{release}:{config}"
        programs = []
        for replica in range(svc.replicas):
            env = self.service_env(svc, replica=replica, release=release)
            # one file per generation: the previous one's stay until the new one is healthy
            env_file = self.state.services / "env" / f"{svc.name}.{replica}.{release}-{config}.json"
            write_private(env_file, json.dumps(env))
            programs.append({"name": f"{svc.name}.{replica}", "argv": list(svc.command),
                             "cwd": self.service_cwd(svc, release), "env_file": str(env_file),
                             "log": str(logs / f"{svc.name}.{replica}.log"), "generation": generation})
        data = self.state.load()
        old_replicas = (previous or {}).get("replicas", 0)
        data.setdefault("services", {})[svc.name] = {
            "release": release, "config": config, "replicas": svc.replicas,
            "programs": programs, "confirmed": False, "generation": generation, "released": released}
        data["paused"] = [n for n in data.get("paused", []) if n != svc.name]  # `up` lifts a freeze
        for replica in range(svc.replicas, old_replicas):
            data.get("ports", {}).pop(f"{svc.name}.{replica}", None)
        self.state.save(data)
        self._start_or_reload_supervisor()
        try:
            self.wait_healthy(svc)
        except ProviderError as exc:
            if not previous or not previous.get("confirmed") or previous.get("generation") == generation:
                raise
            # the previous release (its folder and env files are still there) serves again
            data = self.state.load()
            data["services"][svc.name] = {**previous, "released": released}
            self.state.save(data)
            self._start_or_reload_supervisor()
            try:
                self.wait_healthy(svc)  # (the previous generation's, as the state says now)
                again = f"The previous release ({previous.get('release')}) was started again and is healthy."
            except ProviderError as second:
                again = f"The previous release ({previous.get('release')}) was started again, but: {second.message}"
            raise ProviderError(f"{exc.message} {again}", hint=exc.hint, code=exc.code) from None
        data = self.state.load()
        data["services"][svc.name]["confirmed"] = True
        self.state.save(data)
        self._prune_generations(svc.name, [p["env_file"] for p in programs])
        if svc.build:
            self.releases().prune(svc.name, keep=[release])

    def _prune_generations(self, service: str, keep: list[str]) -> None:
        for path in (self.state.services / "env").glob(f"{service}.*.json"):
            if str(path) not in keep:
                path.unlink(missing_ok=True)

    def _phase(self, svc, release: str, argv, what: str, code: str, after: str = "") -> None:
        """A build or release command of ``svc``, in the folder of ``release``, with its environment (replica 0)."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               **self.service_env(svc, replica=0, release=release)}
        result = LocalConnection().run(list(argv), env=env, cwd=self.service_cwd(svc, release), check=False,
                                       timeout=3600)
        if not result.ok:
            raise ProviderError(f"{self.label}: the {what} of {svc.name} ({shlex.join(argv)}) exited with "
                                f"{result.exit_code}{after}. Its output ends with:\n"
                                f"{tail(result.stdout + result.stderr, lines=15)}", code=code)

    def wait_healthy(self, svc, timeout: float | None = None) -> None:
        timeout = float(timeout or svc.health_timeout or 60)
        deadline = time.time() + timeout
        compute = LocalCompute(self)
        generation = self.state.load()["services"][svc.name]["generation"]
        wanted = {f"{svc.name}.{i}" for i in range(svc.replicas)}
        crashed = False
        while time.time() < deadline:
            # The supervisor reports which generation each program runs: wait for exactly the wanted
            # replicas, on the new generation, all healthy (scaled-down replicas gone).
            status = self.supervisor_status()
            mine = {n for n in status if n.rsplit(".", 1)[0] == svc.name}
            if any(status[n].get("generation") == generation and status[n].get("state") == "crashed" for n in mine):
                crashed = True  # it keeps dying right after it starts: waiting longer will not help
                break
            if mine == wanted and all(status[n].get("generation") == generation for n in wanted):
                instances = [i for i in compute.instances() if i.service == svc.name]
                if len(instances) == svc.replicas and all(i.healthy for i in instances):
                    return
            time.sleep(0.25)
        logs = self.state.services / "logs"
        detail = ""
        for replica in range(svc.replicas):
            log = logs / f"{svc.name}.{replica}.log"
            if log.exists():
                detail = tail(log.read_bytes(), lines=10)
                break
        what = f"answer {svc.health or '/'} with HTTP 2xx/3xx" if svc.is_web else "keep running"
        if crashed:
            what = "keep running: the supervisor reports it exits right after it starts"
        raise ProviderError(f"{self.label}: service {svc.name} did not {what}"
                            + ("." if crashed else f" within {timeout:.0f} s.")
                            + (f" Its log ends with:\n{detail}" if detail else ""),
                            hint=f"logs: {logs}", code="local.unhealthy")

    def _delete_service(self, resource: Resource) -> None:
        data = self.state.load()
        info = data.get("services", {}).pop(resource.name, None)
        for replica in range((info or {}).get("replicas", 0)):
            data.get("ports", {}).pop(f"{resource.name}.{replica}", None)
        self.state.save(data)
        self._prune_generations(resource.name, [])
        runtime = self.runtime()
        if not data.get("services"):
            runtime.stop()
            return
        if not runtime.running():
            runtime.reap([f"{resource.name}.{i}" for i in range((info or {}).get("replicas", 0))])
        else:
            runtime.apply(self._programs())
            deadline = time.time() + 20
            while time.time() < deadline and any(p.startswith(resource.name + ".")
                                                 for p in self.supervisor_status()):
                time.sleep(0.1)

    # ------------------------------------------------------------------ service accessors
    def compute(self) -> LocalCompute:
        return LocalCompute(self)

    def database(self) -> LocalDatabase:
        return LocalDatabase(self)

    def cache(self) -> HostCache:
        return HostCache(self)  # the host machinery's, over this machine's RedisHost

    def objects(self) -> DirectoryStore:
        return DirectoryStore(self.state.objects)

    def dns(self) -> ZoneFileDns:
        return ZoneFileDns(self.state.dns)

    def secrets(self) -> LocalSecrets:
        return LocalSecrets(self.state.secrets)

    def _file_lock(self) -> FileLock:
        """<state>/lock."""
        return FileLock(self.state.root / "lock", self.label, self.stack.name)

