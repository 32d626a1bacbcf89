"""`lifeboat console` (issue 24): an interactive terminal in a service's environment, on this machine and on
an SSH host (a pseudo-terminal there, as the app account, in the release folder); its exit status is the
command's; without a terminal it refuses (exit 2) and points at `exec`. The test drives it through a
pseudo-terminal of its own, as a person at a keyboard would."""

from __future__ import annotations

import os
import select
import subprocess
import time

import pytest

from .conftest import LIFEBOAT, REPO, run_cli, tiny_deployment


def in_terminal(argv: list[str], typed: bytes, timeout: float = 90) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as stdin, stdout and stderr; type ``typed``; (exit status, all it
    printed)."""
    master, slave = os.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm"})
    os.close(slave)
    out = b""
    deadline = time.time() + timeout
    sent = False
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([master], [], [], 0.3)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the other side closed: it exited
                    break
                if not data:
                    break
                out += data
            if not sent and (time.time() > deadline - timeout + 2 or b"$" in out or b"#" in out):
                os.write(master, typed)
                sent = True
            if proc.poll() is not None and not ready:
                break
        else:
            proc.kill()
            pytest.fail(f"the console did not end within {timeout} s: {out[-2000:]!r}")
        return proc.wait(timeout=30), out.decode("utf-8", "replace")
    finally:
        os.close(master)


@pytest.fixture(params=["here", "colo"])
def deployed(request, tmp_path):
    for stack, on, _ in tiny_deployment(request, tmp_path, name="console", port=8450, address="127.0.0.34",
                                        offset=431):
        yield stack, on


def test_console_is_a_terminal_in_the_service_environment(deployed):
    stack, on = deployed
    code, out = in_terminal([*LIFEBOAT, "-c", str(stack), "console", "--on", on, "web", "--", "sh"],
                            b"tty; id -un; echo svc=$LIFEBOAT_SERVICE; ls serve.py; exit 3\n")
    assert code == 3, out
    assert "/dev/pts/" in out and "svc=web" in out and "serve.py" in out, out
    if on == "colo":  # as the account the app runs as, not the login
        assert "lifeboat-app" in out, out
    refused = run_cli("-c", str(stack), "-o", "json", "console", "--on", on, "web")  # no terminal
    assert refused.code == 2 and refused.envelope["errors"][0]["code"] == "console.no_terminal", refused
    assert "exec" in refused.envelope["errors"][0]["hint"]
