"""RDS PostgreSQL, reached through an SSH tunnel via an instance (it is private)."""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.contract import (
    DatabaseInfo,
    DatabaseService,
    SecretValue,
)
from toolkit.errors import ProviderError, ProviderUnreachable

if TYPE_CHECKING:
    from providers.aws.provider import AwsProvider

RDS_ADMIN = "lifeboat_admin"


class RdsDatabase(DatabaseService):
    """The stack's database on RDS, reached through an SSH tunnel via an instance (``tunnel_via``)."""

    def __init__(self, provider: AwsProvider):
        self.p = provider

    def _pg(self):
        if self.p.stack.postgres is None:
            raise ProviderError(f"the stack {self.p.stack.name} has no postgres: section.")
        return self.p.stack.postgres

    @contextmanager
    def endpoint(self):
        """(host, port) on this machine that reaches the database: RDS itself, or the local end of a tunnel
        via ``tunnel_via`` that stays open while this provider object lives."""
        yield self.p.database_endpoint()

    @contextmanager
    def connect(self, *, admin: bool = False, database: str | None = None):
        import psycopg

        pg = self._pg()
        user, password = (RDS_ADMIN, self.p.internal_secret("rds_admin")) if admin else \
            (pg.user, self.p.internal_secret("pg_app"))
        with self.endpoint() as (host, port):
            try:
                conn = psycopg.connect(host=host, port=port, user=user, password=password.reveal_text(),
                                       dbname=database or pg.database, connect_timeout=10, autocommit=True)
            except psycopg.OperationalError as exc:
                raise ProviderUnreachable(f"{self.p.label}: cannot connect to PostgreSQL at "
                                          f"{self.p.rds_address()[0]} as {user}: {str(exc).strip()}",
                                          code="aws.rds_connect") from None
            try:
                yield conn
            finally:
                conn.close()

    def _env(self) -> dict:
        return {"PGPASSWORD": self.p.internal_secret("pg_app").reveal_text(), "PGCONNECT_TIMEOUT": "10"}

    def info(self):
        pg = self._pg()
        with self.connect() as conn:
            version, size = conn.execute("SELECT current_setting('server_version_num')::int / 10000, "
                                         "pg_database_size(current_database())").fetchone()
            exts = tuple(r[0] for r in conn.execute(
                "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1").fetchall())
        return DatabaseInfo(int(version), pg.database, exts, int(size))

    @contextmanager
    def snapshot(self):
        from toolkit.stores.digests import exported_snapshot

        with self.connect() as conn, exported_snapshot(conn) as held:
            yield held

    @contextmanager
    def dump(self, snapshot=None, part=None, compress=1):
        from toolkit.commands import pgcommands
        from toolkit.transport.connection import LocalConnection

        pg = self._pg()
        with self.endpoint() as (host, port):
            argv = pgcommands.pg_dump(client_bindir(pg.version), host=host, port=port, user=pg.user,
                                      database=pg.database, snapshot=snapshot, part=part, compress=compress)
            with LocalConnection().read_stream(argv, env=self._env()) as stream:
                yield stream

    def restore(self, stream, *, clean=True, part=None):
        from toolkit.commands import pgcommands
        from toolkit.transport.connection import LocalConnection

        pg = self._pg()
        with self.endpoint() as (host, port):
            argv = pgcommands.pg_restore(client_bindir(pg.version), host=host, port=port, user=pg.user,
                                         database=pg.database, clean=clean, part=part, python=sys.executable)
            with LocalConnection().write_stream(argv, env=self._env()) as sink:
                shutil.copyfileobj(stream, sink, 1 << 20)

    def table_digests(self, method: str = "auto"):
        from toolkit.stores.digests import table_digests

        with self.connect() as conn:
            return table_digests(conn, method)

    def connection_url(self) -> SecretValue:
        """A URL that reaches the database from this machine (through the tunnel while this provider lives)."""
        from urllib.parse import quote

        pg = self._pg()
        host, port = self.p.database_endpoint()
        password = quote(self.p.internal_secret("pg_app").reveal_text(), safe="")
        return SecretValue(f"postgresql://{pg.user}:{password}@{host}:{port}/{pg.database}")


def client_bindir(version: int) -> Path:
    """Where pg_dump/pg_restore of at least ``version`` are (Debian's layout, else PATH)."""
    for candidate in (Path(f"/usr/lib/postgresql/{v}/bin") for v in range(20, version - 1, -1)):
        if (candidate / "pg_dump").exists():
            return candidate
    found = shutil.which("pg_dump")
    if found:
        return Path(os.path.realpath(found)).parent
    raise ProviderError(f"pg_dump {version} or newer is not installed on this machine.",
                        hint=f"Debian: apt-get install postgresql-client-{version}.", code="local.missing_pg_dump")
