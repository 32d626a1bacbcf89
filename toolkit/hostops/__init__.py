"""Operations on one host through a :class:`toolkit.connection.Connection`: PostgreSQL, Redis, the
process supervisor, app releases, a lock, and running work on many hosts at once.

Every command is an argv list; shell snippets are constant strings that receive their values as
positional arguments ("$1"), never pasted in. Secrets travel in 0600 files or on stdin.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tarfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from toolkit.commands import pgcommands
from toolkit.errors import CommandFailed, LockHeld, ProviderError, ToolkitError
from toolkit.run.locks import gone_here
from toolkit.transport.connection import Connection

AGENTS = Path(__file__).resolve().parent.parent / "agents"  # stdlib-only programs shipped to the hosts
SUPERVISOR_SOURCE = AGENTS / "supervisor.py"
MEDIASERVER_SOURCE = AGENTS / "mediaserver.py"


def sh(conn: Connection, script: str, *args, check: bool = True, **kw):
    """Run a constant shell snippet with its values as positional parameters ($1, $2, ...)."""
    return conn.run(["sh", "-c", script, "sh", *[str(a) for a in args]], check=check, **kw)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# ------------------------------------------------------------------------------------------------ many hosts
class HostsFailed(ToolkitError):
    """One or more hosts failed; the others finished. Carries each failure."""

    code = "hosts.failed"

    def __init__(self, failures: dict[str, BaseException]):
        self.failures = failures
        parts = []
        for host, exc in failures.items():
            message = getattr(exc, "message", str(exc))
            parts.append(message if message.startswith(host) or f"on {host}" in message else f"{host}: {message}")
        exit_codes = {getattr(e, "exit_code", 1) for e in failures.values()}
        self.exit_code = exit_codes.pop() if len(exit_codes) == 1 else 1
        hints = [h for h in dict.fromkeys(getattr(e, "hint", None) for e in failures.values()) if h]
        codes = {getattr(e, "code", None) for e in failures.values()}
        super().__init__(f"{len(failures)} host(s) failed: " + "; ".join(parts), hint=" ".join(hints) or None,
                         code=codes.pop() if len(codes) == 1 and None not in codes else None)


def on_hosts(names: list[str], work: Callable[[str], object], *, parallel: bool = True) -> dict[str, object]:
    """Run ``work(name)`` for every host; all finish even when some fail; failures are raised together."""
    results: dict[str, object] = {}
    failures: dict[str, BaseException] = {}
    if parallel and len(names) > 1:
        with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
            futures = {name: pool.submit(work, name) for name in names}
            for name, future in futures.items():
                try:
                    results[name] = future.result()
                except Exception as exc:  # reported per host below
                    failures[name] = exc
    else:
        for name in names:
            try:
                results[name] = work(name)
            except Exception as exc:
                failures[name] = exc
    if failures:
        raise HostsFailed(failures)
    return results


def one_host_at_a_time(names: list[str], work: Callable[[str], object]) -> None:
    """Run ``work(name)`` host after host (rollouts: the others keep serving); stop at the first failure,
    reported with the host's name like ``on_hosts`` does."""
    for name in names:
        try:
            work(name)
        except Exception as exc:
            raise HostsFailed({name: exc}) from None


# ------------------------------------------------------------------------------------------------ identity
class HostFacts:
    """What a host is: checked once per connection."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self._facts: dict | None = None

    def get(self) -> dict:
        if self._facts is None:
            out = sh(self.conn, 'id -u; . /etc/os-release 2>/dev/null; echo "${ID:-unknown}"; '
                                'echo "${VERSION_ID:-}"; command -v python3 || true; '
                                'if [ -d /run/systemd/system ]; then echo running; else echo none; fi',
                     timeout=30).text.splitlines()
            out += [""] * (5 - len(out))
            self._facts = {"uid": int(out[0]), "os": out[1], "os_version": out[2], "python3": out[3],
                           "systemd": out[4].strip() in ("running", "degraded")}
        return self._facts

    @property
    def is_root(self) -> bool:
        return self.get()["uid"] == 0


# Run by the login's python3 on a host: which interpreters another account (the app's: no home, no
# groups) can execute, each with the first folder on its way that others cannot enter (or null).
_INTERPRETERS = r"""
import json, os, sys
def closed(path):
    real = os.path.realpath(path)
    folders, folder = [], os.path.dirname(real)
    while True:
        folders.append(folder)
        if folder == os.path.dirname(folder):
            break
        folder = os.path.dirname(folder)
    for folder in reversed(folders):
        if not os.stat(folder).st_mode & 0o001:
            return folder
    return None if os.stat(real).st_mode & 0o001 else real
found = []
for path in dict.fromkeys([sys.executable, *sys.argv[1:]]):
    if path and os.path.exists(path):
        found.append([path, closed(path)])
