"""A PostgreSQL cluster owned by Lifeboat on one host (or this machine)."""

from __future__ import annotations

import time
from pathlib import Path

from toolkit.commands import pgcommands
from toolkit.errors import CommandFailed, ProviderError
from toolkit.hostops.bootstrap import ensure_account
from toolkit.hostops.shell import quote_ident, quote_literal, sh
from toolkit.transport.connection import Connection


class PostgresHost:
    """A PostgreSQL cluster owned by Lifeboat on one host (this machine too, over a LocalConnection), under
    ``<root>/postgres`` or ``base``: ``data``, ``run`` (sockets), ``postgres.log``, ``wal-archive`` (the spool,
    backup: wal: true) and the ``.initdb-complete`` marker. With ``as_root``, Lifeboat is root there and the
    cluster runs as ``account``; otherwise as the account Lifeboat runs as."""

    def __init__(self, conn: Connection, *, root: str | None = None, base: str | None = None, version: int,
                 listen: str, port: int, account: str = "lifeboat", as_root: bool = True, bindir: str | None = None,
                 wal: bool = False):
        self.conn = conn
        self.base = base or f"{root}/postgres"
        self.data = f"{self.base}/data"
        self.sockets = f"{self.base}/run"
        self.wal_spool = f"{self.base}/wal-archive" if wal else None  # backup: wal: true
        self.log = f"{self.base}/postgres.log"
        self.version = version
        self.listen = listen
        self.port = port
        self.account = account
        self.as_root = as_root
        self.bindir = Path(bindir or f"/usr/lib/postgresql/{version}/bin")

    def _as_account(self, argv: list[str]) -> list[str]:
        if not self.as_root:
            return argv
        return ["sh", "-c", 'cd / && exec "$@"', "sh", "runuser", "-u", self.account, "--", *argv]

    def check(self) -> str:
        result = self.conn.run([str(self.bindir / "initdb"), "--version"], check=False)
        if not result.ok:
            raise ProviderError(f"{self.conn.host}: PostgreSQL {self.version} server binaries are not installed "
                                f"({self.bindir}).", hint=f"install postgresql-{self.version} on the host.",
                                code="host.missing_postgres")
        return result.text.strip()

    def initialized(self) -> bool:
        return self.conn.read_bytes(f"{self.base}/.initdb-complete") is not None

    def running(self) -> bool:
        return self.conn.run(self._as_account(pgcommands.pg_ctl_status(self.bindir, Path(self.data))),
                             check=False).exit_code == 0

    def init(self, superuser_password: bytes, superuser: str) -> None:
        if self.as_root:
            ensure_account(self.conn, self.account)
        sh(self.conn, 'rm -rf "$1/data"; mkdir -p "$1/run" && chmod 700 "$1"', self.base)
        if self.as_root:
            self.conn.run(["chown", "-R", f"{self.account}:{self.account}", self.base])
            if not self.conn.run(self._as_account(["test", "-w", self.base]), check=False).ok:
                raise ProviderError(f"{self.conn.host}: the account {self.account} cannot reach {self.base} (a "
                                    "folder above it is closed to other users).",
                                    hint="set root: to a folder every account can traverse, such as /srv/lifeboat.",
                                    code="host.root_closed")
        pwfile = f"{self.base}/.pwfile"
        self.conn.write_bytes(pwfile, superuser_password, mode=0o600)
        if self.as_root:
            self.conn.run(["chown", f"{self.account}:{self.account}", pwfile])
        try:
            self.conn.run(self._as_account(pgcommands.initdb(self.bindir, Path(self.data), superuser=superuser,
                                                             pwfile=Path(pwfile))), timeout=300)
        finally:
            self.conn.run(["rm", "-f", pwfile])
        sh(self.conn, "printf \"\\ninclude_if_exists = 'lifeboat.conf'\\n\" >> \"$1/postgresql.conf\"", self.data)
        self.conn.write_bytes(f"{self.base}/.initdb-complete", time.strftime("%FT%TZ", time.gmtime()).encode())

    def configure(self, clients: list[str]) -> str | None:
        """Write lifeboat.conf and pg_hba.conf (and make the WAL spool); what the running server needs for
        them: None, "reload" (pg_hba.conf), or "restart" (lifeboat.conf: its port, addresses, sockets and
        archive_mode take a restart)."""
        if self.wal_spool is not None:
            sh(self.conn, 'mkdir -p "$1" && chmod 700 "$1"', self.wal_spool)
            if self.as_root:
                self.conn.run(["chown", f"{self.account}:{self.account}", self.wal_spool])
        conf = pgcommands.postgres_conf(port=self.port, socket_dir=Path(self.sockets), listen=self.listen,
                                        wal_spool=Path(self.wal_spool) if self.wal_spool else None).encode()
        hba = pgcommands.pg_hba(clients).encode()
        needs = None
        for name, body in (("lifeboat.conf", conf), ("pg_hba.conf", hba)):
            path = f"{self.data}/{name}"
            before = self.conn.read_bytes(path)
            if before != body:
                self.conn.write_bytes(path, body, mode=0o600)
                if self.as_root:
                    self.conn.run(["chown", f"{self.account}:{self.account}", path])
                needs = "restart" if name == "lifeboat.conf" else needs or "reload"
        return needs

    def ensure(self, *, superuser: str, superuser_password: bytes, clients: list[str], database: str,
               app_user: str, app_password: bytes, extensions: tuple[str, ...], events=None) -> None:
        """The cluster made (initdb), configured, running with what it was configured with, and the app's
        role, database and extensions in it; each part only where it is not so already."""
        if not self.initialized():
            if events is not None:
                events.step(f"{self.conn.host}: initdb")
            self.init(superuser_password, superuser)
        needs = self.configure(clients)
        if not self.running():
            self.start()
        elif needs == "restart":
            if events is not None:
                events.step(f"{self.conn.host}: restarting PostgreSQL (its settings changed; WAL archiving "
                            f"{'on' if self.wal_spool else 'off'})")
            self.restart()
        elif needs:
            self.reload()
        self.setup(superuser=superuser, superuser_password=superuser_password, database=database,
                   app_user=app_user, app_password=app_password, extensions=extensions)

    def start(self) -> None:
        try:
            self.conn.run(self._as_account(pgcommands.pg_ctl_start(self.bindir, Path(self.data), Path(self.log))),
                          timeout=120)
        except CommandFailed as exc:
            log = self.conn.read_bytes(self.log) or b""
            raise ProviderError(f"{self.conn.host}: PostgreSQL did not start: {exc.message}\n"
                                f"{log.decode(errors='replace')[-1500:]}", code="host.postgres_start") from None

    def restart(self) -> None:
        self.conn.run(self._as_account(pgcommands.pg_ctl_restart(self.bindir, Path(self.data), Path(self.log))),
                      timeout=180)

    def reload(self) -> None:
        self.conn.run(self._as_account([str(self.bindir / "pg_ctl"), "-D", self.data, "reload"]))

    def stop(self) -> None:
        if self.running():
            self.conn.run(self._as_account(pgcommands.pg_ctl_stop(self.bindir, Path(self.data))), timeout=120,
                          check=False)

    def remove(self) -> None:
        """Stop the cluster and remove its folder; never removes the data of a server still running."""
        self.stop()
        deadline = time.time() + 30
        while self.running():
            if time.time() > deadline:
                raise ProviderError(f"{self.conn.host}: PostgreSQL in {self.data} did not stop; nothing was removed.",
                                    hint=f"stop it ({self.bindir}/pg_ctl -D {self.data} stop), then run this again.",
                                    code="host.postgres_stop")
            time.sleep(0.2)
        self.conn.run(["rm", "-rf", self.base])

    def psql(self, sql: str, *, user: str, password: bytes, database: str = "postgres") -> list[list[str]]:
        """Run SQL (sent on stdin) as ``user``; rows as lists of text (unit separator between fields)."""
        argv = [str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-F", "\x1f",
                "-h", self.listen, "-p", str(self.port), "-U", user, "-d", database]
        result = self.conn.run(argv, input=sql.encode(), env={"PGPASSWORD": password.decode()}, timeout=600)
        return [line.split("\x1f") for line in result.text.splitlines() if line]

    def setup(self, *, superuser: str, superuser_password: bytes, database: str, app_user: str,
              app_password: bytes, extensions: tuple[str, ...]) -> None:
        su = {"user": superuser, "password": superuser_password}
        role, db, pw = quote_literal(app_user), quote_literal(database), quote_literal(app_password.decode())
        self.psql(
            f"SELECT format(CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {role}) "  # noqa: S608 - quoted
            f"THEN 'ALTER ROLE %I LOGIN PASSWORD %L' ELSE 'CREATE ROLE %I LOGIN PASSWORD %L' END, {role}, {pw})"
            "\\gexec\n"
            f"SELECT format('CREATE DATABASE %I OWNER %I ENCODING ''UTF8'' TEMPLATE template0', {db}, {role}) "
            f"WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = {db})\\gexec\n", **su)
        ident = quote_ident(app_user)
        rows = self.psql(
            f"GRANT ALL ON SCHEMA public TO {ident};\nALTER SCHEMA public OWNER TO {ident};\n"  # noqa: S608 - quoted
            "SELECT name FROM pg_available_extension_versions WHERE trusted AND name IN ("
            + ", ".join(quote_literal(e) for e in extensions or ("",)) + ");\n", database=database, **su)
        trusted = {r[0] for r in rows}
        # Trusted extensions belong to the app's role so that a dump restores with that role alone.
        mine = "".join(f"CREATE EXTENSION IF NOT EXISTS {quote_ident(e)};\n" for e in extensions if e in trusted)
        if mine:
            self.psql(mine, user=app_user, password=app_password, database=database)
        theirs = "".join(f"CREATE EXTENSION IF NOT EXISTS {quote_ident(e)};\n" for e in extensions
                         if e not in trusted)
        if theirs:
            self.psql(theirs, database=database, **su)

    def dump_argv(self, *, user: str, database: str, snapshot: str | None = None, part=None,
                  compress: int = 1) -> list[str]:
        return pgcommands.pg_dump(self.bindir, host=self.listen, port=self.port, user=user, database=database,
                                  snapshot=snapshot, part=part, compress=compress)

    def restore_argv(self, *, user: str, database: str, clean: bool = True, part=None) -> list[str]:
        return pgcommands.pg_restore(self.bindir, host=self.listen, port=self.port, user=user, database=database,
                                     clean=clean, part=part)
