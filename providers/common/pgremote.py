"""PostgreSQL reached at an address from this machine, as one role: dumps, restores and digests run here
with the client tools of this machine. RDS (through a tunnel) and an adopted deployment's own server (by
its URL) are both this; they differ in where the address and the password come from."""

from __future__ import annotations

import os
import shutil
import sys
from abc import abstractmethod
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from toolkit.contract import DatabaseInfo, DatabaseService, SecretValue
from toolkit.errors import ProviderError, ProviderUnreachable


class PostgresAt(DatabaseService):
    """Subclasses give ``endpoint()`` (host, port as this machine reaches them), ``login()`` (the role and its
    password), ``where()`` (the address named in errors) and ``version`` / ``database`` / ``label``."""

    label: str
    version: int
    database: str
    sslmode: str | None = None  # libpq's, where the address says so (an app's URL with ?sslmode=require)

    @abstractmethod
    def endpoint(self) -> tuple[str, int]: ...

    @abstractmethod
    def login(self, admin: bool = False) -> tuple[str, SecretValue]: ...

    def where(self) -> str:
        return "{}:{}".format(*self.endpoint())

    def client_env(self) -> dict[str, str]:
        """Environment of pg_dump/pg_restore: the password never goes on a command line."""
        return {"PGPASSWORD": self.login()[1].reveal_text(), "PGCONNECT_TIMEOUT": "10",
                **({"PGSSLMODE": self.sslmode} if self.sslmode else {})}

    @contextmanager
    def connect(self, *, admin: bool = False, database: str | None = None):
        import psycopg

        user, password = self.login(admin)
        host, port = self.endpoint()
        try:
            conn = psycopg.connect(host=host, port=port, user=user, password=password.reveal_text(),
                                   dbname=database or self.database, connect_timeout=10, autocommit=True,
                                   **({"sslmode": self.sslmode} if self.sslmode else {}))
        except psycopg.OperationalError as exc:
            raise ProviderUnreachable(f"{self.label}: cannot connect to PostgreSQL at {self.where()} as {user}: "
                                      f"{str(exc).strip()}", code="database.connect") from None
        try:
            yield conn
        finally:
            conn.close()

    def info(self) -> DatabaseInfo:
        with self.connect() as conn:
            version, size = conn.execute("SELECT current_setting('server_version_num')::int / 10000, "
                                         "pg_database_size(current_database())").fetchone()
            exts = tuple(r[0] for r in conn.execute(
                "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1").fetchall())
        return DatabaseInfo(int(version), self.database, exts, int(size))

    @contextmanager
    def snapshot(self):
        from toolkit.stores.digests import exported_snapshot

        with self.connect() as conn, exported_snapshot(conn) as held:
            yield held

    @contextmanager
    def dump(self, snapshot=None, part=None, compress=1):
        from toolkit.commands import pgcommands
        from toolkit.transport.connection import LocalConnection

        host, port = self.endpoint()
        argv = pgcommands.pg_dump(client_bindir(self.version), host=host, port=port, user=self.login()[0],
                                  database=self.database, snapshot=snapshot, part=part, compress=compress)
        with LocalConnection().read_stream(argv, env=self.client_env()) as stream:
            yield stream

    def restore(self, stream, *, clean=True, part=None):
        from toolkit.commands import pgcommands
        from toolkit.transport.connection import LocalConnection

        host, port = self.endpoint()
        argv = pgcommands.pg_restore(client_bindir(self.version), host=host, port=port, user=self.login()[0],
                                     database=self.database, clean=clean, part=part, python=sys.executable)
        with LocalConnection().write_stream(argv, env=self.client_env()) as sink:
            shutil.copyfileobj(stream, sink, 1 << 20)

    def table_digests(self, method: str = "auto"):
        from toolkit.stores.digests import table_digests

        with self.connect() as conn:
            return table_digests(conn, method)

    def connection_url(self) -> SecretValue:
        """A URL that reaches the database from this machine."""
        user, password = self.login()
        host, port = self.endpoint()
        return SecretValue(f"postgresql://{quote(user, safe='')}:{quote(password.reveal_text(), safe='')}@"
                           f"{host}:{port}/{quote(self.database, safe='')}")


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