print(json.dumps(found))
"""
SYSTEM_PYTHON = "/usr/bin/python3"

# Run on a host: processes whose command line holds one of argv's strings, each as [pid, start time (clock
# ticks since boot: with the pid, it names one process for good), argv].
_FIND_PROCESSES = r"""
import json, os, sys
needles = [n.encode() for n in sys.argv[1:]]
found = []
for entry in os.listdir("/proc"):
    if not entry.isdigit() or int(entry) in (os.getpid(), os.getppid()):
        continue
    try:
        with open("/proc/%s/cmdline" % entry, "rb") as handle:
            raw = handle.read()
        with open("/proc/%s/stat" % entry) as handle:
            fields = handle.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        continue
    if raw and fields[0] != "Z" and any(n in raw for n in needles):
        found.append([int(entry), fields[19], [a.decode("utf-8", "surrogateescape") for a in raw.split(b"\0")[:-1]]])
print(json.dumps(found))
"""
# Run on a host: the processes named on stdin ([[pid, start], ...]) asked to end (SIGTERM), killed after
# a grace period, and waited for; a pid that now names another process is left alone.
_STOP_PROCESSES = r"""
import json, os, signal, sys, time
targets = json.loads(sys.stdin.read())
def same(pid, start):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            fields = handle.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[19] == start and fields[0] != "Z"
for sig, grace in ((signal.SIGTERM, float(sys.argv[1])), (signal.SIGKILL, 10.0)):
    live = [(pid, start) for pid, start in targets if same(pid, start)]
    for pid, _ in live:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    deadline = time.time() + grace
    while time.time() < deadline and any(same(pid, start) for pid, start in live):
        time.sleep(0.05)
print(json.dumps([pid for pid, start in targets if same(pid, start)]))
"""


def find_processes(conn: Connection, *needles: str) -> list[tuple[int, str, list[str]]]:
    """(pid, start time, argv) of the host's processes whose command line holds one of ``needles``."""
    import json

    found = conn.run(["python3", "-c", _FIND_PROCESSES, *needles], timeout=60).stdout.decode()
    return [(int(pid), start, argv) for pid, start, argv in json.loads(found)]


def stop_processes(conn: Connection, processes, *, grace: float = 5) -> int:
    """End ``processes`` (from :func:`find_processes`) on the host and wait until they are gone: programs a
    killed run left behind, stopped before the next run touches their files. Returns how many."""
    import json

    targets = [[pid, start] for pid, start, *_ in processes]
    if not targets:
        return 0
    left = json.loads(conn.run(["python3", "-c", _STOP_PROCESSES, str(grace)], input=json.dumps(targets).encode(),
                               timeout=grace + 60).stdout.decode())
    if left:
        raise ProviderError(f"{conn.host}: programs a killed run left behind do not end (pids "
                            f"{', '.join(map(str, left))}).", hint="stop them by hand, then run it again.",
                            code="host.leftovers")
    return len(targets)


def app_interpreter(conn: Connection, *, system: tuple[str, ...] = (SYSTEM_PYTHON,)) -> str:
    """The python3 the app's virtualenvs are made from when the apps run under their own account: the
    login's python3 where that account can execute it, else the system's. A login whose PATH starts with
    an interpreter in a closed folder (root's pyenv under a 0700 home) would give venvs the app cannot
    start. ProviderError (``host.python_unusable``) naming the folder when none fits."""
    import json

    result = conn.run(["python3", "-c", _INTERPRETERS, *system], timeout=30, check=False)
    try:
        found = json.loads(result.stdout.decode())
    except ValueError:
        found = []
    for path, closed in found:
        if closed is None:
            return path
    detail = "; ".join(f"{path} (the folder {closed} is closed to other accounts)" for path, closed in found)
    raise ProviderError(f"{conn.host}: the app's account cannot run any python3 here: {detail or 'none found'}. "
                        "Its virtualenvs would be made from an interpreter it cannot start.",
                        hint=f"install python3 and python3-venv system-wide ({SYSTEM_PYTHON}), or let other "
                             "accounts enter that folder (chmod o+x).", code="host.python_unusable")


def packages_needed(roles: tuple[str, ...], *, postgres: int | None, redis: bool, tls: bool, runtime: str,
                    app: bool) -> list[str]:
    """Debian/Ubuntu packages a host needs for its roles (a pure function, tested as data)."""
    wanted = ["python3", "python3-venv", "tar", "coreutils", "util-linux"]
    if "db" in roles:
        if postgres:
            wanted += [f"postgresql-{postgres}", "postgresql-contrib"]
        if redis:
            wanted += ["redis-server", "redis-tools"]
    if app and runtime == "docker":
        wanted.append("docker.io")
    if "web" in roles and tls:
        wanted.append("caddy")
    return list(dict.fromkeys(wanted))


def missing_packages(conn: Connection, packages: list[str]) -> list[str]:
    script = ('for p in "$@"; do s=$(dpkg-query -W -f=\'${db:Status-Status}\' "$p" 2>/dev/null); '
              '[ "$s" = installed ] || echo "$p"; done')
    return sh(conn, script, *packages).text.split()


