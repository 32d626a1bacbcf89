"""The services a stack on SSH hosts offers (compute, database, cache, secrets), over a
:class:`providers.common.hosts.HostsProvider`: PostgreSQL and Redis on the db host, programs or containers
on the app hosts, secrets as 0600 files on the primary host."""

from __future__ import annotations

import shutil
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING

from toolkit.commands.dockercmd import image_tag
from toolkit.contract import (
    CacheService,
    ComputeService,
    DatabaseInfo,
    DatabaseService,
    Host,
    Instance,
    LogSource,
    SecretStore,
    SecretValue,
    Unsupported,
)
from toolkit.errors import BadInput, ProviderError
from toolkit.hostops.many import on_hosts
from toolkit.hostops.shell import sh

if TYPE_CHECKING:
    from providers.common.hosts import HostsProvider

PG_SUPERUSER = "lifeboat"


class RemoteSecrets(SecretStore):
    """One 0600 file per secret in a 0700 directory on the primary host."""

    def __init__(self, provider: HostsProvider, directory: str):
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

    def written_at(self, name: str) -> float | None:
        found = self.p.primary().run(["stat", "-c", "%Y", self._path(name)], check=False)
        return float(found.text.strip()) if found.ok and found.text.strip().isdigit() else None


class HostDatabase(DatabaseService):
    def __init__(self, provider: HostsProvider):
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


class HostCache(CacheService):
    def __init__(self, provider: HostsProvider):
        self.p = provider

    def connection_url(self) -> SecretValue:
        return self.p.redis_url()

    def ping(self) -> bool:
        return self.p.redis().ping(self.p.internal_secret("redis").reveal())


class HostCompute(ComputeService):
    def __init__(self, provider: HostsProvider):
        self.p = provider

    def hosts(self) -> list[Host]:
        return [Host(s.name, self.p.listen_address(s), s.roles, {"labels": s.labels}) for s in self.p.specs]

    def addresses(self, role: str) -> list[str]:
        return [self.p.listen_address(s) for s in self.p.specs if s.has(role)]

    def log_sources(self, service: str | None = None) -> list[LogSource]:
        """Each replica's log on its host: the file the supervisor or the systemd unit appends to, or the
        container's log (docker runtime)."""
        from toolkit.commands.dockercmd import container_name

        out = []
        for name, info in sorted(self.p.state().get("services", {}).items()):
            if service not in (None, name):
                continue
            if info.get("runtime") == "docker":
                for host in info.get("hosts", []):
                    docker = self.p.docker(host)
                    out += [LogSource(name, replica, host, docker.conn, env=docker.env,
                                      container=container_name(self.p.stack.name, host, name, replica))
                            for replica in range(info.get("replicas", 1))]
                continue
            out += [LogSource(name, int(program["name"].rsplit(".", 1)[1]), program["host"],
                              self.p.conn(program["host"]), path=program["log"])
                    for program in info.get("programs", [])]
        return out

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
                        healthy = alive and runtime.http_ok(url + (service.health or "/"), self.p.health_headers())
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

    def console(self, service: str, argv: list[str]) -> int:
        """A pseudo-terminal on the service's first host: in its release folder as the app account
        (process runtime), or in a one-off container of its image (docker runtime, ``-it``)."""
        svc, info, host = self._deployed(service)
        if info.get("runtime") == "docker":
            env = self.p.service_env(svc, self.p.spec(host), replica=0, release=info["release"])
            return self.p.docker(host).run_once(image_tag(self.p.stack.name, service, info["release"]), list(argv),
                                                env, volumes=self.p._volumes(host), terminal=True)
        command, env, cwd = self.p.in_release(host, svc, info["release"], list(argv), as_app=True)
        return self.p.conn(host).interactive(command, env=env, cwd=cwd)

    def _deployed(self, service: str):
        svc = self.p.stack.services.get(service)
        if svc is None:
            raise BadInput(f'no service "{service}" in the stack.')
        info = self.p.state().get("services", {}).get(service)
        if not info:
            raise ProviderError(f"{self.p.label}: service {service} is not deployed.",
                                hint=f"run `lifeboat up --on {self.p.target.name}` first.", code="host.not_deployed")
        return svc, info, info["hosts"][0]

    def exec(self, service: str, argv: list[str], *, env: dict[str, str] | None = None) -> int:
        svc, info, host = self._deployed(service)
        if info.get("runtime") == "docker":
            full = {**self.p.service_env(svc, self.p.spec(host), replica=0, release=info["release"]), **(env or {})}
            result = self.p.docker(host).run_once(image_tag(self.p.stack.name, service, info["release"]), list(argv),
                                                  full, volumes=self.p._volumes(host))
            sys.stdout.buffer.write(result.stdout)
            sys.stdout.flush()
            sys.stderr.buffer.write(result.stderr)
            return result.exit_code
        result = self.p.run_in_release(host, svc, info["release"], list(argv), as_app=True, check=False,
                                       env=env)
        sys.stdout.buffer.write(result.stdout)
        sys.stdout.flush()
        sys.stderr.buffer.write(result.stderr)
        return result.exit_code
