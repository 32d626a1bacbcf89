"""Pure builders of PostgreSQL and Redis command lines and config files (argv lists, tested as data).

Nothing here runs anything. Values that are secrets (passwords) never appear in an argv: they go in
files with mode 0600 or in the child's environment (PGPASSWORD).
"""

from __future__ import annotations

import re
from pathlib import Path


def pg_conf_quote(value: str) -> str:
    """Quote a string for postgresql.conf (single quotes, doubled inside)."""
    return "'" + str(value).replace("'", "''") + "'"


def initdb(bindir: Path, data_dir: Path, *, superuser: str, pwfile: Path) -> list[str]:
    return [str(bindir / "initdb"), "-D", str(data_dir), "-U", superuser, f"--pwfile={pwfile}",
            "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
            "--no-instructions"]


def postgres_conf(*, port: int, socket_dir: Path, listen: str = "127.0.0.1", wal_spool: Path | None = None) -> str:
    """Settings Lifeboat owns, written to lifeboat.conf and included from postgresql.conf. ``wal_spool``:
    archive every finished WAL segment into that directory (a segment at least every minute while
    anything is written), where ``lifeboat backup`` picks them up."""
    text = (
        "# Written by Lifeboat; changes are overwritten on the next `lifeboat up`.\n"
        f"listen_addresses = {pg_conf_quote(listen)}\n"
        f"port = {int(port)}\n"
        f"unix_socket_directories = {pg_conf_quote(str(socket_dir))}\n"
        "logging_collector = off\n"
        "wal_level = replica\n"
        "max_wal_senders = 3\n"
    )
    if wal_spool is not None:
        text += ("archive_mode = on\n"
                 f"archive_command = {pg_conf_quote(archive_command(wal_spool))}\n"
                 "archive_timeout = 60\n")
    return text


def archive_command(spool: Path) -> str:
    """PostgreSQL's archive_command: copy the segment into ``spool`` durably under a temporary name, then
    rename it. A segment already there with the same content counts as archived (a retry after a crash);
    one with other content fails, so PostgreSQL keeps it and retries."""
    import shlex

    at = shlex.quote(str(spool))
    return (f'if [ -f {at}/"%f" ]; then cmp -s "%p" {at}/"%f"; '
            f'else cp "%p" {at}/"%f.part" && sync {at}/"%f.part" && mv {at}/"%f.part" {at}/"%f" && sync {at}; fi')


def pg_ctl_start(bindir: Path, data_dir: Path, log_file: Path, *, timeout: int = 60) -> list[str]:
    return [str(bindir / "pg_ctl"), "-D", str(data_dir), "-l", str(log_file), "-w", "-t", str(timeout), "start"]


def pg_ctl_restart(bindir: Path, data_dir: Path, log_file: Path, *, timeout: int = 120) -> list[str]:
    return [str(bindir / "pg_ctl"), "-D", str(data_dir), "-l", str(log_file), "-m", "fast", "-w", "-t", str(timeout),
            "restart"]


def pg_ctl_stop(bindir: Path, data_dir: Path, *, mode: str = "fast", timeout: int = 60) -> list[str]:
    return [str(bindir / "pg_ctl"), "-D", str(data_dir), "-m", mode, "-w", "-t", str(timeout), "stop"]


def pg_ctl_status(bindir: Path, data_dir: Path) -> list[str]:
    return [str(bindir / "pg_ctl"), "-D", str(data_dir), "status"]


#: parts of a database a parallel copy moves separately (all from one snapshot): the schema without
#: indexes and constraints, each table's rows, sequence values (and large objects), then indexes and
#: constraints. None is the whole database.
Part = str | tuple[str, str, str] | None


def _pattern(schema: str, table: str) -> str:
    """A pg_dump -t pattern matching exactly this table (double-quoted parts are literal)."""
    return '"' + schema.replace('"', '""') + '"."' + table.replace('"', '""') + '"'


def part_args(part: Part) -> list[str]:
    if part is None:
        return []
    if part in ("pre-data", "post-data"):
        return [f"--section={part}"]
    if part == "sequences":
        return ["--data-only", "--exclude-table-data=*.*"]
    kind, schema, table = part
    if kind != "table":
        raise ValueError(f"not a dump part: {part!r}")
    return ["--data-only", f"--table={_pattern(schema, table)}"]


def pg_dump(bindir: Path, *, host: str, port: int, user: str, database: str, compress: int = 1,
            snapshot: str | None = None, part: Part = None) -> list[str]:
    """Custom format to stdout: restorable table by table, streamable, no temporary file. ``snapshot``: dump
    what an exported snapshot sees (the digests of the copy are computed in the same one); ``part``: one
    part of a parallel copy."""
    argv = [str(bindir / "pg_dump"), "--format=custom", f"--compress={int(compress)}", "--no-password"]
    if snapshot:
        if not re.fullmatch(r"[0-9A-F]+-[0-9A-F]+-[0-9]+", snapshot):
            raise ValueError(f"not a snapshot id: {snapshot!r}")
        argv.append(f"--snapshot={snapshot}")
    return [*argv, *part_args(part), "-h", host, "-p", str(port), "-U", user, "-d", database]


def pg_restore(bindir: Path, *, host: str, port: int, user: str, database: str, clean: bool = True,
               part: Part = None, python: str = "python3") -> list[str]:
    """Restore a custom-format dump read from stdin in one transaction, owned by ``user``. Only the whole
    database or its schema part drop what they replace (``clean``). Run through :data:`KEEP_EXTENSIONS`,
    so extensions that ``user`` does not own on the target are left as they are."""
    argv = [str(bindir / "pg_restore"), "--no-password", "--no-owner", f"--role={user}", "--exit-on-error",
            "--single-transaction", "-h", host, "-p", str(port), "-U", user, "-d", database]
    if clean and part in (None, "pre-data"):
        argv[1:1] = ["--clean", "--if-exists"]
    return [python, "-c", KEEP_EXTENSIONS, *argv]


