"""The process supervisor, run for real: restarts, reload on SIGHUP, clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from toolkit.agents.supervisor import alive


def wait_for(predicate, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture
def supervised(tmp_path):
    env_file = tmp_path / "a.env.json"
    env_file.write_text(json.dumps({"GREETING": "hi there"}))
    spec = tmp_path / "supervisor.json"

    def write(programs):
        spec.write_text(json.dumps({"programs": programs}))

    child = [sys.executable, "-c", "import os, time; print(os.environ['GREETING'], flush=True); "
                                    "os.system('sleep 300 &'); time.sleep(300)"]
    write([{"name": "a.0", "argv": child, "cwd": str(tmp_path), "env_file": str(env_file),
            "log": str(tmp_path / "a.log")}])
    proc = subprocess.Popen([sys.executable, "-m", "toolkit.agents.supervisor", str(spec)], start_new_session=True)
    status = tmp_path / "status.json"

    def programs():
        try:
            return json.loads(status.read_text())["programs"]
        except (FileNotFoundError, ValueError):
            return {}

    yield proc, write, programs, tmp_path, child
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_restart_reload_and_stop(supervised):
    proc, write, programs, tmp_path, child = supervised
    first = wait_for(lambda: programs().get("a.0", {}).get("pid"))
    wait_for(lambda: "hi there" in (tmp_path / "a.log").read_text())
    first_group = wait_for(lambda: [int(p) for p in subprocess.run(
        ["pgrep", "-g", str(first)], capture_output=True, text=True).stdout.split() if int(p) != first])
    os.kill(first, signal.SIGKILL)  # the app crashes; its child (sleep) would keep running
    second = wait_for(lambda: (p := programs().get("a.0", {}).get("pid")) and p != first and p)
    assert programs()["a.0"]["restarts"] >= 1 and alive(second)
    for pid in first_group:
        wait_for(lambda pid=pid: not alive(pid))  # the crashed program's leftovers were stopped

    # SIGHUP with an unchanged definition keeps the process; a new program starts.
    write([{"name": "a.0", "argv": child, "cwd": str(tmp_path), "env_file": str(tmp_path / "a.env.json"),
            "log": str(tmp_path / "a.log")},
           {"name": "b.0", "argv": ["sleep", "300"], "log": str(tmp_path / "b.log")}])
    os.kill(proc.pid, signal.SIGHUP)
    third = wait_for(lambda: programs().get("b.0", {}).get("pid"))
    assert programs()["a.0"]["pid"] == second

    # SIGTERM stops every program and its children, then the supervisor exits.
    group_children = subprocess.run(["pgrep", "-g", str(second)], capture_output=True, text=True).stdout.split()
    assert len(group_children) >= 2  # the app and the sleep it started
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    for pid in [second, third, *map(int, group_children)]:
        wait_for(lambda pid=pid: not alive(pid))


def test_missing_binary_is_reported_not_fatal(tmp_path):
    spec = tmp_path / "supervisor.json"
    spec.write_text(json.dumps({"programs": [{"name": "x.0", "argv": ["/no/such/binary"],
                                              "log": str(tmp_path / "x.log")}]}))
    proc = subprocess.Popen([sys.executable, "-m", "toolkit.agents.supervisor", str(spec)], start_new_session=True)
    try:
        wait_for(lambda: "cannot start /no/such/binary" in (tmp_path / "x.log").read_text()
                 if (tmp_path / "x.log").exists() else False)
        assert proc.poll() is None
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
