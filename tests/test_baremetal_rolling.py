"""Process runtime: replicas on one host are replaced one after the other, so the host keeps serving while
a new release starts (on real OpenSSH hosts)."""

from __future__ import annotations

import threading
import time
import urllib.request

from .conftest import make_host_roots, run_cli

APP = """import http.server, os, pathlib, time
time.sleep(float(os.environ.get("SLOW_START", "0")))
body = pathlib.Path("version.txt").read_bytes()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((os.environ["LIFEBOAT_BIND"], int(os.environ["PORT"])), H).serve_forever()
"""

STACK = """version: 1
name: roll
domain: roll.lifeboat.test
services:
  web:
    role: web
    build: {app}
    command: ["python3", "serve.py"]
    port: 8500
    replicas: 3
    env: {{SLOW_START: "{slow}"}}
providers:
  colo:
    type: baremetal
    known_hosts: {known_hosts}
    hosts:
      - {{name: web1, address: {address}, port: {port}, user: {user}, key: {key}, roles: [web], root: {root}}}
"""


def answer(port: int) -> bytes | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.2:{port}/", timeout=0.5) as resp:  # noqa: S310 - lab host
            return resp.read()
    except OSError:
        return None


def test_replicas_of_a_host_roll_one_at_a_time(tmp_path, ssh_lab):
    app = tmp_path / "app"
    app.mkdir()
    (app / "serve.py").write_text(APP)
    (app / "version.txt").write_text("v1")
    roots = make_host_roots()
    host = ssh_lab.hosts[0]
    stack = tmp_path / "lifeboat.yml"

    def write(slow: str) -> None:
        stack.write_text(STACK.format(app=app, slow=slow, known_hosts=ssh_lab.known_hosts, address=host.address,
                                      port=host.port, user=ssh_lab.user, key=ssh_lab.client_key, root=roots / "w"))

    try:
        write("0")
        assert run_cli("-c", str(stack), "--yes", "up", "--on", "colo").code == 0
        assert [answer(8500 + i) for i in range(3)] == [b"v1"] * 3

        (app / "version.txt").write_text("v2")
        write("1.5")  # each new replica takes 1.5 s to listen
        seen: list[list[bytes | None]] = []
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                seen.append([answer(8500 + i) for i in range(3)])
                time.sleep(0.05)

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            result = run_cli("-c", str(stack), "--yes", "up", "--on", "colo")
        finally:
            done.set()
            poller.join()
        assert result.code == 0, result
        assert [answer(8500 + i) for i in range(3)] == [b"v2"] * 3
        dark = [s for s in seen if not any(s)]
        assert not dark, f"{len(dark)} of {len(seen)} polls found no replica answering"
        assert any(s.count(None) == 1 for s in seen), "no replica was seen restarting (the test saw nothing)"
        mixed = [s for s in seen if b"v1" in s and b"v2" in s]
        assert mixed, "never saw old and new replicas side by side"

        # Back to the previous release, the same way; the next `up` goes forward again.
        listed = run_cli("-c", str(stack), "-o", "json", "release", "list", "--on", "colo")
        web = listed.envelope["data"]["services"]["web"]
        assert web["previous"] and web["previous"] != web["release"] and len(web["kept"]) == 2
        seen.clear()
        done.clear()
        poller = threading.Thread(target=poll)
        poller.start()
        try:
            back = run_cli("-c", str(stack), "-o", "json", "--yes", "release", "rollback", "--on", "colo")
        finally:
            done.set()
            poller.join()
        assert back.code == 0, back
        assert back.envelope["data"]["rolled_back"] == [{"service": "web", "from": web["release"],
                                                         "to": web["previous"]}]
        assert [answer(8500 + i) for i in range(3)] == [b"v1"] * 3
        assert not [s for s in seen if not any(s)], "the host went dark during the rollback"
        assert run_cli("-c", str(stack), "--yes", "up", "--on", "colo").code == 0
        assert [answer(8500 + i) for i in range(3)] == [b"v2"] * 3
        unknown = run_cli("-c", str(stack), "-o", "json", "--yes", "release", "rollback", "--on", "colo", "nope")
        assert unknown.code == 2 and "nope" in unknown.envelope["errors"][0]["message"]
    finally:
        run_cli("-c", str(stack), "--yes", "destroy", "--on", "colo")
        import shutil

        shutil.rmtree(roots, ignore_errors=True)


