"""App processes on a host: Lifeboat's supervisor (uploaded, stdlib only) or systemd units."""

from __future__ import annotations

import hashlib
import json
import time

from toolkit.agents import SUPERVISOR_SOURCE
from toolkit.errors import ProviderError
from toolkit.hostops.shell import sh
from toolkit.transport.connection import Connection


class ProcessRuntime:
    """Services as processes kept alive by Lifeboat's supervisor (stdlib only, uploaded to the host; on this
    machine, the local provider's, copied into its state folder), run by ``python``."""

    #: what a supervisor's command line holds: the uploaded copy, or `python -m` as Lifeboat 0.1 ran it here
    COMMAND_LINES = ("supervisor.py", "toolkit.agents.supervisor", "toolkit.supervisor")

    def __init__(self, conn: Connection, root: str, *, python: str = "python3"):
        self.conn = conn
        self.root = root
        self.dir = f"{root}/services"
        self.python = python

    def pid(self) -> int | None:
        raw = self.conn.read_bytes(f"{self.dir}/supervisor.pid")
        if not raw:
            return None
        pid = raw.decode().strip()
        result = sh(self.conn, 'tr "\\0" " " < "/proc/$1/cmdline" 2>/dev/null', pid, check=False)
        return int(pid) if result.ok and any(c in result.text for c in self.COMMAND_LINES) else None

    def running(self) -> bool:
        return self.pid() is not None

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
        pid = self.pid()
        if pid:
            self.conn.run(["kill", "-HUP", str(pid)])
            return
        self.reap()
        self.conn.run(["rm", "-f", f"{self.dir}/status.json"])
        sh(self.conn, 'cd "$1" && umask 077 && nohup setsid "$2" supervisor.py supervisor.json '
                      '>> supervisor.log 2>&1 < /dev/null &', self.dir, self.python)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.pid():
                return
            time.sleep(0.1)
        log = self.conn.read_bytes(f"{self.dir}/supervisor.log") or b""
        raise ProviderError(f"{self.conn.host}: the process supervisor did not start.\n"
                            f"{log.decode(errors='replace')[-800:]}", code="host.supervisor")

    def reap(self, names: list[str] | None = None) -> None:
        """Stop programs a dead supervisor left running (see toolkit.agents.supervisor --reap)."""
        if self.conn.read_bytes(f"{self.dir}/supervisor.py") is None:
            if self.conn.read_bytes(f"{self.dir}/status.json") is None:
                return  # no supervisor ever ran here
            self.prepare()  # one ran from elsewhere (Lifeboat 0.1 ran the local one as python -m)
        argv = [self.python, f"{self.dir}/supervisor.py", "--reap", f"{self.dir}/status.json", *(names or [])]
        self.conn.run(argv, check=False, timeout=60)

    def stop(self) -> None:
        pid = self.pid()
        if pid:
            sh(self.conn, 'kill -TERM "$1"; for i in $(seq 1 150); do kill -0 "$1" 2>/dev/null || exit 0; '
                          'sleep 0.2; done; kill -9 "$1"', pid, check=False, timeout=60)
        self.reap()

    def http_ok(self, url: str, headers: dict[str, str] | None = None) -> bool:
        """Health check run on the host itself (the port need not be reachable from here): the answer is below
        400 (a redirect is not followed), asked with ``headers`` (as the proxy would ask, toolkit/hostops/
        health.py)."""
        from toolkit.hostops.health import probe_program

        argv = ["python3", "-c", probe_program(), url, *[f"{k}: {v}" for k, v in (headers or {}).items()]]
        return self.conn.run(argv, check=False, timeout=20).ok

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
        super().__init__(conn, root, python=python)  # the host's python3 (HostFacts): the exec helper
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
