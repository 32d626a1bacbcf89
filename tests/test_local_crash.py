"""Crash safety of the local provider: `up` killed mid-way completes on a re-run; a killed supervisor's
orphans are reaped by the next `up` or `destroy`; nothing is left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import LIFEBOAT, run_cli, tiny_app
from .test_local_e2e import all_pids_under, pid_alive

STACK = """version: 1
name: crashy
domain: crashy.lifeboat.test
services:
  web:
    role: web
    build: {app}
    command: ["python3", "serve.py"]
    port: 8000
    replicas: 2
    health: /
    env: {{SLOW_START: "2"}}
  worker:
    role: worker
    build: {app}
    command: ["sh", "-c", "sleep 1000 & wait"]
postgres: {{version: 15, database: crashy}}
redis: {{}}
buckets: {{media: {{}}}}
providers:
  here: {{type: local, state_dir: state}}
"""


@pytest.fixture
def stack(tmp_path):
    app = tiny_app(tmp_path)
    path = tmp_path / "lifeboat.yml"
    path.write_text(STACK.format(app=app))
    yield path
    run_cli("-c", str(path), "--yes", "destroy", "--on", "here")


def state(tmp_path: Path) -> dict:
    try:
        return json.loads((tmp_path / "state" / "state.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def test_up_killed_midway_then_rerun_completes(stack):
    root = stack.parent
    proc = subprocess.Popen([*LIFEBOAT, "-c", str(stack), "up", "--on", "here"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and "web" not in state(root).get("services", {}):
        time.sleep(0.02)
    assert "postgres" in state(root) and "web" in state(root).get("services", {}), state(root)
    proc.send_signal(signal.SIGKILL)  # mid-way: web is starting (slow), worker not created yet
    proc.wait()
    assert "worker" not in state(root).get("services", {})

    again = run_cli("-c", str(stack), "-o", "json", "up", "--on", "here")
    assert again.code == 0, again
    data = again.envelope["data"]["status"]
    assert data["healthy"], json.dumps(again.envelope)
    assert len([s for s in data["services"] if s["service"] == "web"]) == 2


def test_killed_supervisor_orphans_are_reaped(stack):
    root = stack.parent
    assert run_cli("-c", str(stack), "up", "--on", "here").code == 0
    before = run_cli("-c", str(stack), "-o", "json", "status", "--on", "here").envelope["data"]["services"]
    old_pids = [s["pid"] for s in before]
    supervisor = int((root / "state" / "services" / "supervisor.pid").read_text())
    os.kill(supervisor, signal.SIGKILL)
    time.sleep(0.3)
    assert all(pid_alive(p) for p in old_pids)  # orphans keep running (and hold the ports)
    down = run_cli("-c", str(stack), "-o", "json", "status", "--on", "here")
    assert down.code == 1 and "service/web is not running" in json.dumps(down.envelope["errors"])

    up = run_cli("-c", str(stack), "-o", "json", "up", "--on", "here")
    assert up.code == 0, up
    assert {a["resource"] for a in up.envelope["data"]["applied"]} == {"service/web", "service/worker"}
    assert not [p for p in old_pids if pid_alive(p)], "orphans were not reaped"
    assert up.envelope["data"]["status"]["healthy"]

    # destroy after another supervisor crash still leaves nothing running
    pids = all_pids_under(root / "state") | {s["pid"] for s in up.envelope["data"]["status"]["services"]}
    os.kill(int((root / "state" / "services" / "supervisor.pid").read_text()), signal.SIGKILL)
    assert run_cli("-c", str(stack), "--yes", "destroy", "--on", "here").code == 0
    time.sleep(0.3)
    left = [p for p in pids if pid_alive(p)]
    assert not left, [Path(f"/proc/{p}/cmdline").read_bytes() for p in left]
    assert not (root / "state").exists()