def test_a_release_that_crashes_leaves_the_previous_one_serving_and_one_up_converges(tmp_path, ssh_lab):
    """Item 10 of issue 23 on hosts: a new release whose process dies at start fails `up` as soon as the
    supervisor reports it (not after the whole health wait), the host runs the previous release again and
    answers meanwhile; once the app is fixed, one `up` rolls forward and the next plans nothing."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "serve.py").write_text(APP.replace('body = pathlib.Path("version.txt").read_bytes()\n',
                                              'body = pathlib.Path("version.txt").read_bytes()\n'
                                              'assert body != b"broken", "this release cannot start"\n'))
    (app / "version.txt").write_text("v1")
    roots = make_host_roots()
    host = ssh_lab.hosts[0]
    stack = tmp_path / "lifeboat.yml"
    stack.write_text(STACK.format(app=app, slow="0", known_hosts=ssh_lab.known_hosts, address=host.address,
                                  port=host.port, user=ssh_lab.user, key=ssh_lab.client_key, root=roots / "w")
                     .replace("port: 8500\n    replicas: 3", "port: 8510\n    replicas: 2\n    health_timeout: 300"))
    lb = ["-c", str(stack), "-o", "json", "--yes"]
    try:
        assert run_cli(*lb, "up", "--on", "colo").code == 0
        assert [answer(8510 + i) for i in range(2)] == [b"v1"] * 2
        (app / "version.txt").write_text("broken")
        began = time.monotonic()
        failed = run_cli(*lb, "up", "--on", "colo")
        took = time.monotonic() - began
        assert failed.code == 1, failed
        message = failed.envelope["errors"][0]["message"]
        assert "did not become healthy" in message and "runs the previous release again, healthy" in message, message
        assert took < 200, f"waited {took:.0f} s: the crash should end the wait (health_timeout is 300 s)"
        assert [answer(8510 + i) for i in range(2)] == [b"v1"] * 2  # the previous release serves
        assert run_cli(*lb, "plan", "--on", "colo", "--detailed-exitcode").code == 10  # the rollout is still due

        (app / "version.txt").write_text("v3")
        fixed = run_cli(*lb, "up", "--on", "colo")
        assert fixed.code == 0, fixed
        assert [answer(8510 + i) for i in range(2)] == [b"v3"] * 2
        assert run_cli(*lb, "plan", "--on", "colo", "--detailed-exitcode").code == 0
    finally:
        run_cli(*lb, "destroy", "--on", "colo")
        import shutil

        shutil.rmtree(roots, ignore_errors=True)


def test_writable_folders_of_the_release_are_the_apps(tmp_path, ssh_lab):
    """A Rails-like app writes its pid file into tmp/pids and its log into log/ of its own folder: without
    writable: it cannot start there (the release is read only to the app account) and `up` says why; with
    writable: [tmp, log] it runs, the files belong to the app account, and the rest stays read only."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "serve.py").write_text(APP.replace('body = pathlib.Path("version.txt").read_bytes()\n',
                                              'body = pathlib.Path("version.txt").read_bytes()\n'
                                              'pathlib.Path("tmp/pids").mkdir(parents=True, exist_ok=True)\n'
                                              'pathlib.Path("tmp/pids/server.pid").write_text(str(os.getpid()))\n'
                                              'pathlib.Path("log/production.log").write_text("started")\n'))
    (app / "version.txt").write_text("v1")
    (app / "log").mkdir()
    (app / "log" / ".keep").write_text("")
    roots = make_host_roots()
    host = ssh_lab.hosts[0]
    stack = tmp_path / "lifeboat.yml"

    def write(extra: str) -> None:
        stack.write_text(STACK.format(app=app, slow="0", known_hosts=ssh_lab.known_hosts, address=host.address,
                                      port=host.port, user=ssh_lab.user, key=ssh_lab.client_key, root=roots / "w")
                         .replace("port: 8500\n    replicas: 3", "port: 8520\n    replicas: 1\n    health_timeout: 60"
                                  + extra))

    lb = ["-c", str(stack), "-o", "json", "--yes"]
    try:
        write("")
        refused = run_cli(*lb, "up", "--on", "colo")
        assert refused.code == 1 and "Permission denied" in refused.envelope["errors"][0]["message"], refused
        write("\n    writable: [tmp, log]")
        up = run_cli(*lb, "up", "--on", "colo")
        assert up.code == 0, up
        assert answer(8520) == b"v1"
        listed = run_cli(*lb, "release", "list", "--on", "colo").envelope["data"]["services"]["web"]
        release = roots / "w" / "releases" / "web" / listed["release"]
        pid = release / "tmp" / "pids" / "server.pid"
        assert pid.owner() == "lifeboat-app" and (release / "log" / "production.log").read_text() == "started"
        assert (release / "serve.py").owner() == "root" and not (release / "serve.py").stat().st_mode & 0o022
    finally:
        run_cli(*lb, "destroy", "--on", "colo")
        import shutil

        shutil.rmtree(roots, ignore_errors=True)
