"""`lifeboat logs` (issue 24): the services' output where it is kept (the supervisor's files on this machine,
on an SSH host), each line after its host and replica; -n, --replica, -f (lines as they come, Ctrl-C ends
it: exit 0), JSON lines with -o json -f; --since where there are no times per line is exit 2, naming why."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from .conftest import LIFEBOAT, run_cli, tiny_deployment


@pytest.fixture(params=["here", "colo"])
def chatty(request, tmp_path):
    """Two replicas that print a line every 0.2 s, deployed; with -o json the work was not silent: one JSON
    object per event on stderr (stdout: the one envelope)."""
    for stack, on, up in tiny_deployment(request, tmp_path, name="chatty", port=8400, address="127.0.0.33",
                                         offset=421, replicas=2, env='{TICK: "0.2"}'):
        events = [json.loads(line) for line in up.stderr.splitlines()]
        assert {"step", "done"} <= {e["event"] for e in events} and all("elapsed" in e for e in events), up.stderr
        yield stack, on


def test_logs_show_follow_and_refuse(chatty):
    stack, on = chatty
    time.sleep(1.5)  # a few ticks each
    human = run_cli("-c", str(stack), "logs", "--on", on, "-n", "3")
    assert human.code == 0, human
    prefix = "web1/" if on == "colo" else ""
    lines = human.stdout.splitlines()
    assert len(lines) == 6 and all(" | tick " in line and "✓" in line for line in lines), lines
    assert {line.split(" | ")[0].strip() for line in lines} == {f"{prefix}web.0", f"{prefix}web.1"}
    one = run_cli("-c", str(stack), "-o", "json", "logs", "--on", on, "web", "--replica", "1", "-n", "2")
    assert one.code == 0, one
    [found] = one.envelope["data"]["logs"]
    assert found["replica"] == 1 and len(found["lines"]) == 2 and "from replica 1" in found["lines"][-1]

    since = run_cli("-c", str(stack), "-o", "json", "logs", "--on", on, "--since", "10m")
    assert since.code == 2 and since.envelope["errors"][0]["code"] == "logs.since_unsupported", since
    unknown = run_cli("-c", str(stack), "-o", "json", "logs", "--on", on, "wbe")
    assert unknown.code == 2, unknown

    # -f -o json: a JSON object per line as they come; Ctrl-C ends it with the envelope, exit 0
    proc = subprocess.Popen([*LIFEBOAT, "-c", str(stack), "-o", "json", "logs", "--on", on, "-f", "-n", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen = []
    deadline = time.time() + 30
    while len(seen) < 8 and time.time() < deadline:
        seen.append(json.loads(proc.stdout.readline()))
    os.killpg(proc.pid, signal.SIGINT)
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, (rest, err)
    assert len(seen) == 8 and {s["replica"] for s in seen} == {0, 1}, seen
    assert all(s["line"].startswith("tick ") for s in seen)
    numbers = [int(s["line"].split()[1]) for s in seen if s["replica"] == 0]
    assert numbers == sorted(numbers)  # new lines, in order
    assert json.loads(rest.strip().splitlines()[-1])["command"] == "logs"