# Runs pg_restore (its argv follows) so that the extensions the restoring role does not own on the target
# are left as they are. An untrusted extension (bloom, postgis...) is created by the superuser when `up`
# makes the database; the dump says DROP EXTENSION (with --clean), CREATE EXTENSION IF NOT EXISTS and
# COMMENT ON EXTENSION, and the first and last need its owner: "must be owner of extension bloom". With no
# such extension on the target (the usual case), pg_restore is exec'd as it is. Otherwise the archive's
# table of contents is read from the start of the stream (``pg_restore -l`` fed until it has it; those
# bytes are kept), the entries of those extensions (EXTENSION, and COMMENT on EXTENSION) left out of the
# list, and pg_restore run with ``-L`` on the same stream: the order is the archive's, so a pipe serves.
# Python 3.6, standard library only: it runs on the db host.
KEEP_EXTENSIONS = r'''
import os, re, subprocess, sys, tempfile
argv = sys.argv[1:]
opts = dict(zip(argv, argv[1:]))
psql = os.path.join(os.path.dirname(argv[0]), "psql")
found = subprocess.run([psql, "-X", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1", "-h", opts["-h"], "-p", opts["-p"],
                        "-U", opts["-U"], "-d", opts["-d"], "-c",
                        "SELECT e.extname FROM pg_extension e JOIN pg_roles r ON r.oid = e.extowner "
                        "WHERE r.rolname <> current_user AND e.extname <> 'plpgsql'"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
if found.returncode != 0:
    sys.stderr.write(found.stderr.decode("utf-8", "replace"))
    sys.exit(found.returncode)
keep = set(found.stdout.decode().split())
if not keep:
    os.execv(argv[0], argv)
lister = subprocess.Popen([argv[0], "-l"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
held = []
import threading
listed = []
reader = threading.Thread(target=lambda: listed.append(lister.stdout.read()))
reader.start()
while lister.poll() is None:
    chunk = os.read(0, 1 << 16)
    if not chunk:
        break
    held.append(chunk)
    try:
        lister.stdin.write(chunk)
        lister.stdin.flush()
    except (BrokenPipeError, OSError):
        break
try:
    lister.stdin.close()
except (BrokenPipeError, OSError):
    pass
reader.join()
if lister.wait() != 0:
    sys.stderr.write(lister.stderr.read().decode("utf-8", "replace"))
    sys.exit(1)
pattern = re.compile(r"^\d+; \d+ \d+ (EXTENSION - (\S+)|COMMENT - EXTENSION (\S+)) ")
lines, left_out = [], []
for line in listed[0].decode("utf-8", "surrogateescape").splitlines():
    match = pattern.match(line)
    name = match and (match.group(2) or match.group(3))
    if name in keep:
        left_out.append(name)
        continue
    lines.append(line)
if left_out:
    sys.stderr.write("lifeboat: extensions another role owns on the target, left as they are: "
                     + ", ".join(sorted(set(left_out))) + "\n")
listing = tempfile.NamedTemporaryFile("w", prefix="lifeboat-restore-", suffix=".list", delete=False)
try:
    with listing:
        listing.write("\n".join(lines) + "\n")
    restore = subprocess.Popen(argv[:1] + ["-L", listing.name] + argv[1:], stdin=subprocess.PIPE)
    try:
        for chunk in held:
            restore.stdin.write(chunk)
        while True:
            chunk = os.read(0, 1 << 20)
            if not chunk:
                break
            restore.stdin.write(chunk)
        restore.stdin.close()
    except (BrokenPipeError, OSError):
        pass
    code = restore.wait()
finally:
    os.unlink(listing.name)
sys.exit(code)
'''


def redis_conf(*, port: int, data_dir: Path, pid_file: Path, log_file: Path, password: str,
               bind: str = "127.0.0.1") -> str:
    """redis.conf for a private instance; holds the password, so it is written 0600."""
    def q(value: str) -> str:
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

    return (
        "# Written by Lifeboat.\n"
        f"bind {bind}\n"
        f"port {int(port)}\n"
        "protected-mode yes\n"
        f"dir {q(str(data_dir))}\n"
        f"pidfile {q(str(pid_file))}\n"
        f"logfile {q(str(log_file))}\n"
        "daemonize yes\n"
        "appendonly yes\n"
        'save "3600 1 300 100 60 10000"\n'
        f"requirepass {q(password)}\n"
    )


def redis_server(binary: str, conf: Path) -> list[str]:
    return [binary, str(conf)]


def pg_hba(clients: list[str]) -> str:
    """pg_hba.conf: password (SCRAM) logins from this host and from each client address only."""
    import ipaddress

    lines = ["# Written by Lifeboat; changes are overwritten on the next `lifeboat up`.",
             "local all all scram-sha-256",
             "local replication all scram-sha-256",  # pg_basebackup on the host itself (backup: wal: true)
             "host all all 127.0.0.1/32 scram-sha-256",
             "host all all ::1/128 scram-sha-256",
             "host replication all 127.0.0.1/32 scram-sha-256",  # pg_basebackup over loopback (the local provider)
             "host replication all ::1/128 scram-sha-256"]
    for client in sorted(set(clients)):
        try:
            ip = ipaddress.ip_address(client)
            cidr = f"{ip}/{32 if ip.version == 4 else 128}"
        except ValueError:
            import re

            if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", client):
                raise ValueError(f"not an address or host name: {client!r}") from None
            cidr = client
        lines.append(f"host all all {cidr} scram-sha-256")
    return "\n".join(lines) + "\n"