def install_packages(conn: Connection, packages: list[str]) -> None:
    if not packages:
        return
    conn.run(["apt-get", "update", "-qq"], timeout=600, env={"DEBIAN_FRONTEND": "noninteractive"})
    conn.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], timeout=1800,
             env={"DEBIAN_FRONTEND": "noninteractive"})


def ensure_account(conn: Connection, account: str) -> None:
    # another process may be making it at the same moment (useradd then fails, or finds /etc/passwd locked)
    sh(conn, 'for try in 1 2 3 4 5; do id -u "$1" >/dev/null 2>&1 && exit 0; useradd --system --no-create-home '
             '--home-dir /nonexistent --shell /usr/sbin/nologin "$1" 2>/dev/null && exit 0; sleep 1; done; '
             'id -u "$1" >/dev/null', account)


# ------------------------------------------------------------------------------------------------ postgres
class PostgresHost:
    """A PostgreSQL cluster owned by Lifeboat on one host, under ``<root>/postgres``."""

    def __init__(self, conn: Connection, *, root: str, version: int, listen: str, port: int,
                 account: str = "lifeboat", as_root: bool = True, bindir: str | None = None, wal: bool = False):
        self.conn = conn
        self.base = f"{root}/postgres"
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
        them: None, "reload", or "restart" (archive_mode turned on or off)."""
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
                archiving = b"archive_mode = on" in (before or b"")
                needs = "restart" if name == "lifeboat.conf" and archiving != (b"archive_mode = on" in body) \
                    else needs or "reload"
        return needs

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
        self.stop()
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


# ------------------------------------------------------------------------------------------------ redis
class RedisHost:
    def __init__(self, conn: Connection, *, root: str, listen: str, port: int):
        self.conn = conn
        self.base = f"{root}/redis"
        self.listen = listen
        self.port = port

    def check(self) -> str:
        result = self.conn.run(["redis-server", "--version"], check=False)
        if not result.ok:
            raise ProviderError(f"{self.conn.host}: redis-server is not installed.",
                                hint="install it on the host (Debian: apt-get install redis-server).",
                                code="host.missing_redis")
        return result.text.strip()

    def ping(self, password: bytes) -> bool:
        result = self.conn.run(["redis-cli", "-h", self.listen, "-p", str(self.port), "ping"],
                               env={"REDISCLI_AUTH": password.decode()}, check=False, timeout=10)
        return result.ok and result.text.strip() == "PONG"

    def pid(self) -> int | None:
        raw = self.conn.read_bytes(f"{self.base}/redis.pid")
        try:
            return int(raw.strip()) if raw else None
        except ValueError:
            return None

    def running(self) -> bool:
        pid = self.pid()
        return bool(pid) and self.conn.run(["kill", "-0", str(pid)], check=False).ok

    def start(self, password: bytes) -> None:
        sh(self.conn, 'mkdir -p "$1" && chmod 700 "$1"', self.base)
        conf = pgcommands.redis_conf(port=self.port, data_dir=Path(self.base), pid_file=Path(f"{self.base}/redis.pid"),
                                     log_file=Path(f"{self.base}/redis.log"), password=password.decode(),
                                     bind=self.listen)
        self.conn.write_bytes(f"{self.base}/redis.conf", conf.encode(), mode=0o600)
        if not self.running():
            sh(self.conn, 'umask 077; exec redis-server "$1"', f"{self.base}/redis.conf", timeout=30)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.ping(password):
                return
            time.sleep(0.2)
        log = self.conn.read_bytes(f"{self.base}/redis.log") or b""
        raise ProviderError(f"{self.conn.host}: redis-server did not answer on {self.listen}:{self.port}.\n"
                            f"{log.decode(errors='replace')[-1000:]}", code="host.redis_start")

    def remove(self) -> None:
        pid = self.pid()
        if pid:
            sh(self.conn, 'kill "$1" 2>/dev/null; for i in $(seq 1 50); do kill -0 "$1" 2>/dev/null || exit 0; '
                          'sleep 0.2; done; kill -9 "$1" 2>/dev/null; exit 0', pid)
        self.conn.run(["rm", "-rf", self.base])


# ------------------------------------------------------------------------------------------------ releases
def tar_directory(directory: Path, skip: set[str]) -> Callable[[object], None]:
    """A writer that streams ``directory`` as a tar archive into a binary stream."""

    def write(stream) -> None:
        def keep(info: tarfile.TarInfo):
            parts = Path(info.name).parts
            if any(p in skip or p.endswith(".egg-info") for p in parts) or info.name.endswith((".pyc", ".pyo")):
                return None
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            return info

        with tarfile.open(fileobj=stream, mode="w|") as tar:
            tar.add(str(directory), arcname=".", filter=keep)

    return write


class Releases:
    """App code on a host: ``<root>/releases/<service>/<release>``, kept for rollback, plus virtualenvs."""

    KEEP = 3

    def __init__(self, conn: Connection, root: str):
        self.conn = conn
        self.root = root

    def path(self, service: str, release: str) -> str:
        return f"{self.root}/releases/{service}/{release}"

    def upload(self, service: str, release: str, build: Path, skip: set[str]) -> str:
        final = self.path(service, release)
        if self.conn.read_bytes(f"{final}/.lifeboat-release") is not None:
            return final
        tmp = f"{final}.partial"
        sh(self.conn, 'rm -rf "$1" && mkdir -p "$1"', tmp)
        with self.conn.write_stream(["tar", "-x", "--no-same-owner", "-C", tmp, "-f", "-"]) as sink:
            tar_directory(build, skip)(sink)
        self.conn.write_bytes(f"{tmp}/.lifeboat-release", release.encode(), mode=0o644)
        sh(self.conn, 'rm -rf "$2" && mv "$1" "$2"', tmp, final)
        return final

    def venv_path(self, requirements: bytes | None) -> str | None:
        if requirements is None:
            return None
        return f"{self.root}/venvs/{hashlib.sha256(requirements).hexdigest()[:12]}"

    def venv(self, requirements: bytes | None, *, events=None, host: str = "", python: str = "python3") -> str | None:
        """The app's virtualenv for ``requirements``, made from ``python`` (see :func:`app_interpreter`)."""
        if requirements is None:
            return None
        venv = self.venv_path(requirements)
        digest = venv.rsplit("/", 1)[1]
        if self.conn.read_bytes(f"{venv}/.complete") is not None:
            return venv
        # A run killed while it built this one leaves `python3 -m venv`, ensurepip or pip running: they
        # would keep writing into the folder this build clears and fills. Stopped (and waited for) first.
        stopped = stop_processes(self.conn, find_processes(self.conn, venv))
        if events:
            events.step(f"{host}: building a virtualenv ({digest})"
                        + (f"; stopped {stopped} programs of a killed build first" if stopped else ""))
        sh(self.conn, 'rm -rf "$1" && mkdir -p "$(dirname "$1")"', venv)
        self.conn.run([python, "-m", "venv", venv], timeout=300)
        self.conn.write_bytes(f"{venv}/requirements.txt", requirements, mode=0o644)
        try:
            self.conn.run([f"{venv}/bin/python", "-m", "pip", "install", "--disable-pip-version-check", "-q",
                           "-r", f"{venv}/requirements.txt"], timeout=1200)
        except CommandFailed as exc:
            raise ProviderError(f"{self.conn.host}: installing the app's requirements failed: {exc.message}",
                                code="host.build") from None
        self.conn.write_bytes(f"{venv}/.complete", b"ok", mode=0o644)
        return venv

    def prune(self, service: str, keep: list[str]) -> None:
        """Remove all but the newest KEEP releases (and always keep ``keep``)."""
        base = f"{self.root}/releases/{service}"
        listing = sh(self.conn, 'cd "$1" 2>/dev/null && ls -1t || true', base).text.split()
        doomed = [r for r in listing[self.KEEP:] if r not in keep and not r.endswith(".partial")]
        if doomed:
            self.conn.run(["rm", "-rf", *[f"{base}/{r}" for r in doomed]])


