"""The process runtime on a host where systemd is the init system (a Debian tree booted by systemd-nspawn,
tests/systemdlab.py): the services become enabled systemd units, not supervisor children; systemd restarts
a killed service; a reboot brings them back without Lifeboat; a new release restarts the unit; no secret
is written into a unit; destroy removes the units."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request

import pytest

from toolkit.config import stackfile
from toolkit.run.engine import Engine

from .awslab import free_port
from .conftest import LIFEBOAT, run_cli
from .test_supervisor import wait_for

STACK = """version: 1
name: sysd
domain: sysd.lifeboat.test
services:
  web:
    role: web
    build: {app}
    command: ["python3", "serve.py"]
    port: 8610
    health: /
    secrets: [APP_KEY]
  worker:
    role: worker
    build: {app}
    command: ["python3", "-c", "import itertools, time; [(print('beat', n, flush=True), time.sleep(0.3)) for n in itertools.count()]"]
secrets:
  APP_KEY: {{from: generate, length: 40}}
providers:
  box:
    type: baremetal
    known_hosts: {known_hosts}
    hosts:
      - {{name: box, address: {address}, port: {port}, user: root, key: {key}, roles: [web, worker],
         root: /srv/lifeboat}}
"""

SERVE = """import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = open("VERSION", "rb").read()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((os.environ["LIFEBOAT_BIND"], int(os.environ["PORT"])), H).serve_forever()
"""


@pytest.fixture
def box(tmp_path):
    from .systemdlab import start_systemd_host

    host = start_systemd_host(tmp_path / "box", "127.0.0.5", free_port())
    yield host
    host.destroy()


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - the lab host on loopback
        return resp.read()


def test_services_run_as_systemd_units(tmp_path, box):
    app = tmp_path / "app"
    app.mkdir()
    (app / "serve.py").write_text(SERVE)
    (app / "VERSION").write_text("one")
    stack = tmp_path / "lifeboat.yml"
    stack.write_text(STACK.format(app=app, known_hosts=box.known_hosts, address=box.address, port=box.port,
                                  key=box.client_key))
    lb = ["-c", str(stack), "-o", "json", "--yes"]

    def status() -> dict:
        result = run_cli(*lb, "status", "--on", "box")
        assert result.code in (0, 1), result
        return {s["service"]: s for s in result.envelope["data"]["services"]}

    try:
        up = run_cli(*lb, "up", "--on", "box")
        assert up.code == 0, up
        assert up.envelope["data"]["status"]["healthy"]
        units = box.run("sh", "-c", "cd /etc/systemd/system && ls lifeboat-*.service").stdout.split()
        assert sorted(u.split("-", 2)[2] for u in units) == ["web.0.service", "worker.0.service"], units
        for unit in units:
            assert box.run("systemctl", "is-enabled", unit).stdout.strip() == "enabled"
            assert box.run("systemctl", "is-active", unit).stdout.strip() == "active"
        assert box.run("pgrep", "-f", "supervisor.py supervisor.json", check=False).returncode == 1  # no supervisor
        # `lifeboat logs` reads what the unit appends to (StandardOutput=append:), and follows it
        time.sleep(1)
        logs = run_cli("-c", str(stack), "logs", "--on", "box", "worker", "-n", "2")
        assert logs.code == 0 and [line.split(" | ")[0].strip() for line in logs.stdout.splitlines()] == \
            ["box/worker.0"] * 2 and "beat" in logs.stdout, logs
        last = int(logs.stdout.split()[-1])
        proc = subprocess.Popen([*LIFEBOAT, "-c", str(stack), "logs", "--on", "box", "worker", "-f", "-n", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        line = proc.stdout.readline()
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0 and int(line.split()[-1]) > last, line  # a line written after
        web = status()["web"]
        assert box.run("ps", "-o", "user:20=,args=", "-p", str(web["pid"])).stdout.split() == \
            ["lifeboat-app", "python3", "serve.py"]  # the unit's main process is the app, unprivileged
        assert get(f"http://{box.address}:8610/") == b"one"

        secret = Engine(stackfile.load(stack)).provider("box").secrets().read("APP_KEY").reveal_text()
        assert f"APP_KEY={secret}".encode() in box.run("cat", f"/proc/{web['pid']}/environ").stdout.encode()
        assert box.run("grep", "-r", "-F", secret, "/etc/systemd/system", check=False).returncode == 1

        # systemd, not Lifeboat, restarts a service that dies.
        box.run("kill", "-9", str(web["pid"]))
        again = wait_for(lambda: (s := status()["web"])["pid"] not in (None, web["pid"]) and s["healthy"] and s,
                         timeout=60)
        assert again["restarts"] >= 1
        assert get(f"http://{box.address}:8610/") == b"one"

        same = run_cli(*lb, "up", "--on", "box")
        assert same.code == 0 and same.envelope["data"]["applied"] == [], same

        # A reboot: the units are enabled, so the services come back with no Lifeboat run.
        box.shutdown()
        box.boot()
        assert wait_for(lambda: _answers(f"http://{box.address}:8610/"), timeout=60) == b"one"
        assert all(s["healthy"] for s in status().values())

        # A new release restarts the unit with the new code.
        (app / "VERSION").write_text("two")
        rolled = run_cli(*lb, "up", "--on", "box")
        assert rolled.code == 0, rolled
        assert get(f"http://{box.address}:8610/") == b"two"

        gone = run_cli(*lb, "destroy", "--on", "box")
        assert gone.code == 0, gone
        assert box.run("sh", "-c", "ls /etc/systemd/system/lifeboat-* 2>/dev/null", check=False).stdout == ""
        assert _answers(f"http://{box.address}:8610/") is None
    finally:
        run_cli(*lb, "destroy", "--on", "box")


def _answers(url: str) -> bytes | None:
    try:
        return get(url)
    except OSError:
        return None
