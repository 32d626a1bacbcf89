"""Release and build phases, per-service health timeouts and health-gated rollouts on `local` (issue 23, items
4, 5, 10, 18): the build command runs in the release's own copy (never the source folder), the release command
once per new release before it starts; a failed release command or a new release that crashes leaves the
previous release serving, and a crash is reported at once rather than after the health timeout."""

from __future__ import annotations

import time
import urllib.request

from .conftest import run_cli

APP = '''import os, http.server
VERSION = "{version}"
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        built = open("built.txt").read() if os.path.exists("built.txt") else "none"
        body = (VERSION + " " + built).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
{crash}http.server.HTTPServer((os.environ["LIFEBOAT_BIND"], int(os.environ["PORT"])), H).serve_forever()
'''

MARK = ("import os, psycopg; c = psycopg.connect(os.environ['APP_DB'], autocommit=True); "
        "c.execute('CREATE TABLE IF NOT EXISTS marks (release text)'); "
        "c.execute('INSERT INTO marks VALUES (%s)', (open('version.txt').read(),)); {fail}")


def stack_text(app) -> str:
    return f"""version: 1
name: phases
domain: phases.lifeboat.test
services:
  web:
    role: web
    build: {app}
    command: ["python", "app.py"]
    port: 8000
    health: /
    health_timeout: 120
    build_command: ["python", "-c", "open('built.txt', 'w').write('built-' + open('version.txt').read())"]
    release: ["python", "mark.py"]
    env:
      APP_DB: "${{DATABASE_URL}}"
postgres: {{version: 15, database: phases}}
providers:
  here:
    type: local
    state_dir: state/here
"""


def write_app(app, version: str, *, crash: bool = False, fail: bool = False) -> None:
    app.mkdir(exist_ok=True)
    (app / "app.py").write_text(APP.format(version=version, crash="raise SystemExit(3)\n" if crash else ""))
    (app / "version.txt").write_text(version)
    (app / "mark.py").write_text(MARK.format(fail="raise SystemExit('the migration failed: ' + 'x')" if fail else ""))
    (app / "requirements.txt").write_text("psycopg[binary]\n")


def served(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback
        return resp.read().decode()


def marks(stack) -> list[str]:
    out = run_cli("-c", str(stack), "exec", "--on", "here", "web", "--", "python", "-c",
                  "import os, psycopg; print(','.join(r[0] for r in psycopg.connect(os.environ['APP_DB'])"
                  ".execute('SELECT release FROM marks').fetchall()))")
    assert out.code == 0, out
    return out.stdout.strip().split(",")


def test_release_and_build_phases_and_rollouts_that_keep_the_previous_release(tmp_path):
    app = tmp_path / "app"
    write_app(app, "v1")
    stack = tmp_path / "lifeboat.yml"
    stack.write_text(stack_text(app))
    lb = ["-c", str(stack), "-o", "json", "--yes"]
    try:
        up = run_cli(*lb, "up", "--on", "here")
        assert up.code == 0, up
        url = next(s["url"] for s in run_cli(*lb, "status", "--on", "here").envelope["data"]["services"])
        assert served(url) == "v1 built-v1"
        assert not (app / "built.txt").exists(), "the build command wrote into the source folder"
        assert marks(stack) == ["v1"]
        assert run_cli(*lb, "up", "--on", "here").code == 0
        assert marks(stack) == ["v1"], "the release command ran again for the same release"

        write_app(app, "v2")
        assert run_cli(*lb, "up", "--on", "here").code == 0
        assert served(url) == "v2 built-v2" and marks(stack) == ["v1", "v2"]

        # a release command that fails: exit 1 with its output, v2 still serves, nothing of v3 started
        write_app(app, "v3", fail=True)
        failed = run_cli(*lb, "up", "--on", "here")
        assert failed.code == 1, failed
        error = failed.envelope["errors"][0]
        assert error["code"] == "local.release_failed" and "the migration failed" in error["message"], error
        assert "previous one still serves" in error["message"]
        assert served(url) == "v2 built-v2"

        # a release that crashes as it starts: reported at once, and v2 is started again
        write_app(app, "v4", crash=True)
        began = time.monotonic()
        crashed = run_cli(*lb, "up", "--on", "here")
        spent = time.monotonic() - began
        assert crashed.code == 1, crashed
        error = crashed.envelope["errors"][0]
        assert "exits right after it starts" in error["message"] and "was started again" in error["message"], error
        assert spent < 100, f"waited out the health timeout ({spent:.0f} s) after the supervisor saw the crash"
        assert served(url) == "v2 built-v2"
        status = run_cli(*lb, "status", "--on", "here").envelope["data"]
        assert status["healthy"] is True, status

        write_app(app, "v5")  # the next up converges in one run
        assert run_cli(*lb, "up", "--on", "here").code == 0
        assert served(url) == "v5 built-v5"
        assert run_cli(*lb, "plan", "--on", "here", "--detailed-exitcode").code == 0
    finally:
        run_cli(*lb, "destroy", "--on", "here")
