"""The ``baremetal`` provider: the stack on SSH hosts (rented servers, a colocated rack, a friend's box).

Hosts are listed under the target with roles:

- ``web``: every web service runs ``replicas`` processes on every web host (replica i on port + i);
- ``worker``: every worker service runs on every worker host;
- ``db``: PostgreSQL and Redis (native, owned by Lifeboat) on the first db host;
- ``storage``: the object store (a directory, SFTP streams, checksums on the host) on the first storage
  host. Apps read ``BUCKET_<NAME>_URL`` (file://) on hosts that also have the storage role.

Runtime: ``process`` (Lifeboat's supervisor, uploaded to each host). The first host is the primary: it
holds the lock, the provider's state file and the secret store (0600 files under ``<root>``).
Everything lives under ``root`` (default /srv/lifeboat) on each host; ``destroy`` removes it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets as pysecrets
import shutil
import sys
import time
from contextlib import contextmanager

from toolkit.commands.dockercmd import image_tag
from toolkit.commands.proxy import ProxyConfig, ProxyRoute, ProxySite, caddy_argv, caddyfile
from toolkit.config.schema import Field, Int, Map, Str
from toolkit.contract import (
    CacheService,
    ComputeService,
    DatabaseInfo,
    DatabaseService,
    Host,
    Instance,
    KindDispatch,
    Provider,
    Resource,
    SecretStore,
    SecretValue,
    Unsupported,
    bucket_var,
    data_resource,
)
from toolkit.errors import BadInput, ProviderError, ToolkitError
from toolkit.hostops import (
    MEDIASERVER_SOURCE,
    DockerRuntime,
    HostFacts,
    HostLock,
    PostgresHost,
    ProcessRuntime,
    RedisHost,
    Releases,
    SystemdRuntime,
    on_hosts,
    one_host_at_a_time,
    sh,
)
from toolkit.hostops.builds import SKIP_IN_BUILD, release_id
from toolkit.stores.sftpstore import RemoteDirectoryStore
from toolkit.transport.hosts import SSH_SETTINGS, HostSpec, SshDirectory, host_specs

PG_SUPERUSER = "lifeboat"


class RemoteSecrets(SecretStore):
    """One 0600 file per secret in a 0700 directory on the primary host."""

    def __init__(self, provider: BaremetalProvider, directory: str):
        self.p = provider
        self.directory = directory

    def _path(self, name: str) -> str:
        if not name or "/" in name or name.startswith("."):
            raise BadInput(f"bad secret name {name!r}.")
        return f"{self.directory}/{name}"

    def names(self) -> list[str]:
        out = sh(self.p.primary(), 'cd "$1" 2>/dev/null && ls -1 || true', self.directory).text.split()
        return sorted(n for n in out if not n.startswith(".") and not n.endswith(".lifeboat-tmp"))

    def read(self, name: str) -> SecretValue | None:
        raw = self.p.primary().read_bytes(self._path(name))
        return SecretValue(raw) if raw is not None else None

    def write(self, name: str, value: SecretValue) -> None:
        sh(self.p.primary(), 'mkdir -p "$1" && chmod 700 "$1"', self.directory)
        self.p.primary().write_bytes(self._path(name), value.reveal(), mode=0o600)

    def delete(self, name: str) -> None:
        self.p.primary().run(["rm", "-f", self._path(name)])


class BaremetalDatabase(DatabaseService):
    def __init__(self, provider: BaremetalProvider):
        self.p = provider

    def _pg(self):
        if self.p.stack.postgres is None:
            raise ProviderError(f"the stack {self.p.stack.name} has no postgres: section.")
        return self.p.stack.postgres

    def _env(self) -> dict:
        return {"PGPASSWORD": self.p.internal_secret("pg_app").reveal_text(), "PGCONNECT_TIMEOUT": "10"}

    def _query(self, sql: str) -> list[list[str]]:
        pg = self._pg()
        return self.p.postgres().psql(sql, user=pg.user, password=self.p.internal_secret("pg_app").reveal(),
                                      database=pg.database)

    def info(self) -> DatabaseInfo:
        pg = self._pg()
        rows = self._query("SELECT current_setting('server_version_num')::int / 10000, "
                           "pg_database_size(current_database());\n"
                           "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1;\n")
        version, size = int(rows[0][0]), int(rows[0][1])
        return DatabaseInfo(version, pg.database, tuple(r[0] for r in rows[1:]), size)

    @contextmanager
    def snapshot(self):
        """Through a direct connection from this machine, when the db host's PostgreSQL admits one (its
        pg_hba may allow only the app hosts: then Unsupported, and the copy is verified without it)."""
        import psycopg

        from toolkit.contract import Unsupported
        from toolkit.stores.digests import exported_snapshot

        try:
            conn = psycopg.connect(self.p.database_url().reveal_text(), connect_timeout=5, autocommit=True)
        except psycopg.OperationalError as exc:
            raise Unsupported(f"{self.p.label}: PostgreSQL does not accept a connection from here "
                              f"({str(exc).strip().splitlines()[0]})") from None
        with conn, exported_snapshot(conn) as held:
            yield held

    @contextmanager
    def dump(self, snapshot=None, part=None, compress=1):
        pg = self._pg()
        pgh = self.p.postgres()
        argv = pgh.dump_argv(user=pg.user, database=pg.database, snapshot=snapshot, part=part, compress=compress)
        with pgh.conn.read_stream(argv, env=self._env()) as stream:
            yield stream

    def restore(self, stream, *, clean: bool = True, part=None) -> None:
        pg = self._pg()
        pgh = self.p.postgres()
        with pgh.conn.write_stream(pgh.restore_argv(user=pg.user, database=pg.database, clean=clean, part=part),
                                   env=self._env()) as sink:
            shutil.copyfileobj(stream, sink, 1 << 20)

    def wal_source(self):
        from toolkit.contract import Unsupported
        from toolkit.workflows.walarchive import HostWalSource

        if not self.p.stack.archives_wal:
            raise Unsupported(f"{self.p.label}: backup: wal: is off")
        return HostWalSource(self.p.postgres(), superuser=PG_SUPERUSER,
                             password=self.p.internal_secret("pg_superuser").reveal())

    def table_digests(self, method: str = "auto"):
        from toolkit.stores.digests import table_digests_with

        return table_digests_with(self._query, method)

    def connection_url(self) -> SecretValue:
        return self.p.database_url()


class BaremetalCache(CacheService):
    def __init__(self, provider: BaremetalProvider):
        self.p = provider

    def connection_url(self) -> SecretValue:
        return self.p.redis_url()

    def ping(self) -> bool:
        return self.p.redis().ping(self.p.internal_secret("redis").reveal())


class BaremetalCompute(ComputeService):
    def __init__(self, provider: BaremetalProvider):
        self.p = provider

    def hosts(self) -> list[Host]:
        return [Host(s.name, self.p.listen_address(s), s.roles, {"labels": s.labels}) for s in self.p.specs]

    def addresses(self, role: str) -> list[str]:
        return [self.p.listen_address(s) for s in self.p.specs if s.has(role)]

    def instances(self) -> list[Instance]:
        state = self.p.state()
        services = state.get("services", {})
        proxy_hosts = (state.get("proxy") or {}).get("hosts", [])
        hosts = sorted({h for svc in services.values() for h in svc.get("hosts", [])} | set(proxy_hosts))

        def look(host: str) -> tuple[list[Instance], list[Instance]]:
            runtime = self.p.runtime(host)
            status = self.p.programs_status(host, services)  # read once per host
            address = self.p.listen_address(self.p.spec(host))
            out = []
            for name, svc in sorted(services.items()):
                if host not in svc.get("hosts", []):
                    continue
                service = self.p.stack.services.get(name)
                for replica in range(svc.get("replicas", 1)):
                    ps = status.get(f"{name}.{replica}", {})
                    alive = ps.get("state") == "running"
                    url = None
                    healthy = alive
                    if service is not None and service.is_web:
                        url = f"http://{address}:{self.p.app_port(service, replica)}"
                        healthy = alive and runtime.http_ok(url + (service.health or "/"))
                    out.append(Instance(name, replica, host, "running" if alive else ps.get("state") or "stopped",
                                        healthy, url, (ps.get("generation") or "").split(":")[0] or None,
                                        {"pid": ps.get("pid"), "restarts": ps.get("restarts", 0)}))
            proxied = []
            if host in proxy_hosts:
                ps = status.get("proxy.0", {})
                alive = ps.get("state") == "running"
                port = self.p.proxy_settings()["https_port"]
                healthy = alive and runtime.https_ok(address, port, self.p.stack.domain)
                proxied.append(Instance("proxy", 0, host, "running" if alive else ps.get("state") or "stopped",
                                        healthy, f"https://{self.p.stack.domain}:{port} ({address})", None,
                                        {"pid": ps.get("pid"), "restarts": ps.get("restarts", 0)}))
            return out, proxied

        results = on_hosts(hosts, look, parallel=self.p.parallel)
        return [i for host in hosts for i in results[host][0]] + \
            [i for host in proxy_hosts for i in results[host][1]]

    def pause(self, services: list[str]) -> None:
        self.p.set_paused(services, True)

    def resume(self, services: list[str]) -> None:
        self.p.set_paused(services, False)

    def exec(self, service: str, argv: list[str], *, env: dict[str, str] | None = None) -> int:
        svc = self.p.stack.services.get(service)
        if svc is None:
            raise BadInput(f'no service "{service}" in the stack.')
        info = self.p.state().get("services", {}).get(service)
        if not info:
            raise ProviderError(f"{self.p.label}: service {service} is not deployed.",
                                hint=f"run `lifeboat up --on {self.p.target.name}` first.", code="host.not_deployed")
        host = info["hosts"][0]
        conn = self.p.conn(host)
        full = self.p.service_env(svc, self.p.spec(host), replica=0, release=info["release"])
        full.update(env or {})
        if info.get("runtime") == "docker":
            docker = self.p.docker(host)
            path = f"{docker.dir}/{service}.exec-{pysecrets.token_hex(4)}.env"
            sh(conn, 'mkdir -p "$1" && chmod 700 "$1"', docker.dir)
            conn.write_bytes(path, docker.cmd.env_file(full), mode=0o600)
            try:
                result = docker.run(docker.cmd.run_once(image_tag(self.p.stack.name, service, info["release"]),
                                                        list(argv), env_file=path, volumes=self.p._volumes(host)),
                                    check=False, timeout=3600)
            finally:
                conn.run(["rm", "-f", path])
            sys.stdout.buffer.write(result.stdout)
            sys.stdout.flush()
            sys.stderr.buffer.write(result.stderr)
            return result.exit_code
        cwd = Releases(conn, self.p.root(host)).path(service, info["release"])
        account = self.p.app_account(host)
        as_account = ["runuser", "-u", account, "--"] if account else []
        result = conn.run(["sh", "-c", 'cd "$0" && exec "$@"', cwd, *as_account, *argv], env=full, check=False,
                          timeout=3600)
        sys.stdout.buffer.write(result.stdout)
        sys.stdout.flush()
        sys.stderr.buffer.write(result.stderr)
        return result.exit_code


class BaremetalProvider(KindDispatch, Provider):
    TYPE = "baremetal"
    DESCRIPTION = "SSH hosts you run: processes under Lifeboat's supervisor, native PostgreSQL and Redis"
    SERVICES = frozenset({"compute", "database", "cache", "objects", "secrets"})
    FEATURES = {"runtime.process": True, "runtime.docker": True, "replicas": True, "tls": True, "lock": True,
                "multi_host": True, "public_addresses": True}
    SETTINGS = {
        **SSH_SETTINGS,
        "postgres_port": Field(Int(min=1, max=65535), default=5432),
        "redis_port": Field(Int(min=1, max=65535), default=6379),
        "account": Field(Str(pattern=r"[a-z_][a-z0-9_-]{0,31}", expected="a system account name"),
                         default="lifeboat", doc="account PostgreSQL runs as on the db host"),
        "app_account": Field(Str(pattern=r"[a-z_][a-z0-9_-]{0,31}", expected="a system account name"),
                             default="lifeboat-app",
                             doc="process runtime: the unprivileged account app processes run as (created)"),
        "media_port": Field(Int(min=1, max=65535), default=8790,
                            doc="the media gateway's port on the storage host's private address (apps on the "
                                "other hosts reach the buckets through it)"),
        "port_offset": Field(Int(min=0, max=50000), default=0,
                             doc="added to every web service's port on these hosts (a drill's scratch copy runs "
                                 "beside the target this way)"),
        "process_manager": Field(Str(choices=["auto", "systemd", "supervisor"]), default="auto",
                                 doc="process runtime: systemd units where systemd runs and Lifeboat logs in as "
                                     "root (auto), always (systemd), or Lifeboat's supervisor everywhere"),
        "runtime": Field(Str(choices=["process", "docker"]), default="process",
                         doc="process: programs under systemd or Lifeboat's supervisor (process_manager); "
                             "docker: containers built on the hosts"),
        "docker": Field(Map({
            "base_image": Field(Str(expected="an image the Dockerfiles build FROM (passed as build arg BASE)")),
        }), doc="docker runtime settings"),
        "proxy": Field(Map({
            "http_port": Field(Int(min=1, max=65535), default=80),
            "https_port": Field(Int(min=1, max=65535), default=443),
            "acme_ca": Field(Str(pattern=r"https://\S+", expected="an ACME directory URL")),
            "acme_ca_root": Field(Str(expected="a PEM file with the CA that signs the ACME server's HTTPS")),
        }), doc="the TLS reverse proxy (Caddy) on every web host; runs when the stack has tls:"),
    }

    def __init__(self, stack, target):
        super().__init__(stack, target)
        self.specs: list[HostSpec] = host_specs(self.settings, stack.root)
        self.directory = SshDirectory(self.specs, known_hosts=self.settings.get("known_hosts"),
                                      ssh_config=self.settings.get("ssh_config"), base=stack.root,
                                      connect_timeout=self.settings.get("connect_timeout") or 10,
                                      target=target.name)
        self.parallel = self.settings.get("parallel", True)
        self.runtime_kind = self.settings.get("runtime") or "process"
        self._app_python: dict[str, str] = {}  # host -> the interpreter its app account can run
        self._facts: dict[str, HostFacts] = {}

    # ------------------------------------------------------------------ hosts
    def spec(self, name: str) -> HostSpec:
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise ProviderError(f"{self.label}: no host {name}.")

    def conn(self, name: str):
        return self.directory.connection(name)

    def primary_spec(self) -> HostSpec:
        return self.specs[0]

    def primary(self):
        return self.conn(self.primary_spec().name)

    def root(self, name: str) -> str:
        return self.spec(name).root

    def listen_address(self, spec: HostSpec) -> str:
        return spec.private_address or self.directory.params(spec)["address"]

    def hosts_with(self, role: str) -> list[HostSpec]:
        return [s for s in self.specs if s.has(role)]

    def media_on_hosts(self) -> bool:
        """Whether the stack's buckets live on the storage host (a subclass may keep them elsewhere)."""
        return bool(self.stack.buckets)

    def bucket_env(self, spec: HostSpec) -> dict[str, str]:
        """The ``BUCKET_<NAME>_*`` variables of the apps on host ``spec`` (docs/app-contract.md): the
        storage host's directories (file://) on that host, what ``remote_bucket_env`` says elsewhere."""
        storage = self.hosts_with("storage")
        if self.media_on_hosts() and storage and storage[0].name == spec.name:
            return {bucket_var(b, "URL"): f"file://{spec.root}/objects/{b}" for b in self.stack.buckets}
        return self.remote_bucket_env()

    def remote_bucket_env(self, *, create: bool = True) -> dict[str, str]:
        """The buckets for apps on hosts other than the storage host: the media gateway there."""
        if not self.gateway_needed():
            return {}
        from urllib.parse import quote

        spec = self.first("storage", "an object store")
        token = self.internal_secret("media_token", create=create)
        env = {}
        for bucket in sorted(self.stack.buckets):
            env[bucket_var(bucket, "URL")] = f"http://{self.listen_address(spec)}:{self.media_port}/{quote(bucket)}"
            env[bucket_var(bucket, "TOKEN")] = token.reveal_text() if token is not None else ""
        return env

    def app_port(self, svc, replica: int) -> int:
        """Where replica ``replica`` of web service ``svc`` listens on its host."""
        return svc.port + replica + int(self.settings.get("port_offset") or 0)

    SCRATCH_OFFSET = 10000

    def scratch_settings(self, name: str) -> dict:
        """The same hosts with everything of the copy apart: each host's root gets the suffix ``-<name>``
        (state, secrets, lock, releases, PostgreSQL and Redis data, objects), and every port moves up by
        SCRATCH_OFFSET (PostgreSQL, Redis, the media gateway, the web services, the proxy), so a drill can
        run beside a deployment on the very hosts it rehearses."""
        hosts = [{**host, "root": f"{spec.root}-{name}"} for host, spec in zip(self.settings["hosts"], self.specs,
                                                                               strict=True)]
        return {**self.settings, "hosts": hosts, **self.ports_beside({
            "postgres_port": self.settings.get("postgres_port") or 5432,
            "redis_port": self.settings.get("redis_port") or 6379, "media_port": self.media_port})}

    def ports_beside(self, ports: dict[str, int]) -> dict:
        """The settings that move a scratch copy's ports clear of the deployment on the same hosts: each of
        ``ports`` (setting: its value now), the web services' and the proxy's, up by SCRATCH_OFFSET. Refused
        for the docker runtime (containers are named after the stack) and past port 65535."""
        if self.runtime_kind == "docker":
            raise Unsupported(f"{self.label} runs containers named after the stack; a scratch copy beside them "
                              "is not supported yet (process runtime only)")
        offset = self.SCRATCH_OFFSET
        proxy = {**{"http_port": 80, "https_port": 443}, **(self.settings.get("proxy") or {})}
        highest = max([*ports.values(), proxy["http_port"], proxy["https_port"],
                       *[self.app_port(s, s.replicas - 1) for s in self.stack.web_services()]])
        if highest + offset > 65535:
            raise Unsupported(f"{self.label}: port {highest} + {offset} is past 65535, so a scratch copy cannot "
                              "sit beside it")
        return {**{k: v + offset for k, v in ports.items()},
                "port_offset": int(self.settings.get("port_offset") or 0) + offset,
                "proxy": {**proxy, "http_port": proxy["http_port"] + offset,
                          "https_port": proxy["https_port"] + offset}}

    # ------------------------------------------------------------------ the media gateway
    @property
    def media_port(self) -> int:
        return int(self.settings.get("media_port") or 8790)

    def gateway_needed(self) -> bool:
        """Whether apps run on a host other than the storage host (they then reach the buckets through the
        media gateway there, toolkit/agents/mediaserver.py)."""
        storage = self.hosts_with("storage")
        if not self.media_on_hosts() or not storage:
            return False
        return any(h != storage[0].name for svc in self.stack.services.values() for h in self.placement(svc))

    def gateway_id(self) -> str:
        spec = self.first("storage", "an object store")
        digest = hashlib.sha256(MEDIASERVER_SOURCE.read_bytes())
        digest.update(json.dumps([spec.name, self.listen_address(spec), self.media_port, self.runtime_kind]).encode())
        return digest.hexdigest()[:16]

    def _apply_media(self, before, after) -> None:
        host = after.attrs["host"]
        spec, conn = self.spec(host), self.conn(host)
        account = self.app_account(host) if self.runtime_kind == "process" else None
        base = f"{spec.root}/media"
        sh(conn, 'mkdir -p "$1" && chmod 755 "$1"', base)
        conn.write_bytes(f"{base}/mediaserver.py", MEDIASERVER_SOURCE.read_bytes(), mode=0o644)
        conn.write_bytes(f"{base}/token", self.internal_secret("media_token").reveal(), mode=0o600)
        if account:
            conn.run(["chown", f"{account}:{account}", f"{base}/token"])
        runtime = self.runtime(host)
        runtime.prepare()
        address, config = self.listen_address(spec), after.attrs["config"]
        program = {"name": "media.0", "host": host, "cwd": base, "generation": config, "user": account,
                   "argv": ["python3", f"{base}/mediaserver.py", "--bind", address, "--port", str(self.media_port),
                            "--root", f"{spec.root}/objects", "--token-file", f"{base}/token"],
                   "env_file": runtime.write_env("media.0", {"PATH": "/usr/local/bin:/usr/bin:/bin"}),
                   "log": f"{runtime.dir}/logs/media.0.log"}
        state = self.state()
        state["media"] = {"config": config, "host": host, "confirmed": False, "programs": [program]}
        self.save_state(state)
        runtime.apply(self._host_programs(host, state))
        url = f"http://{address}:{self.media_port}/healthz"
        deadline = time.time() + 60
        while time.time() < deadline:
            status = runtime.status().get("media.0", {})
            if status.get("generation") == config and status.get("state") == "running" and runtime.http_ok(url):
                return self._confirm("media")
            if status.get("generation") == config and status.get("state") == "crashed":
                break
            time.sleep(0.3)
        raise ProviderError(f"{host}: the media gateway did not answer on {address}:{self.media_port}. Its log ends "
                            f"with:\n{runtime.log_tail('media.0')}", hint="is the port free on that host? "
                            "(setting media_port)", code="host.media_gateway")

    def _delete_media(self, resource) -> None:
        state = self.state()
        media = state.pop("media", None)
        self.save_state(state)
        if not media:
            return
        self._retire(media["host"], state, "media.0", "media")

    def _retire(self, host: str, state: dict, program: str, folder: str) -> None:
        """Stop ``program`` on ``host`` (no longer in ``state``), keep the host's others running, and remove
        its folder under the host's root."""
        runtime = self.runtime(host)
        remaining = self._host_programs(host, state)
        if remaining and runtime.running():
            runtime.apply(remaining)
        elif not remaining:
            runtime.stop()
        else:
            runtime.reap([program])
        self.conn(host).run(["rm", "-rf", f"{self.root(host)}/{folder}"])

    def free_space(self) -> list[dict]:
        """Free bytes on the filesystems holding the db host's root (PostgreSQL) and the storage host's
        (objects), asked with df on the hosts; one entry when both are the same."""
        wanted = []
        if self.stack.postgres:
            wanted.append(("database", self.first("db", "PostgreSQL")))
        if self.media_on_hosts():
            wanted.append(("objects", self.first("storage", "an object store")))
        out: dict[tuple[str, str], dict] = {}
        for kind, spec in wanted:
            result = sh(self.conn(spec.name), 'p="$1"; while [ ! -e "$p" ]; do p=$(dirname "$p"); done; '
                                              'df -P -B1 -- "$p" | tail -n 1', spec.root)
            fields = result.text.split()
            mount = fields[-1]
            entry = out.setdefault((spec.name, mount), {"where": f"{spec.name}:{mount}", "kinds": [],
                                                        "free": int(fields[3])})
            entry["kinds"].append(kind)
        return list(out.values())

    def first(self, role: str, what: str) -> HostSpec:
        found = self.hosts_with(role)
        if not found:
            raise BadInput(f'{self.label}: the stack needs {what}, but no host has the role "{role}".',
                           hint=f'add "{role}" to the roles of one of the hosts.', code="host.missing_role")
        return found[0]

    def docker(self, name: str) -> DockerRuntime:
        spec = self.spec(name)
        return DockerRuntime(self.conn(name), spec.root, stack=self.stack.name, host=name,
                             docker_host=spec.docker_host)

    def app_python(self, host: str) -> str:
        """The interpreter the app account can run on ``host`` (asked once per host)."""
        if host not in self._app_python:
            from toolkit.hostops import app_interpreter

            self._app_python[host] = app_interpreter(self.conn(host))
        return self._app_python[host]

    def app_account(self, host: str) -> str | None:
        """The account app processes run as on ``host`` (created when missing); None when Lifeboat does
        not log in as root there (then they run as the login user)."""
        if not self.facts(host).is_root:
            return None
        account = self.settings.get("app_account") or "lifeboat-app"
        from toolkit.hostops import ensure_account

        ensure_account(self.conn(host), account)
        return account

    def bootstrap_plan(self) -> dict[str, dict]:
        """Per host: its OS, the packages its roles need and which of them are missing. Read-only."""
        from toolkit.hostops import missing_packages, packages_needed

        def look(name: str) -> dict:
            spec = self.spec(name)
            facts = self.facts(name).get()
            app = any(spec.has(svc.role) for svc in self.stack.services.values())
            needed = packages_needed(spec.roles, postgres=self.host_postgres_version(),
                                     redis=self.stack.redis is not None, tls=self.stack.tls is not None,
                                     runtime=self.runtime_kind, app=app)
            debian = facts["os"] in ("debian", "ubuntu")
            return {"os": f"{facts['os']} {facts['os_version']}".strip(), "supported": debian,
                    "root": facts["uid"] == 0, "needed": needed,
                    "missing": missing_packages(self.conn(name), needed) if debian else needed}

        return on_hosts([s.name for s in self.specs], look, parallel=self.parallel)

    def host_postgres_version(self) -> int | None:
        """The PostgreSQL major version the db host runs (None where the database is not on a host)."""
        return self.stack.postgres.version if self.stack.postgres else None

    def bootstrap(self, plan: dict[str, dict]) -> None:
        """Install what is missing (Debian/Ubuntu, as root) and create the accounts and directories."""
        from toolkit.hostops import install_packages

        def run(name: str) -> None:
            item = plan[name]
            if item["missing"]:
                if not item["supported"]:
                    raise ProviderError(f"{name}: {item['os']} is not Debian or Ubuntu; install "
                                        f"{', '.join(item['missing'])} by hand.", code="host.unsupported_os")
                if not item["root"]:
                    raise ProviderError(f"{name}: installing packages needs root; log in as root or install "
                                        f"{', '.join(item['missing'])} by hand.", code="host.not_root")
                install_packages(self.conn(name), item["missing"])
            spec = self.spec(name)
            sh(self.conn(name), 'mkdir -p "$1" && chmod 711 "$1"', spec.root)
            if item["root"] and any(spec.has(svc.role) for svc in self.stack.services.values()) and \
                    self.runtime_kind == "process":
                self.app_account(name)

        on_hosts(list(plan), run, parallel=self.parallel)

    def programs_status(self, host: str, services: dict) -> dict:
        """What runs on ``host``, by program name: the supervisor's programs and, where a service uses the
        docker runtime there, the stack's containers."""
        runtime = self.runtime(host)
        status = runtime.status() if runtime.running() else {}
        if any(svc.get("runtime") == "docker" and host in svc.get("hosts", []) for svc in services.values()):
            status.update(self.docker(host).programs())
        return status

    def runtime(self, host: str) -> ProcessRuntime:
        """What keeps the programs on ``host`` running: systemd units where systemd is the init system and
        Lifeboat logs in as root (setting process_manager), otherwise Lifeboat's supervisor."""
        chosen = self.settings.get("process_manager") or "auto"
        facts = self.facts(host).get() if chosen != "supervisor" else {}
        if chosen == "systemd" and not (facts.get("systemd") and facts.get("uid") == 0):
            raise BadInput(f"{self.label}: process_manager: systemd, but {host} does not run systemd or Lifeboat "
                           "does not log in there as root.", hint="use process_manager: auto or supervisor.",
                           code="host.no_systemd")
        if chosen != "supervisor" and facts.get("systemd") and facts.get("uid") == 0:
            return SystemdRuntime(self.conn(host), self.root(host), facts["python3"] or "/usr/bin/python3")
        return ProcessRuntime(self.conn(host), self.root(host))

    def facts(self, name: str) -> HostFacts:
        if name not in self._facts:
            self._facts[name] = HostFacts(self.conn(name))
        return self._facts[name]

    def placement(self, svc) -> list[str]:
        hosts = [s.name for s in self.hosts_with(svc.role)]
        if not hosts:
            raise BadInput(f'{self.label}: service {svc.name} has role {svc.role}, but no host has that role.',
                           hint=f'add "{svc.role}" to the roles of a host.', code="host.missing_role")
        return hosts

    def postgres(self, version: int | None = None) -> PostgresHost:
        spec = self.first("db", "PostgreSQL")
        version = version or (self.stack.postgres.version if self.stack.postgres else None) or \
            self.state().get("postgres", {}).get("version", 15)
        return PostgresHost(self.conn(spec.name), root=spec.root, version=version,
                            listen=self.listen_address(spec), port=self.settings.get("postgres_port") or 5432,
                            account=self.settings.get("account") or "lifeboat",
                            as_root=self.facts(spec.name).is_root, wal=self.stack.archives_wal)

    def redis(self) -> RedisHost:
        spec = self.first("db", "Redis")
        return RedisHost(self.conn(spec.name), root=spec.root, listen=self.listen_address(spec),
                         port=self.settings.get("redis_port") or 6379)

    # ------------------------------------------------------------------ state on the primary host
    def _state_path(self) -> str:
        return f"{self.primary_spec().root}/state.json"

    def state(self) -> dict:
        raw = self.primary().read_bytes(self._state_path())
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return {}

    def save_state(self, data: dict) -> None:
        # root is traversable (the db account reaches its data under it); what is secret inside is 0700/0600
        sh(self.primary(), 'mkdir -p "$1" && chmod 711 "$1"', self.primary_spec().root)
        self.primary().write_bytes(self._state_path(), json.dumps(data, indent=1, sort_keys=True).encode())

    def _confirm(self, section: str, name: str | None = None) -> None:
        """Mark what was just rolled out as seen healthy (an interrupted rollout stays unconfirmed, so the
        next `up` waits for it again)."""
        state = self.state()
        entry = state[section] if name is None else state[section][name]
        entry["confirmed"] = True
        self.save_state(state)

    def internal_secret(self, name: str, *, create: bool = True) -> SecretValue | None:
        path = f"{self.primary_spec().root}/internal/{name}"
        raw = self.primary().read_bytes(path)
        if raw is not None:
            return SecretValue(raw)
        if not create:
            return None
        value = pysecrets.token_urlsafe(32).encode()
        sh(self.primary(), 'mkdir -p "$1" && chmod 700 "$1"', f"{self.primary_spec().root}/internal")
        self.primary().write_bytes(path, value, mode=0o600)
        return SecretValue(value)

    # ------------------------------------------------------------------ preflight
    def check(self) -> dict:
        needs = []
        if self.stack.postgres or self.stack.redis is not None:
            needs.append("db")
        if self.media_on_hosts():
            needs.append("storage")
        for role in needs:
            self.first(role, {"db": "PostgreSQL or Redis", "storage": "an object store"}[role])
        for svc in self.stack.services.values():
            self.placement(svc)
            if svc.image and not svc.build:
                raise BadInput(f'service "{svc.name}" names a prebuilt image; {self.label} builds images on the '
                               "hosts from a build: directory (pulling from a registry is not supported yet).",
                               code="host.image_unsupported")
            if self.runtime_kind == "docker" and not (svc.build / "Dockerfile").exists():
                raise BadInput(f'service "{svc.name}": the docker runtime builds from a Dockerfile, and '
                               f"{svc.build} has none.", hint="add one, or use runtime: process.",
                               code="host.no_dockerfile")
        self._check_ports()

        def probe(name: str) -> dict:
            facts = self.facts(name).get()
            if not facts["python3"]:
                raise ProviderError(f"{name}: python3 is not installed (the supervisor and apps need it).",
                                    hint="install python3 on the host.", code="host.missing_python")
            return {"os": f"{facts['os']} {facts['os_version']}".strip(), "root": facts["uid"] == 0}

        found = on_hosts([s.name for s in self.specs], probe, parallel=self.parallel)
        if self.runtime_kind == "process":  # what the app account will run, before anything changes
            app_hosts = sorted({h for svc in self.stack.services.values() if svc.build for h in self.placement(svc)})
            rooted = [h for h in app_hosts if self.facts(h).is_root]
            found["python"] = on_hosts(rooted, self.app_python, parallel=self.parallel)
        if self.runtime_kind == "docker":
            app_hosts = sorted({h for svc in self.stack.services.values() for h in self.placement(svc)})
            found["docker"] = on_hosts(app_hosts, lambda h: self.docker(h).check(), parallel=self.parallel)
        if self.stack.postgres:
            found["postgres"] = self.postgres().check()
            major = int(found["postgres"].split()[-1].split(".")[0])
            if major != self.stack.postgres.version:
                raise ProviderError(f"{self.label}: the stack asks for PostgreSQL {self.stack.postgres.version}, "
                                    f"the db host has {major}.", code="host.postgres_version")
        if self.stack.redis is not None:
            found["redis"] = self.redis().check()
        return found

    def _check_ports(self) -> None:
        for spec in self.specs:
            taken: dict[int, str] = {}
            for svc in self.stack.services.values():
                if not svc.is_web or not spec.has(svc.role):
                    continue
                for replica in range(svc.replicas):
                    port = self.app_port(svc, replica)
                    if port in taken:
                        raise BadInput(f"{self.label}: on host {spec.name}, {svc.name}.{replica} would listen on "
                                       f"port {port}, already used by {taken[port]} (replica i listens on "
                                       "port + i).", hint="space the services' ports further apart.",
                                       code="host.port_clash")
                    taken[port] = f"{svc.name}.{replica}"

    # ------------------------------------------------------------------ lifecycle
    def observe(self) -> list[Resource]:
        state = self.state()
        out: list[Resource] = []
        if state.get("postgres"):
            pgs = state["postgres"]
            running = self.postgres().running() if self.stack.postgres else False
            wal = {"wal_archive": True} if pgs.get("wal_archive") else {}
            out.append(Resource("database", pgs["database"], {"version": pgs["version"],
                                                             "extensions": sorted(pgs.get("extensions", [])),
                                                             "running": running, **wal}, {"host": pgs.get("host")}))
        if state.get("redis"):
            running = self.redis().running() if self.stack.redis is not None else False
            out.append(Resource("cache", "redis", {"running": running}, {"host": state["redis"].get("host")}))
        for name, info in sorted(state.get("buckets", {}).items()):
            out.append(Resource("bucket", name, {}, {"host": info.get("host")}))
        media = state.get("media")
        if media:
            status = self.runtime(media["host"]).status().get("media.0", {})
            out.append(Resource("media", "gateway", {"config": media["config"] if media.get("confirmed") else None,
                                                     "host": media["host"],
                                                     "running": status.get("state") == "running"}))
        services = state.get("services", {})
        proxy = state.get("proxy")
        if services or proxy:
            hosts = sorted({h for svc in services.values() for h in svc.get("hosts", [])} |
                           set((proxy or {}).get("hosts", [])))

            def running_programs(host: str) -> dict:
                return self.programs_status(host, services)

            statuses = on_hosts(hosts, running_programs, parallel=self.parallel)
            for name, svc in sorted(services.items()):
                up = all(statuses[h].get(f"{name}.{i}", {}).get("state") == "running"
                         for h in svc.get("hosts", []) for i in range(svc.get("replicas", 1)))
                release = svc.get("release") if svc.get("confirmed") else None
                out.append(Resource("service", name, {"release": release, "config": svc.get("config"),
                                                      "replicas": svc.get("replicas", 1),
                                                      "hosts": svc.get("hosts", []), "running": up}))
            if proxy:
                up = all(statuses[h].get("proxy.0", {}).get("state") == "running" for h in proxy.get("hosts", []))
                config = proxy.get("config") if proxy.get("confirmed") else None
                out.append(Resource("proxy", "caddy", {"config": config, "hosts": proxy.get("hosts", []),
                                                       "running": up}))
        return out

    def desired(self, resources: list[Resource], secrets: dict[str, SecretValue] | None = None) -> list[Resource]:
        out = []
        for res in resources:
            data = data_resource(res, wal_archive=self.stack.archives_wal)
            if data is not None:
                out.append(data)
            elif res.kind == "service":
                svc = self.stack.services[res.name]
                out.append(Resource("service", res.name, {
                    "release": release_id(svc), "config": self.config_id(svc, secrets),
                    "replicas": svc.replicas, "hosts": self.placement(svc), "running": True}))
            else:
                out.append(res)
        if self.gateway_needed():
            out.append(Resource("media", "gateway", {"config": self.gateway_id(),
                                                     "host": self.first("storage", "an object store").name,
                                                     "running": True}))
        if self.stack.tls is not None and self.stack.web_services():
            out.append(Resource("proxy", "caddy", {"config": self.proxy_id(secrets),
                                                   "hosts": [s.name for s in self.hosts_with("web")],
                                                   "running": True}))
        return out

    def finish_destroy(self) -> None:
        def clean(name: str) -> None:
            runtime = self.runtime(name)
            runtime.stop()
            if self.runtime_kind == "docker" and any(name in self.placement(s) for s in self.stack.services.values()):
                docker = self.docker(name)
                docker.remove_all()
                docker.remove_images(list(self.stack.services))
            self.conn(name).run(["rm", "-rf", self.root(name)])

        on_hosts([s.name for s in self.specs], clean, parallel=self.parallel)

    # ------------------------------------------------------------------ database and cache
    def _clients(self) -> list[str]:
        return sorted({self.listen_address(s) for s in self.specs if s.has("web") or s.has("worker")})

    def _apply_database(self, before, after) -> None:
        pg = self.stack.postgres
        pgh = self.postgres()
        superuser_pw = self.internal_secret("pg_superuser").reveal()
        if not pgh.initialized():
            self.events.step(f"{pgh.conn.host}: initdb")
            pgh.init(superuser_pw, PG_SUPERUSER)
        needs = pgh.configure(self._clients())
        if not pgh.running():
            pgh.start()
        elif needs == "restart":
            self.events.step(f"{pgh.conn.host}: restarting PostgreSQL (WAL archiving {'on' if pgh.wal_spool else 'off'})")
            pgh.restart()
        elif needs:
            pgh.reload()
        pgh.setup(superuser=PG_SUPERUSER, superuser_password=superuser_pw, database=pg.database, app_user=pg.user,
                  app_password=self.internal_secret("pg_app").reveal(), extensions=pg.extensions)
        state = self.state()
        state["postgres"] = {"database": pg.database, "user": pg.user, "version": pg.version,
                             "extensions": sorted(pg.extensions), "host": pgh.conn.host,
                             "wal_archive": pgh.wal_spool is not None}
        self.save_state(state)

    def _delete_database(self, resource) -> None:
        if self.hosts_with("db"):
            self.postgres(version=resource.attrs.get("version")).remove()
        state = self.state()
        state.pop("postgres", None)
        self.save_state(state)

    def _apply_cache(self, before, after) -> None:
        rh = self.redis()
        rh.start(self.internal_secret("redis").reveal())
        state = self.state()
        state["redis"] = {"host": rh.conn.host}
        self.save_state(state)

    def _delete_cache(self, resource) -> None:
        if self.hosts_with("db"):
            self.redis().remove()
        state = self.state()
        state.pop("redis", None)
        self.save_state(state)

    def database_url(self) -> SecretValue:
        from urllib.parse import quote

        pg = self.stack.postgres
        spec = self.first("db", "PostgreSQL")
        password = quote(self.internal_secret("pg_app").reveal_text(), safe="")
        port = self.settings.get("postgres_port") or 5432
        return SecretValue(f"postgresql://{pg.user}:{password}@{self.listen_address(spec)}:{port}/{pg.database}")

    def redis_url(self) -> SecretValue:
        from urllib.parse import quote

        spec = self.first("db", "Redis")
        password = quote(self.internal_secret("redis").reveal_text(), safe="")
        port = self.settings.get("redis_port") or 6379
        return SecretValue(f"redis://:{password}@{self.listen_address(spec)}:{port}/0")

    # ------------------------------------------------------------------ buckets
    def objects(self) -> RemoteDirectoryStore:
        spec = self.first("storage", "an object store")
        return RemoteDirectoryStore(self.conn(spec.name), f"{spec.root}/objects")

    def _apply_bucket(self, before, after) -> None:
        store = self.objects()
        store.create_bucket(after.name)
        host = self.first("storage", "an object store").name
        account = self.app_account(host) if self.runtime_kind == "process" else None
        if account:  # the app writes media there too (uploads); Lifeboat reads and writes as root
            self.conn(host).run(["chown", "-R", f"{account}:{account}", store.root])
        state = self.state()
        state.setdefault("buckets", {})[after.name] = {"host": store.conn.host}
        self.save_state(state)

    def _delete_bucket(self, resource) -> None:
        if self.hosts_with("storage"):
            self.objects().remove_bucket(resource.name)
        state = self.state()
        state.get("buckets", {}).pop(resource.name, None)
        self.save_state(state)

    # ------------------------------------------------------------------ services
    def config_id(self, svc, secrets: dict[str, SecretValue] | None = None, *, create: bool = False) -> str:
        key = self.internal_secret("release_key", create=create)
        key_bytes = key.reveal() if key is not None else b"not-yet-created"
        env = dict(svc.env)
        store = self.secrets()
        for name in svc.secrets:
            value = (secrets or {}).get(name) or store.read(name)
            env[name] = value.reveal_text() if value is not None else ""
        doc = {"env": env, "replicas": svc.replicas, "port": self.app_port(svc, 0) if svc.is_web else svc.port,
               "buckets": sorted(self.stack.buckets)}
        remote = self.remote_bucket_env(create=create)
        if remote:
            doc["store"] = remote  # a new key, endpoint or gateway port restarts the services
        blob = json.dumps(doc, sort_keys=True).encode()
        return hmac.new(key_bytes, blob, hashlib.sha256).hexdigest()[:16]

    def service_env(self, svc, spec: HostSpec, *, replica: int, release: str) -> dict[str, str]:
        """What a process of ``svc`` gets on host ``spec``: Lifeboat's variables, the stack's env, secrets,
        and (process runtime) the release's code and virtualenv on the path."""
        env: dict[str, str] = {}
        if self.runtime_kind == "process":
            releases = Releases(self.conn(spec.name), spec.root)
            cwd = releases.path(svc.name, release)
            venv = releases.venv_path(self.requirements_for(svc))
            env = {"PYTHONPATH": cwd, "PATH": (f"{venv}/bin:" if venv else "")
                   + "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
            if venv:
                env["VIRTUAL_ENV"] = venv
        env.update({"LIFEBOAT_STACK": self.stack.name, "LIFEBOAT_SERVICE": svc.name, "LIFEBOAT_REPLICA": str(replica),
               "LIFEBOAT_BIND": self.listen_address(spec), "LANG": "C.UTF-8"})
        env.update(svc.env)
        if self.stack.postgres:
            env["DATABASE_URL"] = self.database_url().reveal_text()
        if self.stack.redis is not None:
            env["REDIS_URL"] = self.redis_url().reveal_text()
        env.update(self.bucket_env(spec))
        store = self.secrets()
        for name in svc.secrets:
            value = store.read(name)
            if value is not None:
                env[name] = value.reveal_text()
        if svc.is_web:
            env["PORT"] = str(self.app_port(svc, replica))
        return env

    def _host_programs(self, host: str, state: dict) -> list[dict]:
        programs = []
        paused = set(state.get("paused", []))
        for name, info in sorted(state.get("services", {}).items()):
            if host in info.get("hosts", []) and name not in paused:
                programs.extend(p for p in info.get("programs", []) if p["host"] == host)
        programs.extend(p for p in (state.get("proxy") or {}).get("programs", []) if p["host"] == host)
        programs.extend(p for p in (state.get("media") or {}).get("programs", []) if p["host"] == host)
        return programs

    def _volumes(self, host: str) -> tuple[str, ...]:
        storage = self.hosts_with("storage")
        if storage and storage[0].name == host and self.stack.buckets:
            return (f"{self.root(host)}/objects",)
        return ()

    def _apply_service_docker(self, before, after) -> None:
        svc = self.stack.services[after.name]
        release = after.attrs["release"]
        config = self.config_id(svc, create=True)
        generation = f"{release}:{config}"
        hosts = self.placement(svc)
        old_hosts = before.attrs.get("hosts", []) if before else []
        tag = image_tag(self.stack.name, svc.name, release)
        base_image = (self.settings.get("docker") or {}).get("base_image")
        first = hosts[0]
        if not self.docker(first).has_image(tag):
            self.events.step(f"{first}: uploading and building {tag}")
            context = Releases(self.conn(first), self.root(first)).upload(svc.name, release, svc.build, SKIP_IN_BUILD)
            self.docker(first).build(tag, context, base_image)

        def ship(host: str) -> None:
            if host != first and not self.docker(host).has_image(tag):
                self.events.step(f"{first} -> {host}: docker save | docker load {tag}")
                self.docker(first).send_image(tag, self.docker(host))

        on_hosts(hosts, ship, parallel=self.parallel)
        state = self.state()
        state.setdefault("services", {})[svc.name] = {
            "release": release, "config": config, "replicas": svc.replicas, "hosts": hosts, "confirmed": False,
            "generation": generation, "runtime": "docker", "programs": [],
            "previous": _previous_release(state, svc.name, release)}
        self.save_state(state)

        def roll(host: str) -> None:
            spec = self.spec(host)
            runtime = self.docker(host)
            envs = [self.service_env(svc, spec, replica=i, release=release) for i in range(svc.replicas)]
            probe = self.runtime(host)
            address = self.listen_address(spec)

            def healthy(replica: int) -> bool:
                if not svc.is_web:
                    return True
                return probe.http_ok(f"http://{address}:{self.app_port(svc, replica)}{svc.health or '/'}")

            runtime.deploy(svc.name, image=tag, command=list(svc.command), envs=envs, generation=generation,
                           healthy=healthy, volumes=self._volumes(host))
            runtime.prune_images(svc.name, keep=[release])

        one_host_at_a_time(hosts, roll)  # the other hosts keep serving while one rolls
        for host in set(old_hosts) - set(hosts):
            self.docker(host).remove_service(svc.name)
        self._confirm("services", svc.name)

    def _apply_service(self, before, after) -> None:
        if self.runtime_kind == "docker":
            return self._apply_service_docker(before, after)
        svc = self.stack.services[after.name]
        release = after.attrs["release"]
        config = self.config_id(svc, create=True)
        generation = f"{release}:{config}"
        hosts = self.placement(svc)
        old_hosts = before.attrs.get("hosts", []) if before else []
        requirements = self.requirements_for(svc)

        def prepare(host: str) -> list[dict]:
            conn = self.conn(host)
            account = self.app_account(host)
            releases = Releases(conn, self.root(host))
            self.events.step(f"{host}: uploading {svc.name} release {release}")
            cwd = releases.upload(svc.name, release, svc.build, SKIP_IN_BUILD)
            releases.venv(requirements, events=self.events, host=host,
                          python=self.app_python(host) if account else "python3")
            runtime = self.runtime(host)
            runtime.prepare()
            programs = []
            for replica in range(svc.replicas):
                env = self.service_env(svc, self.spec(host), replica=replica, release=release)
                program = f"{svc.name}.{replica}"
                programs.append({"name": program, "argv": list(svc.command), "cwd": cwd, "host": host,
                                 "env_file": runtime.write_env(program, env, tag=f"{release}-{config}"),
                                 "generation": generation,
                                 "log": f"{runtime.dir}/logs/{program}.log", "user": account})
            return programs

        prepared = on_hosts(hosts, prepare, parallel=self.parallel)
        state = self.state()
        previous = [p for p in (state.get("services", {}).get(svc.name) or {}).get("programs", [])]
        state["paused"] = [n for n in state.get("paused", []) if n != svc.name]  # `up` lifts a freeze
        state.setdefault("services", {})[svc.name] = {
            "release": release, "config": config, "replicas": svc.replicas, "hosts": hosts, "confirmed": False,
            "generation": generation, "programs": [p for h in hosts for p in prepared[h]],
            "previous": _previous_release(state, svc.name, release)}
        self.save_state(state)

        def start(host: str) -> None:
            runtime = self.runtime(host)
            old = {p["name"]: p for p in previous if p["host"] == host}
            new = [p for p in prepared.get(host, [])]
            if svc.is_web and len(new) > 1 and old:
                # Replica after replica on this host too: the others (old release) keep serving meanwhile.
                others = [p for p in self._host_programs(host, state) if p["name"].rsplit(".", 1)[0] != svc.name]
                for index in range(len(new)):
                    mixed = new[:index + 1] + [old[p["name"]] for p in new[index + 1:] if p["name"] in old]
                    runtime.apply(others + mixed)
                    self._wait_replica(host, svc, index, generation)
            current = self._host_programs(host, state)
            runtime.apply(current)
            self._wait_healthy(host, svc, generation)
            runtime.prune_env([p["env_file"] for p in current])

        # One host after the other: while one restarts its processes, the others keep serving.
        one_host_at_a_time(hosts + sorted(set(old_hosts) - set(hosts)), start)
        for host in hosts:
            Releases(self.conn(host), self.root(host)).prune(svc.name, keep=[release])
        self._confirm("services", svc.name)

    def _wait_healthy(self, host: str, svc, generation: str, timeout: float = 90.0) -> None:
        runtime = self.runtime(host)
        state = self.state()
        info = state.get("services", {}).get(svc.name)
        wanted = {f"{svc.name}.{i}" for i in range(svc.replicas)} if info and host in info["hosts"] else set()
        address = self.listen_address(self.spec(host))
        deadline = time.time() + timeout
        while time.time() < deadline:
            status = runtime.status()
            mine = {n for n in status if n.rsplit(".", 1)[0] == svc.name}
            if any(status[n].get("generation") == generation and status[n].get("state") == "crashed"
                   for n in mine):
                break  # it keeps dying right after it starts: waiting longer will not help
            if mine == wanted and all(status[n].get("generation") == generation and
                                      status[n].get("state") == "running" for n in wanted):
                if not svc.is_web or all(runtime.http_ok(f"http://{address}:{self.app_port(svc, i)}{svc.health or '/'}")
                                         for i in range(svc.replicas)):
                    return
            time.sleep(0.5)
        detail = runtime.log_tail(f"{svc.name}.0") if wanted else ""
        raise ProviderError(f"{host}: service {svc.name} did not become healthy (waited up to {timeout:.0f} s)."
                            + (f" Its log ends with:\n{detail}" if detail else ""),
                            hint=f"logs are in {runtime.dir}/logs on {host}.", code="host.unhealthy")

    def _wait_replica(self, host: str, svc, replica: int, generation: str, timeout: float = 90.0) -> None:
        runtime = self.runtime(host)
        name = f"{svc.name}.{replica}"
        url = f"http://{self.listen_address(self.spec(host))}:{self.app_port(svc, replica)}{svc.health or '/'}"
        deadline = time.time() + timeout
        while time.time() < deadline:
            status = runtime.status().get(name, {})
            if status.get("generation") == generation:
                if status.get("state") == "crashed":
                    break
                if status.get("state") == "running" and runtime.http_ok(url):
                    return
            time.sleep(0.3)
        raise ProviderError(f"{host}: {name} did not become healthy (waited up to {timeout:.0f} s); the other "
                            f"replicas still run the previous release. Its log ends with:\n{runtime.log_tail(name)}",
                            hint=f"logs are in {runtime.dir}/logs on {host}.", code="host.unhealthy")

    def _delete_service(self, resource) -> None:
        state = self.state()
        info = state.get("services", {}).pop(resource.name, None)
        self.save_state(state)
        if not info:
            return

        def stop(host: str) -> None:
            if info.get("runtime") == "docker":
                self.docker(host).remove_service(resource.name)
                self.conn(host).run(["rm", "-rf", f"{self.root(host)}/releases/{resource.name}"])
                return
            runtime = self.runtime(host)
            remaining = self._host_programs(host, state)
            if remaining:
                if runtime.running():
                    runtime.apply(remaining)
                else:
                    runtime.reap([p["name"] for p in info.get("programs", []) if p["host"] == host])
            else:
                runtime.stop()
            self.conn(host).run(["rm", "-rf", f"{self.root(host)}/releases/{resource.name}"])

        on_hosts(info.get("hosts", []), stop, parallel=self.parallel)

    # ------------------------------------------------------------------ pausing services (write freeze)
    def set_paused(self, services: list[str], paused: bool) -> None:
        state = self.state()
        deployed = state.get("services", {})
        now = set(state.get("paused", []))
        state["paused"] = sorted((now | set(services)) if paused else (now - set(services)))
        self.save_state(state)
        in_docker = [n for n in services if deployed.get(n, {}).get("runtime") == "docker"]
        if in_docker:
            self._set_paused_docker(in_docker, paused, deployed)
        services = [n for n in services if n not in in_docker]
        hosts = sorted({h for n in services for h in deployed.get(n, {}).get("hosts", [])})

        def apply(host: str) -> None:
            runtime = self.runtime(host)
            programs = self._host_programs(host, state)
            if programs:
                runtime.apply(programs)
            elif runtime.running():
                runtime.stop()
            if paused:
                deadline = time.time() + 60
                while time.time() < deadline:
                    status = runtime.status() if runtime.running() else {}
                    if not any(n.rsplit(".", 1)[0] in services for n in status):
                        return
                    time.sleep(0.2)
                raise ProviderError(f"{host}: {', '.join(services)} did not stop within 60 s.", code="host.pause")
            for name in services:
                if host in deployed.get(name, {}).get("hosts", []):
                    self._wait_healthy(host, self.stack.services[name], deployed[name]["generation"])

        on_hosts(hosts, apply, parallel=self.parallel)

    def _set_paused_docker(self, services: list[str], paused: bool, deployed: dict) -> None:
        """Containers are stopped (kept, with --restart unless-stopped they stay down) or started again and
        health-checked, host by host in parallel."""
        hosts = sorted({h for n in services for h in deployed[n].get("hosts", [])})

        def apply(host: str) -> None:
            runtime = self.docker(host)
            spec = self.spec(host)
            probe = self.runtime(host)
            address = self.listen_address(spec)
            for name in services:
                if host not in deployed[name].get("hosts", []):
                    continue
                svc = self.stack.services[name]
                if paused:
                    runtime.pause_service(name)
                    continue

                def healthy(replica: int, svc=svc) -> bool:
                    if not svc.is_web:
                        return True
                    return probe.http_ok(f"http://{address}:{self.app_port(svc, replica)}{svc.health or '/'}")

                runtime.resume_service(name, healthy)

        on_hosts(hosts, apply, parallel=self.parallel)

    # ------------------------------------------------------------------ releases kept for rollback
    def requirements_for(self, svc) -> bytes | None:
        overrides = getattr(self, "_requirements_override", {})
        return overrides[svc.name] if svc.name in overrides else requirements_of(svc)

    def ex_releases(self) -> dict[str, dict]:
        """Per deployed service: the running release, the one a rollback goes to, and what the hosts keep."""
        out = {}
        for name, info in sorted(self.state().get("services", {}).items()):
            host = info["hosts"][0]
            if info.get("runtime") == "docker":
                docker = self.docker(host)
                kept = [t for t in docker.run(docker.cmd.list_images(self.stack.name, name), check=False).text.split()
                        if t]
            else:
                listing = sh(self.conn(host), 'cd "$1" 2>/dev/null && ls -1t || true',
                             f"{self.root(host)}/releases/{name}").text.split()
                kept = [r for r in listing if not r.endswith(".partial")]
            out[name] = {"release": info.get("release"), "previous": info.get("previous"), "kept": kept,
                         "hosts": info.get("hosts", [])}
        return out

    def ex_rollback(self, services: list[str] | None = None) -> list[dict]:
        """Put the previous release of each service (all by default) back, host after host, replica after
        replica, with the current configuration. The next `up` deploys the stack's own release again."""
        state = self.state()
        deployed = state.get("services", {})
        names = services or sorted(deployed)
        done = []
        for name in names:
            info = deployed.get(name)
            if not info or name not in self.stack.services:
                raise BadInput(f'{self.label}: service "{name}" is not deployed, or no longer in the stack.',
                               code="release.unknown_service")
            if not info.get("previous"):
                raise BadInput(f"{self.label}: service {name} has no earlier release to go back to.",
                               code="release.no_previous")
        for name in names:
            info = self.state()["services"][name]
            target, current = info["previous"], info["release"]
            for host in info["hosts"]:
                if info.get("runtime") == "docker":
                    present = self.docker(host).has_image(image_tag(self.stack.name, name, target))
                else:
                    present = self.conn(host).read_bytes(
                        f"{Releases(self.conn(host), self.root(host)).path(name, target)}/.lifeboat-release") is not None
                if not present:
                    raise ProviderError(f"{host}: release {target} of {name} is no longer kept there.",
                                        code="release.gone")
            if info.get("runtime") != "docker":
                first = info["hosts"][0]
                path = Releases(self.conn(first), self.root(first)).path(name, target)
                self._requirements_override = {**getattr(self, "_requirements_override", {}),
                                               name: self.conn(first).read_bytes(f"{path}/requirements.txt")}
            before = Resource("service", name, {"release": current, "hosts": info["hosts"]})
            after = Resource("service", name, {"release": target, "hosts": info["hosts"]})
            self.events.step(f"{name}: {current} -> {target}")
            self._apply_service(before, after)
            done.append({"service": name, "from": current, "to": target})
        return done

    # ------------------------------------------------------------------ the TLS reverse proxy
    def proxy_settings(self) -> dict:
        settings = dict(self.settings.get("proxy") or {})
        settings.setdefault("http_port", 80)
        settings.setdefault("https_port", 443)
        return settings

    def _proxy_config(self, spec: HostSpec) -> ProxyConfig:
        settings = self.proxy_settings()
        base = f"{spec.root}/proxy"
        tls = self.stack.tls
        address = self.listen_address(spec)
        sites = []
        web = self.stack.web_services()
        main = [s for s in web if not s.path]
        if web:
            svc = main[0] if main else web[0]  # the first web service without a path serves the rest

            def ups(service) -> tuple[str, ...]:
                return tuple(f"{address}:{self.app_port(service, i)}" for i in range(service.replicas))

            routes = tuple(ProxyRoute(s.path, ups(s), s.health) for s in web if s.path and s is not svc)
            sites.append(ProxySite(self.stack.domain, ups(svc), svc.health, routes))
        return ProxyConfig(
            bind=address, http_port=settings["http_port"], https_port=settings["https_port"],
            storage=f"{base}/data", sites=tuple(sites), acme_email=tls.acme_email,
            acme_ca=settings.get("acme_ca"),
            acme_ca_root=f"{base}/acme-ca-root.pem" if settings.get("acme_ca_root") else None,
            certificate=f"{base}/tls/cert.pem" if tls.certificate_secret else None,
            key=f"{base}/tls/key.pem" if tls.certificate_secret else None)

    def proxy_id(self, secrets: dict[str, SecretValue] | None = None) -> str:
        digest = hashlib.sha256()
        for spec in self.hosts_with("web"):
            digest.update(caddyfile(self._proxy_config(spec)).encode())
        settings = self.proxy_settings()
        if settings.get("acme_ca_root"):
            digest.update((self.stack.root / settings["acme_ca_root"]).read_bytes())
        tls = self.stack.tls
        if tls and tls.certificate_secret:
            store = self.secrets()
            for name in (tls.certificate_secret, tls.key_secret):
                value = (secrets or {}).get(name) or store.read(name)
                digest.update(hashlib.sha256(value.reveal() if value else b"").digest())
        return digest.hexdigest()[:16]

    def _apply_proxy(self, before, after) -> None:
        hosts = [s.name for s in self.hosts_with("web")]
        tls = self.stack.tls
        settings = self.proxy_settings()
        config_id = after.attrs["config"]

        def program(host: str) -> dict:
            spec = self.spec(host)
            conn = self.conn(host)
            base = f"{spec.root}/proxy"
            sh(conn, 'mkdir -p "$1/data" "$1/tls" && chmod 700 "$1"', base)
            config = self._proxy_config(spec)
            conn.write_bytes(f"{base}/Caddyfile", caddyfile(config).encode(), mode=0o600)
            if settings.get("acme_ca_root"):
                conn.write_bytes(config.acme_ca_root, (self.stack.root / settings["acme_ca_root"]).read_bytes(),
                                 mode=0o644)
            if tls.certificate_secret:
                store = self.secrets()
                for name, path in ((tls.certificate_secret, config.certificate), (tls.key_secret, config.key)):
                    value = store.read(name)
                    if value is None:
                        raise BadInput(f"secret {name} (tls) is not in the secret store of {self.label}.",
                                       code="secret.missing")
                    conn.write_bytes(path, value.reveal(), mode=0o600)
            runtime = self.runtime(host)
            runtime.prepare()
            env = {"HOME": base, "XDG_DATA_HOME": f"{base}/data", "XDG_CONFIG_HOME": f"{base}/config",
                   "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
            return {"name": "proxy.0", "argv": caddy_argv(f"{base}/Caddyfile"), "cwd": base, "host": host,
                    "env_file": runtime.write_env("proxy.0", env), "generation": config_id,
                    "log": f"{runtime.dir}/logs/proxy.0.log"}

        for host in hosts:
            if self.conn(host).run(["caddy", "version"], check=False).exit_code != 0:
                raise ProviderError(f"{host}: caddy is not installed (the TLS proxy).",
                                    hint="install it on the web hosts (Debian: apt-get install caddy).",
                                    code="host.missing_caddy")
        programs = on_hosts(hosts, program, parallel=self.parallel)
        state = self.state()
        state["proxy"] = {"config": config_id, "hosts": hosts, "confirmed": False,
                          "programs": [programs[h] for h in hosts]}
        self.save_state(state)

        def start(host: str) -> None:
            self.runtime(host).apply(self._host_programs(host, state))
            self._wait_proxy(host, config_id)

        # With ACME, the first web host obtains the certificate; the others get a copy of it in their
        # Caddy storage (as a cluster with shared storage would), so only one host answers the challenge.
        first, rest = hosts[0], hosts[1:]
        start(first)
        if rest and not tls.certificate_secret:
            files = self._certificate_files(first)
            for host in rest:
                conn = self.conn(host)
                base = f"{self.root(host)}/proxy/data"
                for relative, body in files.items():
                    sh(conn, 'mkdir -p "$(dirname "$1")"', f"{base}/{relative}")
                    conn.write_bytes(f"{base}/{relative}", body, mode=0o600)
        if rest:
            on_hosts(rest, start, parallel=self.parallel)
        self._confirm("proxy")

    def _certificate_files(self, host: str, timeout: float = 90.0) -> dict[str, bytes]:
        """The certificate, key and metadata Caddy stored for the domain on ``host`` (waits for them)."""
        conn = self.conn(host)
        base = f"{self.root(host)}/proxy/data"
        deadline = time.time() + timeout
        while time.time() < deadline:
            listing = sh(conn, 'cd "$1" 2>/dev/null && find certificates -type f -path "*/$2/*" || true', base,
                         self.stack.domain).text.split("\n")
            names = [n for n in listing if n.strip()]
            if any(n.endswith(".crt") for n in names) and any(n.endswith(".key") for n in names):
                return {n: conn.read_bytes(f"{base}/{n}") or b"" for n in names}
            time.sleep(0.5)
        log = self.runtime(host).log_tail("proxy.0")
        raise ProviderError(f"{host}: no certificate for {self.stack.domain} from the ACME server within "
                            f"{timeout:.0f} s. Caddy's log ends with:\n{log}", code="host.acme")

    def _wait_proxy(self, host: str, config_id: str, timeout: float = 90.0) -> None:
        runtime = self.runtime(host)
        address = self.listen_address(self.spec(host))
        port = self.proxy_settings()["https_port"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            status = runtime.status().get("proxy.0", {})
            if status.get("generation") == config_id and status.get("state") == "crashed":
                break
            if status.get("generation") == config_id and status.get("state") == "running" and \
                    runtime.https_ok(address, port, self.stack.domain):
                return
            time.sleep(0.5)
        raise ProviderError(f"{host}: the TLS proxy did not serve https://{self.stack.domain} on {address}:{port} "
                            f"(waited up to {timeout:.0f} s). Its log ends with:\n{runtime.log_tail('proxy.0')}",
                            code="host.proxy")

    def _delete_proxy(self, resource) -> None:
        state = self.state()
        proxy = state.pop("proxy", None)
        self.save_state(state)

        on_hosts((proxy or {}).get("hosts", []), lambda host: self._retire(host, state, "proxy.0", "proxy"),
                 parallel=self.parallel)

    # ------------------------------------------------------------------ accessors and lock
    def compute(self) -> BaremetalCompute:
        return BaremetalCompute(self)

    def database(self) -> BaremetalDatabase:
        return BaremetalDatabase(self)

    def cache(self) -> BaremetalCache:
        return BaremetalCache(self)

    def secrets(self) -> RemoteSecrets:
        return RemoteSecrets(self, f"{self.primary_spec().root}/secrets")

    def host_lock(self) -> HostLock:
        return HostLock(self.primary(), self.primary_spec().root, f"{self.target.name} ({self.primary_spec().name})")

    @contextmanager
    def lock(self, owner: str):
        lock = self.host_lock()
        lock.acquire(owner, " ".join(sys.argv[1:])[:200])
        try:
            yield
        finally:
            try:
                lock.release()
            except ToolkitError:
                pass

    def lock_status(self) -> dict | None:
        return self.host_lock().holder()

    def lock_release(self) -> None:
        self.host_lock().release()


def _previous_release(state: dict, service: str, release: str) -> str | None:
    """The release to roll back to after deploying ``release``: the one running before, if it differs."""
    info = state.get("services", {}).get(service) or {}
    if info.get("release") and info["release"] != release:
        return info["release"]
    return info.get("previous")


def requirements_of(svc) -> bytes | None:
    if svc.build and (svc.build / "requirements.txt").exists():
        return (svc.build / "requirements.txt").read_bytes()
    return None