# ------------------------------------------------------------------------------------------------ processes
class ProcessRuntime:
    """Services as processes kept alive by Lifeboat's supervisor (stdlib only, uploaded to the host)."""

    def __init__(self, conn: Connection, root: str):
        self.conn = conn
        self.root = root
        self.dir = f"{root}/services"

    def _pid(self) -> int | None:
        raw = self.conn.read_bytes(f"{self.dir}/supervisor.pid")
        if not raw:
            return None
        pid = raw.decode().strip()
        result = sh(self.conn, 'tr "\\0" " " < "/proc/$1/cmdline" 2>/dev/null', pid, check=False)
        return int(pid) if result.ok and "supervisor.py" in result.text else None

    def running(self) -> bool:
        return self._pid() is not None

    def status(self) -> dict:
        raw = self.conn.read_bytes(f"{self.dir}/status.json")
        try:
            return json.loads(raw).get("programs", {}) if raw else {}
        except ValueError:
            return {}

    def write_env(self, program: str, env: dict[str, str], *, tag: str | None = None) -> str:
        """Write a program's environment (0600). With ``tag`` (a generation) each generation gets its own
        file, so writing the next one does not change what the running generation's definition is."""
        path = f"{self.dir}/env/{program}.{tag}.json" if tag else f"{self.dir}/env/{program}.json"
        self.conn.write_bytes(path, json.dumps(env).encode(), mode=0o600)
        return path

    def prune_env(self, keep: list[str]) -> None:
        """Remove environment files no program uses any more."""
        names = sh(self.conn, 'cd "$1/env" 2>/dev/null && ls -1 || true', self.dir).text.split()
        doomed = [f"{self.dir}/env/{n}" for n in names if f"{self.dir}/env/{n}" not in keep]
        if doomed:
            self.conn.run(["rm", "-f", *doomed])

    def prepare(self) -> None:
        sh(self.conn, 'mkdir -p "$1/env" "$1/logs" && chmod 700 "$1" "$1/env" "$1/logs"', self.dir)
        source = SUPERVISOR_SOURCE.read_bytes()
        if self.conn.read_bytes(f"{self.dir}/supervisor.py") != source:
            self.conn.write_bytes(f"{self.dir}/supervisor.py", source, mode=0o600)

    def apply(self, programs: list[dict]) -> None:
        self.prepare()
        self.conn.write_bytes(f"{self.dir}/supervisor.json", json.dumps({"programs": programs}).encode())
        pid = self._pid()
        if pid:
            self.conn.run(["kill", "-HUP", str(pid)])
            return
        self.reap()
        self.conn.run(["rm", "-f", f"{self.dir}/status.json"])
        sh(self.conn, 'cd "$1" && umask 077 && nohup setsid python3 supervisor.py supervisor.json '
                      '>> supervisor.log 2>&1 < /dev/null &', self.dir)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self._pid():
                return
            time.sleep(0.1)
        log = self.conn.read_bytes(f"{self.dir}/supervisor.log") or b""
        raise ProviderError(f"{self.conn.host}: the process supervisor did not start.\n"
                            f"{log.decode(errors='replace')[-800:]}", code="host.supervisor")

    def reap(self, names: list[str] | None = None) -> None:
        """Stop programs a dead supervisor left running (see toolkit.supervisor --reap)."""
        if self.conn.read_bytes(f"{self.dir}/supervisor.py") is None:
            return
        argv = ["python3", f"{self.dir}/supervisor.py", "--reap", f"{self.dir}/status.json", *(names or [])]
        self.conn.run(argv, check=False, timeout=60)

    def stop(self) -> None:
        pid = self._pid()
        if pid:
            sh(self.conn, 'kill -TERM "$1"; for i in $(seq 1 150); do kill -0 "$1" 2>/dev/null || exit 0; '
                          'sleep 0.2; done; kill -9 "$1"', pid, check=False, timeout=60)
        self.reap()

    def http_ok(self, url: str) -> bool:
        """Health check run on the host itself (the port need not be reachable from here)."""
        code = ("import sys, urllib.request\ntry:\n    r = urllib.request.urlopen(sys.argv[1], timeout=3)\n"
                "    sys.exit(0 if 200 <= r.status < 400 else 1)\nexcept Exception:\n    sys.exit(1)\n")
        return self.conn.run(["python3", "-c", code, url], check=False, timeout=20).ok

    def https_ok(self, address: str, port: int, domain: str, path: str = "/") -> bool:
        """Through the proxy on the host: a TLS handshake for ``domain`` (SNI) and an HTTP answer below 500.
        The chain is checked by whoever trusts the CA; here we check the proxy serves the site."""
        code = ("import socket, ssl, sys\naddress, port, domain, path = sys.argv[1:5]\n"
                "ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n"
                "try:\n    s = ctx.wrap_socket(socket.create_connection((address, int(port)), timeout=5), "
                "server_hostname=domain)\n"
                "    s.sendall(f'GET {path} HTTP/1.1\\r\\nHost: {domain}\\r\\nConnection: close\\r\\n\\r\\n'.encode())\n"
                "    status = int(s.recv(64).split()[1])\n    sys.exit(0 if status < 500 else 1)\n"
                "except Exception:\n    sys.exit(1)\n")
        return self.conn.run(["python3", "-c", code, address, str(port), domain, path], check=False, timeout=20).ok

    def log_tail(self, program: str) -> str:
        raw = self.conn.read_bytes(f"{self.dir}/logs/{program}.log") or b""
        return raw.decode(errors="replace")[-1500:]


