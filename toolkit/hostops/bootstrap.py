"""What a host is and has: its facts (root, systemd, interpreters), the packages a stack needs there and
their installation, system accounts, and Lifeboat's own processes left behind by killed runs."""

from __future__ import annotations

import json
import re

from toolkit.errors import ProviderError
from toolkit.hostops.shell import sh
from toolkit.transport.connection import Connection


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

    found = conn.run(["python3", "-c", _FIND_PROCESSES, *needles], timeout=60).stdout.decode()
    return [(int(pid), start, argv) for pid, start, argv in json.loads(found)]


def stop_processes(conn: Connection, processes, *, grace: float = 5) -> int:
    """End ``processes`` (from :func:`find_processes`) on the host and wait until they are gone: programs a
    killed run left behind, stopped before the next run touches their files. Returns how many."""

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


DEBIAN_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")


def app_packages(svc) -> list[str]:
    """The system packages a service declares: its ``packages:`` and the lines of an Aptfile in its build
    folder (Heroku's convention: one package a line, # comments); anything else there is an error naming it."""
    from toolkit.errors import BadInput

    wanted = list(svc.packages)
    aptfile = svc.build / "Aptfile" if svc.build else None
    if aptfile is not None and aptfile.is_file():
        for number, line in enumerate(aptfile.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            name = line.split("#", 1)[0].strip()
            if not name:
                continue
            if not DEBIAN_NAME.fullmatch(name):
                raise BadInput(f"{aptfile}:{number}: {name!r} is not a Debian package name (a .deb URL or an "
                               "option is not supported).", hint="list package names, one a line.",
                               code="stack.aptfile")
            wanted.append(name)
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
