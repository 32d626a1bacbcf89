"""The local target's services: secrets as 0600 files, the database and cache on this machine, the
services' processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from providers.local.state import PG_SUPERUSER, pid_alive
from toolkit.commands import pgcommands
from toolkit.contract import (
    ComputeService,
    DatabaseInfo,
    DatabaseService,
    Host,
    Instance,
    LogSource,
    SecretStore,
    SecretValue,
)
from toolkit.errors import BadInput, ProviderError
from toolkit.paths import write_private
from toolkit.transport.connection import LocalConnection

if TYPE_CHECKING:
    from providers.local.provider import LocalProvider


class LocalSecrets(SecretStore):
    """One file per secret, 0600, in a 0700 directory."""

    def __init__(self, directory: Path):
        self.directory = directory

    def _path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise BadInput(f"bad secret name {name!r}.")
        return self.directory / name

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.name for p in self.directory.iterdir() if not p.name.startswith("."))

    def read(self, name: str) -> SecretValue | None:
        try:
            return SecretValue(self._path(name).read_bytes())
        except FileNotFoundError:
            return None

    def write(self, name: str, value: SecretValue) -> None:
        write_private(self._path(name), value.reveal())

    def written_at(self, name: str) -> float | None:
        try:
            return self._path(name).stat().st_mtime
        except FileNotFoundError:
            return None

    def delete(self, name: str) -> None:
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            pass


class LocalDatabase(DatabaseService):
    remote = False  # PostgreSQL on this machine

    def __init__(self, provider: LocalProvider):
        self.p = provider

    def _pg(self):
        pg = self.p.stack.postgres
        if pg is None:
            raise ProviderError(f"the stack {self.p.stack.name} has no postgres: section.")
        return pg

    def _env(self) -> dict:
        return {"PGPASSWORD": self.p.internal_secret("pg_app").reveal_text(), "PGCONNECT_TIMEOUT": "10"}

    def info(self) -> DatabaseInfo:
        pg = self._pg()
        with self.p.pg_connect(pg.database, app=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_setting('server_version_num')::int / 10000, "
                        "pg_database_size(current_database())")
            version, size = cur.fetchone()
            cur.execute("SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1")
            exts = tuple(r[0] for r in cur.fetchall())
        return DatabaseInfo(int(version), pg.database, exts, int(size))

    @contextmanager
    def snapshot(self):
        from toolkit.stores.digests import exported_snapshot

        with self.p.pg_connect(self._pg().database, app=True) as conn, exported_snapshot(conn) as held:
            yield held

    @contextmanager
    def dump(self, snapshot=None, part=None, compress=1):
        pg = self._pg()
        argv = pgcommands.pg_dump(self.p.pg_bindir(), host="127.0.0.1", port=self.p.state.port("postgres"),
                                  user=pg.user, database=pg.database, snapshot=snapshot, part=part,
                                  compress=compress)
        with LocalConnection().read_stream(argv, env=self._env()) as stream:
            yield stream

    def restore(self, stream, *, clean: bool = True, part=None) -> None:
        pg = self._pg()
        argv = pgcommands.pg_restore(self.p.pg_bindir(), host="127.0.0.1", port=self.p.state.port("postgres"),
                                     user=pg.user, database=pg.database, clean=clean, part=part, python=sys.executable)
        with LocalConnection().write_stream(argv, env=self._env()) as sink:
            shutil.copyfileobj(stream, sink, 1 << 20)

    def wal_source(self):
        from toolkit.contract import Unsupported
        from toolkit.workflows.walarchive import LocalWalSource, basebackup_argv

        if not self.p.stack.archives_wal:
            raise Unsupported(f"{self.p.label}: backup: wal: is off")
        port = self.p.state.port("postgres")

        def query(sql: str) -> str:
            with self.p.pg_connect("postgres") as conn:
                return str(conn.execute(sql).fetchone()[0])

        @contextmanager
        def base():
            argv = basebackup_argv(self.p.pg_bindir(), host="127.0.0.1", port=port, user=PG_SUPERUSER,
                                   version=self._pg().version)
            env = {"PGPASSWORD": self.p.internal_secret("pg_superuser").reveal_text(), "PGCONNECT_TIMEOUT": "10"}
            with LocalConnection().read_stream(argv, env=env) as stream:
                yield stream

        return LocalWalSource(self.p.wal_spool(), query=query, base=base)

    def table_digests(self, method: str = "auto"):
        from toolkit.stores.digests import table_digests

        with self.p.pg_connect(self._pg().database, app=True) as conn:
            return table_digests(conn, method)

    def connection_url(self) -> SecretValue:
        return self.p.database_url()


class LocalCompute(ComputeService):
    def __init__(self, provider: LocalProvider):
        self.p = provider

    def pause(self, services: list[str]) -> None:
        self.p.set_paused(services, True)

    def resume(self, services: list[str]) -> None:
        self.p.set_paused(services, False)

    def hosts(self) -> list[Host]:
        return [Host("localhost", "127.0.0.1", ("web", "worker", "db", "storage"))]

    def log_sources(self, service: str | None = None) -> list[LogSource]:
        """The supervisor's log file of each replica, on this machine."""
        conn = LocalConnection()
        services = self.p.state.load().get("services", {})
        return [LogSource(name, int(program["name"].rsplit(".", 1)[1]), None, conn, path=program["log"])
                for name, info in sorted(services.items()) if service in (None, name)
                for program in info.get("programs", [])]

    def addresses(self, role: str) -> list[str]:
        return [self.p.address]

    def instances(self) -> list[Instance]:
        state = self.p.state.load()
        status = self.p.supervisor_status()
        running = self.p.supervisor_pid() is not None
        out = []
        for name, svc in sorted(state.get("services", {}).items()):
            service = self.p.stack.services.get(name)
            for replica in range(svc.get("replicas", 1)):
                program = f"{name}.{replica}"
                ps = status.get(program, {})
                alive = running and ps.get("state") == "running" and pid_alive(ps.get("pid"))
                url = healthy = None
                if service is not None and service.is_web:
                    port = state.get("ports", {}).get(program)
                    url = f"http://{self.p.address}:{port}" if port else None
                    healthy = bool(alive and url and self.p.http_ok(url + (service.health or "/")))
                elif alive:
                    healthy = True
                else:
                    healthy = False
                out.append(Instance(name, replica, "localhost",
                                    "running" if alive else (ps.get("state") or "stopped"), healthy, url,
                                    (ps.get("generation") or "").split(":")[0] or None,
                                    {"pid": ps.get("pid"), "restarts": ps.get("restarts", 0)}))
        return out

    def console(self, service: str, argv: list[str]) -> int:
        """On this machine the terminal is already there: the command inherits it, as `exec`'s does."""
        return self.exec(service, argv)

    def exec(self, service: str, argv: list[str], *, env: dict[str, str] | None = None) -> int:
        svc = self.p.stack.services.get(service)
        if svc is None:
            raise BadInput(f'no service "{service}" in the stack.',
                           hint=f"services: {', '.join(self.p.stack.services)}.")
        if service not in self.p.state.load().get("services", {}):
            raise ProviderError(f"{self.p.label}: service {service} is not deployed.",
                                hint=f"run `lifeboat up --on {self.p.target.name}` first.", code="local.not_deployed")
        full_env = self.p.service_env(svc, replica=0)
        full_env.update(env or {})
        run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", **full_env}
        try:
            proc = subprocess.run(list(argv), cwd=self.p.service_cwd(svc), env=run_env, check=False)
        except FileNotFoundError:
            raise BadInput(f"{argv[0]}: command not found in the environment of {service}.") from None
        return proc.returncode