def systemd_quote(arg: str) -> str:
    """One ExecStart= word: double-quoted with C escapes, ``%`` and ``$`` doubled (no specifiers, no
    variable expansion: the value is passed as given)."""
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("%", "%%")
    return '"' + escaped.replace("$", "$$") + '"'


class SystemdRuntime(ProcessRuntime):
    """Services as systemd units, where systemd runs and Lifeboat logs in as root: one unit per program
    (``lifeboat-<id of root>-<program>.service``, enabled, Restart=always), so they come back after a
    reboot. The unit starts the supervisor script in ``--exec`` mode as root, which reads the program's
    0600 environment file, switches to the program's account and execs it (values never appear in the
    unit or on a command line). Same program definitions, status, logs and rollouts as ProcessRuntime."""

    UNIT_DIR = "/etc/systemd/system"

    def __init__(self, conn: Connection, root: str, python: str):
        super().__init__(conn, root)
        self.python = python  # the host's python3 (HostFacts), which runs the exec helper
        self.prefix = f"lifeboat-{hashlib.sha256(root.encode()).hexdigest()[:8]}-"

    def unit(self, program: str) -> str:
        return f"{self.prefix}{program}.service"

    def _units(self) -> list[str]:
        listing = sh(self.conn, 'cd "$1" && for f in "$2"*.service; do [ -e "$f" ] && echo "$f"; done; true',
                     self.UNIT_DIR, self.prefix).text.split()
        return sorted(listing)

    def running(self) -> bool:
        return bool(self._units())

    def status(self) -> dict:
        units = self._units()
        if not units:
            return {}
        generations = json.loads(self.conn.read_bytes(f"{self.dir}/units.json") or b"{}")
        shown = self.conn.run(["systemctl", "show", "--property=Id,ActiveState,SubState,MainPID,NRestarts",
                               *units], timeout=30).text
        out = {}
        for block in shown.strip().split("\n\n"):
            props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            name = props.get("Id", "")[len(self.prefix):-len(".service")]
            active, sub, restarts = props.get("ActiveState"), props.get("SubState"), int(props.get("NRestarts") or 0)
            if active == "active" and sub == "running":
                state = "running"
            elif active == "failed" or (sub == "auto-restart" and restarts >= 3):
                state = "crashed"
            elif active == "activating" or sub == "auto-restart":
                state = "restarting"
            else:
                state = "stopped"
            out[name] = {"pid": int(props.get("MainPID") or 0) or None, "state": state, "restarts": restarts,
                         "generation": generations.get(name)}
        return out

    def _unit_text(self, program: dict) -> str:
        env = (self.conn.read_bytes(program["env_file"]) or b"") if program.get("env_file") else b""
        argv = [self.python, f"{self.dir}/supervisor.py", "--exec", program.get("env_file") or "",
                program.get("user") or "", program.get("cwd") or "/", *program["argv"]]
        return "\n".join([
            "# Written by Lifeboat; `lifeboat destroy` removes it.",
            f"# generation {program.get('generation')}; environment {hashlib.sha256(env).hexdigest()[:16]}",
            "[Unit]", f"Description=Lifeboat {self.root}: {program['name']}",
            "After=network-online.target", "StartLimitIntervalSec=0", "",
            "[Service]", "Type=simple", "ExecStart=" + " ".join(systemd_quote(a) for a in argv),
            "Restart=always", "RestartSec=2", "KillMode=control-group", "TimeoutStopSec=10",
            f"StandardOutput=append:{program['log']}", "StandardError=inherit", "",
            "[Install]", "WantedBy=multi-user.target", ""])

    def apply(self, programs: list[dict]) -> None:
        self.prepare()
        if ProcessRuntime.running(self):  # the supervisor ran these before: hand them over
            ProcessRuntime.stop(self)
        wanted = {self.unit(p["name"]): self._unit_text(p) for p in programs}
        doomed = [u for u in self._units() if u not in wanted]
        changed = []
        for unit, text in wanted.items():
            if self.conn.read_bytes(f"{self.UNIT_DIR}/{unit}") != text.encode():
                self.conn.write_bytes(f"{self.UNIT_DIR}/{unit}", text.encode(), mode=0o644)
                changed.append(unit)
        if doomed:
            self.conn.run(["systemctl", "disable", "--now", "--quiet", *doomed], check=False, timeout=120)
            self.conn.run(["rm", "-f", *[f"{self.UNIT_DIR}/{u}" for u in doomed]])
        self.conn.run(["systemctl", "daemon-reload"], timeout=60)
        self.conn.write_bytes(f"{self.dir}/units.json",
                              json.dumps({p["name"]: p.get("generation") for p in programs}).encode(), mode=0o600)
        if wanted:
            self.conn.run(["systemctl", "enable", "--quiet", *wanted], timeout=60)
        if changed:
            self.conn.run(["systemctl", "restart", *changed], timeout=120)
        unchanged = [u for u in wanted if u not in changed]
        if unchanged:
            self.conn.run(["systemctl", "start", *unchanged], timeout=120)

    def reap(self, names: list[str] | None = None) -> None:
        units = [self.unit(n) for n in names] if names else self._units()
        if units:
            self.conn.run(["systemctl", "stop", *units], check=False, timeout=120)

    def stop(self) -> None:
        units = self._units()
        if units:
            self.conn.run(["systemctl", "disable", "--now", "--quiet", *units], check=False, timeout=120)
            self.conn.run(["rm", "-f", *[f"{self.UNIT_DIR}/{u}" for u in units]])
            self.conn.run(["systemctl", "daemon-reload"], timeout=60)
        ProcessRuntime.stop(self)


