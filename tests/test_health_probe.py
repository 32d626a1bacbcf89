"""A web service's health is asked as the proxy in front of it asks (toolkit/hostops/health.py): an app that
answers 400 to a Host that is not its domain (Django's ALLOWED_HOSTS, Rails' host authorization) and
redirects plain HTTP to its https:// URL (SECURE_SSL_REDIRECT, force_ssl) is healthy, and the redirect is
never followed. Here and on hosts (the same check as a program, run beside the app)."""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

from toolkit.hostops.health import healthy, probe_program, proxy_headers

from .conftest import run_cli

STRICT_APP = '''import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.headers.get("Host") != "strict.lifeboat.test":
            self.send_response(400); self.end_headers(); self.wfile.write(b"DisallowedHost"); return
        if self.headers.get("X-Forwarded-Proto") != "https":
            self.send_response(301); self.send_header("Location", "https://strict.lifeboat.test" + self.path)
            self.end_headers(); return
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((os.environ["LIFEBOAT_BIND"], int(os.environ["PORT"])), H).serve_forever()
'''


def strict_server():
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.path)
            if self.headers.get("Host") != "strict.lifeboat.test":
                self.send_response(400)
            elif self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "/gone")
            elif self.path == "/gone":
                self.send_response(500)
            else:
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def test_the_probe_sends_the_sites_host_and_never_follows_a_redirect():
    server, seen = strict_server()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    headers = proxy_headers(SimpleNamespace(domain="strict.lifeboat.test", tls=None))
    probe = probe_program()  # what a host runs
    try:
        assert healthy(base + "/health", headers) and not healthy(base + "/health")  # 400 to an address
        assert healthy(base + "/moved", headers) and "/gone" not in seen  # a redirect is an answer
        for url, expected in ((base + "/health", 0), (base + "/moved", 0), (base + "/gone", 1)):
            asked = subprocess.run([sys.executable, "-c", probe, url, *[f"{k}: {v}" for k, v in headers.items()]],
                                   check=False, timeout=30)
            assert asked.returncode == expected, url
        assert subprocess.run([sys.executable, "-c", probe, base + "/health"], check=False).returncode == 1
        assert subprocess.run([sys.executable, "-c", probe, "http://127.0.0.1:9/"], check=False).returncode == 1
    finally:
        server.shutdown()


def test_a_strict_app_becomes_healthy_on_local(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "serve.py").write_text(STRICT_APP)
    stack = tmp_path / "lifeboat.yml"
    stack.write_text("""version: 1
name: strict
domain: strict.lifeboat.test
services:
  web: {role: web, build: app, command: [python3, serve.py], port: 8000, health: /, health_timeout: 30}
tls: {acme_email: ops@strict.lifeboat.test}
providers:
  here: {type: local, address: 127.0.0.33}
""")
    lb = ["-c", str(stack), "-o", "json", "--yes"]
    try:
        up = run_cli(*lb, "up", "--on", "here")
        assert up.code == 0, up
        status = run_cli(*lb, "status", "--on", "here")
        assert status.code == 0 and [s["healthy"] for s in status.envelope["data"]["services"]] == [True], status
    finally:
        run_cli(*lb, "destroy", "--on", "here")