# ------------------------------------------------------------------------------------------------ lock
class HostLock:
    """Kamal-style: an atomic ``mkdir`` on the primary host; the holder is recorded inside."""

    def __init__(self, conn: Connection, root: str, label: str):
        self.conn = conn
        self.path = f"{root}/lock"
        self.label = label
        self._local = threading.local()

    def holder(self) -> dict | None:
        raw = self.conn.read_bytes(f"{self.path}/holder.json")
        if raw is None:
            exists = self.conn.run(["test", "-d", self.path], check=False).ok
            return {"owner": "unknown", "since": "unknown"} if exists else None
        try:
            return json.loads(raw)
        except ValueError:
            return {"owner": "unknown", "since": "unknown"}

    def acquire(self, owner: str, command: str) -> None:
        sh(self.conn, 'mkdir -p "$(dirname "$1")"', self.path)
        took = self.conn.run(["mkdir", self.path], check=False).ok
        if not took:
            held = self.holder() or {}
            if gone_here(held.get("machine"), held.get("pid")):  # left by a run killed here: take it over
                self.conn.run(["rm", "-rf", self.path])
                took = self.conn.run(["mkdir", self.path], check=False).ok
        if not took:
            held = self.holder() or {}
            raise LockHeld(f"{self.label}: another run holds the lock: {held.get('owner', 'unknown')} "
                           f"(`{held.get('command', '?')}`) since {held.get('since', 'an unknown time')}.",
                           hint=f"wait for it; if it died, check then run `lifeboat lock release --on "
                                f"{self.label.split(' ')[0]}`.")
        body = {"owner": owner, "command": command, "pid": os.getpid(), "machine": socket.gethostname(),
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            self.conn.write_bytes(f"{self.path}/holder.json", json.dumps(body).encode(), mode=0o600)
        except BaseException:  # a lock nobody is named in would stop every later run: give it back
            self.conn.run(["rm", "-rf", self.path], check=False)
            raise

    def release(self) -> None:
        self.conn.run(["rm", "-rf", self.path])


__all__ = ["sh", "on_hosts", "HostsFailed", "HostFacts", "PostgresHost", "RedisHost", "Releases",
           "ProcessRuntime", "HostLock", "DockerRuntime", "one_host_at_a_time", "quote_ident",
           "quote_literal"]


# ------------------------------------------------------------------------------------------------ docker
class DockerRuntime:
    """Services as containers of the host's Docker engine, images built on the host from the uploaded
    release (or loaded from another host with ``docker save | docker load``: no registry needed)."""

    def __init__(self, conn: Connection, root: str, *, stack: str, host: str, docker_host: str | None = None):
        from toolkit.commands import dockercmd

        self.cmd = dockercmd
        self.conn = conn
        self.root = root
        self.stack = stack
        self.host = host
        self.env = {"DOCKER_HOST": docker_host} if docker_host else None
        self.dir = f"{root}/containers"

    def run(self, argv: list[str], **kw):
        return self.conn.run(argv, env=self.env, **kw)

    def check(self) -> str:
        result = self.run(["docker", "version", "--format", "{{.Server.Version}}"], check=False, timeout=30)
        if not result.ok:
            why = result.stderr.decode(errors="replace").strip()[-300:]
            raise ProviderError(f"{self.conn.host}: no Docker engine answers ({why}).",
                                hint="install and start Docker on the host, or set docker_host for it.",
                                code="host.missing_docker")
        return f"docker {result.text.strip()}"

    def has_image(self, tag: str) -> bool:
        return self.run(self.cmd.image_exists(tag), check=False).ok

    def build(self, tag: str, context: str, base_image: str | None) -> None:
        if self.conn.read_bytes(f"{context}/Dockerfile") is None:
            raise BadDockerfile(f"{self.conn.host}: the docker runtime builds from a Dockerfile, and the build "
                                "directory has none.", hint="add a Dockerfile to the service's build: directory, "
                                "or use the process runtime.")
        try:
            self.run(self.cmd.build(tag, context, base_image=base_image), timeout=1800)
        except CommandFailed as exc:
            raise ProviderError(f"{self.conn.host}: docker build of {tag} failed: {exc.message}",
                                code="host.docker_build") from None

    def send_image(self, tag: str, other: DockerRuntime) -> None:
        """Copy an image to another host's engine as a stream (save | load), nothing written to disk."""
        with self.conn.read_stream(self.cmd.save(tag), env=self.env) as source, \
                other.conn.write_stream(other.cmd.load(), env=other.env) as sink:
            shutil.copyfileobj(source, sink, 1 << 20)

    def containers(self) -> dict[str, dict]:
        result = self.run(self.cmd.list_containers(self.stack), check=False, timeout=30)
        out = {}
        for line in result.text.splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            labels = dict(kv.split("=", 1) for kv in (item.get("labels") or "").split(",") if "=" in kv)
            out[item["name"]] = {"state": item.get("state"), "labels": labels}
        return out

    def programs(self) -> dict[str, dict]:
        """The stack's containers on this host in the supervisor's terms: program name ("web.0") -> state,
        generation and container name."""
        out = {}
        for name, c in self.containers().items():
            if name.startswith(f"lifeboat-{self.stack}-{self.host}-"):
                labels = c["labels"]
                program = f"{labels.get('lifeboat.stack.service')}.{labels.get('lifeboat.stack.replica')}"
                out[program] = {"state": c["state"], "generation": labels.get("lifeboat.stack.generation"),
                                "pid": None, "container": name}
        return out

    def mine(self, service: str) -> dict[str, dict]:
        prefix = f"lifeboat-{self.stack}-{self.host}-{service}-"
        return {n: c for n, c in self.containers().items() if n.startswith(prefix)}

    def deploy(self, service: str, *, image: str, command: list[str], envs: list[dict[str, str]], generation: str,
               healthy: Callable[[int], bool], timeout: float = 90.0, volumes: tuple[str, ...] = ()) -> None:
        """Replace the service's containers one replica at a time: stop the old one, start the new, wait
        until it is healthy, then the next (the others, and other hosts, keep serving meanwhile)."""
        sh(self.conn, 'mkdir -p "$1" && chmod 700 "$1"', self.dir)
        current = self.mine(service)
        for replica, env in enumerate(envs):
            name = self.cmd.container_name(self.stack, self.host, service, replica)
            found = current.get(name)
            if found and found["state"] == "running" and found["labels"].get("lifeboat.stack.generation") == generation:
                continue
            env_path = f"{self.dir}/{service}.{replica}.env"
            self.conn.write_bytes(env_path, self.cmd.env_file(env), mode=0o600)
            if found:
                self.run(self.cmd.stop(name), check=False, timeout=60)
                self.run(self.cmd.remove(name), check=False, timeout=60)
            self.run(self.cmd.run(name, image, command, env_file=env_path, stack=self.stack, service=service,
                                  replica=replica, generation=generation, volumes=volumes), timeout=120)
            deadline = time.time() + timeout
            while time.time() < deadline:
                state = self.mine(service).get(name, {}).get("state")
                if state == "running" and healthy(replica):
                    break
                if state in ("exited", "dead"):
                    deadline = 0
                    break
                time.sleep(0.5)
            else:
                deadline = 0
            if not deadline:
                log = self.run(self.cmd.logs(name), check=False)
                raise ProviderError(f"{self.conn.host}: container {name} did not become healthy. Its log ends "
                                    f"with:\n{(log.stdout + log.stderr).decode(errors='replace')[-1200:]}",
                                    code="host.unhealthy")
        for name in current:
            replica = int(name.rsplit("-", 1)[1])
            if replica >= len(envs):
                self.run(self.cmd.remove(name), check=False, timeout=60)
                self.conn.run(["rm", "-f", f"{self.dir}/{service}.{replica}.env"])

    def pause_service(self, service: str) -> None:
        """Stop the service's containers, keeping them (a write freeze); `resume_service` starts them."""
        for name, found in sorted(self.mine(service).items()):
            if found["state"] == "running":
                self.run(self.cmd.stop(name), timeout=60)

    def resume_service(self, service: str, healthy: Callable[[int], bool], timeout: float = 90.0) -> None:
        for name, found in sorted(self.mine(service).items()):
            replica = int(name.rsplit("-", 1)[1])
            if found["state"] != "running":
                self.run(self.cmd.start(name), timeout=60)
            deadline = time.time() + timeout
            while not (self.mine(service).get(name, {}).get("state") == "running" and healthy(replica)):
                if time.time() > deadline:
                    raise ProviderError(f"{self.conn.host}: container {name} did not become healthy again "
                                        f"within {timeout:.0f} s.", code="host.unhealthy")
                time.sleep(0.5)

    def remove_service(self, service: str) -> None:
        for name in self.mine(service):
            self.run(self.cmd.remove(name), check=False, timeout=60)
        self.conn.run(["sh", "-c", 'rm -f "$0"/"$1".*.env', self.dir, service])

    def remove_all(self) -> None:
        for name in self.containers():
            if name.startswith(f"lifeboat-{self.stack}-{self.host}-"):
                self.run(self.cmd.remove(name), check=False, timeout=60)

    def prune_images(self, service: str, keep: list[str], count: int = 3) -> None:
        tags = [t for t in self.run(self.cmd.list_images(self.stack, service), check=False).text.split() if t]
        for tag in tags[count:]:
            if tag not in keep:
                self.run(self.cmd.remove_image(f"lifeboat/{self.stack}-{service}:{tag}"), check=False)

    def remove_images(self, services: list[str]) -> None:
        for service in services:
            for tag in [t for t in self.run(self.cmd.list_images(self.stack, service), check=False).text.split() if t]:
                self.run(self.cmd.remove_image(f"lifeboat/{self.stack}-{service}:{tag}"), check=False)


class BadDockerfile(ProviderError):
    code = "host.no_dockerfile"
