"""End to end on three real OpenSSH hosts: chirp deployed across web, worker, storage and db roles,
seeded, served from every web host; a second up is a no-op; the lock; host-key and host-down faults;
sshd killed in the middle of `up` and a re-run completing; destroy leaving nothing behind."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from toolkit.config import stackfile
from toolkit.hostops.lock import HostLock
from toolkit.run.engine import Engine

from .acme import fetch_verified
from .conftest import CHIRP, baremetal_target, chirp_copy, make_host_roots, run_cli
from .test_local_e2e import all_pids_under, pid_alive

STACK = """version: 1
name: chirp
domain: chirp.lifeboat.test
services:
  web:
    role: web
    build: {app}
    command: ["python", "-m", "chirp", "web"]
    port: 8000
    health: /healthz
    env: {{CHIRP_WORKERS: "1"}}
    secrets: [CHIRP_SECRET_KEY]
    serve:                        # answered by the proxy itself, as nginx in front of an app would
      /raw/: {{bucket: media}}
      /source/: chirp
  worker:
    role: worker
    build: {app}
    command: ["python", "-m", "chirp", "worker"]
postgres: {{version: 15, database: chirp, extensions: [pg_trgm]}}
redis: {{version: 7}}
buckets: {{media: {{}}}}
secrets:
  CHIRP_SECRET_KEY: {{from: generate, length: 40}}
tls:
  acme_email: ops@lifeboat.test
providers:
{target}"""


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=15) as resp:  # noqa: S310 - the lab's loopback hosts
        return resp.read()


@pytest.fixture(scope="module")
def colo(tmp_path_factory, ssh_lab, pebble):
    root = tmp_path_factory.mktemp("e2e-baremetal")
    app = chirp_copy(root)
    roots = make_host_roots()
    stack = root / "lifeboat.yml"
    stack.write_text(STACK.format(app=app, target=baremetal_target(ssh_lab, roots, pebble=pebble)))
    yield {"root": root, "stack": stack, "roots": roots, "app": app, "lab": ssh_lab, "pebble": pebble}
    run_cli("-c", str(stack), "--yes", "destroy", "--on", "colo")
    shutil.rmtree(roots, ignore_errors=True)


def lb(colo, *args):
    return run_cli("-c", str(colo["stack"]), "-o", "json", *args)


def test_deploy_serve_and_rerun(colo):
    planned = lb(colo, "plan", "--on", "colo", "--detailed-exitcode")
    assert planned.code == 10 and planned.envelope["status"] == "changes"
    assert not list(colo["roots"].iterdir()), "plan wrote to a host"
    up = lb(colo, "up", "--on", "colo")
    assert up.code == 0, up
    status = up.envelope["data"]["status"]
    assert status["healthy"]
    placed = sorted((s["service"], s["host"]) for s in status["services"])
    assert placed == [("proxy", "web1"), ("proxy", "web2"), ("web", "web1"), ("web", "web2"), ("worker", "web1")]
    import pwd

    app_uid = pwd.getpwnam("lifeboat-app").pw_uid
    for instance in status["services"]:
        if instance["service"] in ("web", "worker"):  # the app runs unprivileged, not as the SSH user
            uid_line = [line for line in Path(f"/proc/{instance['pid']}/status").read_text().splitlines()
                        if line.startswith("Uid:")][0]
            assert int(uid_line.split()[1]) == app_uid, instance

    for folder in ("services", "services/env", "services/logs"):  # environment files hold the secrets
        mode = (colo["roots"] / "web1" / folder).stat().st_mode & 0o777
        assert mode == 0o700, (folder, oct(mode))

    seed = run_cli("-c", str(colo["stack"]), "exec", "--on", "colo", "web", "--", "python", "-m", "chirp", "seed",
                   "--users", "120", "--posts", "1500", "--media", "12", "--large-mb", "3")
    assert seed.code == 0, seed

    # HTTPS through the proxy on every web host, with a certificate issued by the ACME server (pebble):
    # the chain and the name are verified against pebble's roots.
    roots = colo["pebble"].issuing_roots()
    for address in ("127.0.0.2", "127.0.0.3"):
        code, page, cert = fetch_verified(address, 8443, "chirp.lifeboat.test", roots)
        assert code == 200 and b"50 latest posts" in page
        assert ("DNS", "chirp.lifeboat.test") in cert["subjectAltName"]
        code, body, _ = fetch_verified(address, 8443, "chirp.lifeboat.test", roots, "/api/stats")
        stats = json.loads(body)
        assert stats == {"users": 120, "posts": 1500, "follows": stats["follows"], "media": 12}
    import ssl

    with pytest.raises(ssl.SSLError):  # not trusted without pebble's roots
        fetch_verified("127.0.0.2", 8443, "chirp.lifeboat.test", colo["pebble"].https_ca.read_bytes())

    provider = Engine(stackfile.load(colo["stack"])).provider("colo")
    import psycopg  # noqa: F401 - the digests below go through psql on the db host

    rows = provider.database().table_digests()
    assert rows["posts"].rows == 1500 and rows["users"].rows == 120
    listed = {o.key: o for o in provider.objects().list("media")}
    assert len(listed) == 12 and any(o.size == 3 << 20 for o in listed.values())
    for key, info in listed.items():  # web1 reads the files, web2 goes through the media gateway on web1
        for address in ("127.0.0.2", "127.0.0.3"):
            code, body, _ = fetch_verified(address, 8443, "chirp.lifeboat.test", roots,
                                           "/media/" + urllib.parse.quote(key))
            assert code == 200 and len(body) == info.size and hashlib.sha256(body).hexdigest() == info.sha256
    # An upload to web2 (not the storage host) lands on the storage host, whole, and web1 serves it.
    upload = os.urandom((2 << 20) + 17)
    request = urllib.request.Request("http://127.0.0.3:8000/api/media?name=from%20web2.bin", data=upload,
                                     method="POST", headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - lab host on loopback
        stored = json.loads(resp.read())
    assert stored["sha256"] == hashlib.sha256(upload).hexdigest()
    assert provider.objects().head("media", stored["key"]).sha256 == stored["sha256"]
    assert fetch_verified("127.0.0.2", 8443, "chirp.lifeboat.test", roots,
                          "/media/" + urllib.parse.quote(stored["key"]))[1] == upload
    # serve: the proxy answers /raw/ from the bucket (web1: its folder; web2: the gateway, with the token the
    # proxy adds) and /source/ from the release folder, GET and HEAD only, never a listing of the bucket
    app_file = (colo["app"] / "chirp" / "__init__.py").read_bytes()
    for address in ("127.0.0.2", "127.0.0.3"):
        for key, info in [*listed.items(), (stored["key"], provider.objects().head("media", stored["key"]))]:
            code, body, _ = fetch_verified(address, 8443, "chirp.lifeboat.test", roots,
                                           "/raw/" + urllib.parse.quote(key) + "?v=1")
            assert code == 200 and hashlib.sha256(body).hexdigest() == info.sha256, (address, key)
        assert fetch_verified(address, 8443, "chirp.lifeboat.test", roots, "/source/__init__.py")[1] == app_file
        for path in ("/raw/", "/raw/no-such-key", "/source/no-such-file"):
            assert fetch_verified(address, 8443, "chirp.lifeboat.test", roots, path)[0] == 404, (address, path)
        assert fetch_verified(address, 8443, "chirp.lifeboat.test", roots, "/raw/x", method="PUT",
                              body=b"x")[0] == 405
    gateway = urllib.request.Request(f"http://127.0.0.2:8790/media/{urllib.parse.quote(stored['key'], safe='')}")
    with pytest.raises(urllib.error.HTTPError) as refused:  # the gateway wants the token
        urllib.request.urlopen(gateway, timeout=10)  # noqa: S310
    assert refused.value.code == 401

    again = lb(colo, "up", "--on", "colo")
    assert again.code == 0 and again.envelope["data"]["applied"] == []
    assert lb(colo, "plan", "--on", "colo", "--detailed-exitcode").code == 0

    secret = provider.secrets().read("CHIRP_SECRET_KEY").reveal_text()
    for result in (up, seed, again):
        assert secret not in result.stdout + result.stderr


def test_bootstrap_reports_and_installs_nothing_when_present(colo):
    checked = lb(colo, "hosts", "bootstrap", "--on", "colo", "--check")
    assert checked.code == 0, checked
    hosts = checked.envelope["data"]["hosts"]
    assert set(hosts) == {"web1", "web2", "db1"}
    assert "postgresql-15" in hosts["db1"]["needed"] and "caddy" in hosts["web1"]["needed"]
    assert all(h["missing"] == [] and h["supported"] for h in hosts.values())
    done = lb(colo, "hosts", "bootstrap", "--on", "colo")  # nothing missing: no confirmation needed
    assert done.code == 0 and done.envelope["data"]["changed"] is False


def test_lock_held_then_released(colo):
    provider = Engine(stackfile.load(colo["stack"])).provider("colo")
    with provider.lock("someone@elsewhere"):
        held = lb(colo, "up", "--on", "colo")
        shown = lb(colo, "lock", "status", "--on", "colo")
    assert held.code == 3 and "someone@elsewhere" in held.envelope["errors"][0]["message"]
    assert shown.envelope["data"]["locked"] and shown.envelope["data"]["holder"]["owner"] == "someone@elsewhere"
    # a holder that died leaves the lock behind; it is broken on purpose, with --yes
    HostLock(provider.primary(), provider.primary_spec().root, "colo").acquire("crashed@box", "up")
    assert lb(colo, "up", "--on", "colo").code == 3
    assert lb(colo, "lock", "release", "--on", "colo").code == 2  # no terminal, no --yes
    assert lb(colo, "--yes", "lock", "release", "--on", "colo").envelope["data"]["released"] is True
    assert lb(colo, "up", "--on", "colo").code == 0


def test_unknown_host_key_refused_then_trusted(colo):
    lab = colo["lab"]
    lab.write_known_hosts([lab.hosts[0], lab.hosts[2]])  # web2's key is unknown
    try:
        refused = lb(colo, "status", "--on", "colo")
        assert refused.code == 5, refused
        error = refused.envelope["errors"][0]
        assert "web2" in error["message"] and "SHA256:" in error["message"]
        assert "lifeboat hosts trust --on colo web2" in (error["hint"] or "")
        no_tty = lb(colo, "hosts", "trust", "--on", "colo", "web2")
        assert no_tty.code == 2 and lab.known_hosts.read_text().count("\n") == 2
        trusted = lb(colo, "--yes", "hosts", "trust", "--on", "colo", "web2")
        assert trusted.code == 0 and trusted.envelope["data"]["hosts"][0]["action"] == "trusted"
        assert lb(colo, "status", "--on", "colo").code == 0
        # web2's recorded key swapped for web1's: a changed key is exit 5 for `hosts trust` as for every command
        entry, _, _ = lab.hosts[1].public_key_line.partition(" ")
        _, _, web1_key = lab.hosts[0].public_key_line.partition(" ")
        lab.write_known_hosts([lab.hosts[0], lab.hosts[2]])
        with open(lab.known_hosts, "a") as known:
            known.write(f"{entry} {web1_key}\n")
        for args in (["status", "--on", "colo"], ["--yes", "hosts", "trust", "--on", "colo", "web2"]):
            changed = lb(colo, *args)
            assert changed.code == 5, changed
            assert changed.envelope["errors"][0]["code"] == "ssh.host_key_changed", changed
        assert lab.known_hosts.read_text().count("\n") == 3  # nothing was changed
    finally:
        lab.write_known_hosts()


def test_host_down_is_named(colo):
    lab = colo["lab"]
    web2 = lab.hosts[1]
    web2.crash()
    try:
        down = lb(colo, "status", "--on", "colo")
        assert down.code == 5 and "web2" in down.envelope["errors"][0]["message"]
        assert lb(colo, "up", "--on", "colo").code == 5
    finally:
        web2.start(lab.authorized_keys)
    assert lb(colo, "status", "--on", "colo").code == 0


def test_sshd_killed_during_up_then_rerun_completes(colo):
    lab = colo["lab"]
    (colo["app"] / "chirp" / "version.txt").write_text("2\n")  # a new release to roll out
    web2 = lab.hosts[1]
    import subprocess

    from .conftest import LIFEBOAT

    old = None
    proc = subprocess.Popen([*LIFEBOAT, "-c", str(colo["stack"]), "-o", "json", "up", "--on", "colo"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    def web1_generation():
        try:
            status = json.loads((colo["roots"] / "web1" / "services" / "status.json").read_text())
            return status["programs"]["web.0"]["generation"]
        except (FileNotFoundError, ValueError, KeyError):
            return None

    old = web1_generation()
    deadline = time.time() + 120
    while time.time() < deadline and web1_generation() in (None, old):
        time.sleep(0.02)
    web2.crash()  # mid-rollout: web1 runs the new release, web2 not yet; its sessions die with it
    out, _ = proc.communicate(timeout=300)
    web2.start(lab.authorized_keys)
    first = json.loads(out)
    assert first["exit_code"] != 0 and "web2" in json.dumps(first["errors"])

    again = lb(colo, "up", "--on", "colo")
    assert again.code == 0, again
    status = again.envelope["data"]["status"]
    releases = {s["release"] for s in status["services"] if s["service"] == "web"}
    assert status["healthy"] and len(releases) == 1
    assert json.loads(get("http://127.0.0.3:8000/api/stats"))["posts"] == 1500  # no data lost


def test_destroy_leaves_nothing(colo):
    roots = colo["roots"]
    pids = all_pids_under(roots)
    assert pids
    gone = lb(colo, "--yes", "destroy", "--on", "colo")
    assert gone.code == 0, gone
    time.sleep(0.5)
    assert not [p for p in pids if pid_alive(p)]
    assert not list(roots.iterdir())
    assert lb(colo, "status", "--on", "colo").envelope["data"]["deployed"] is False


def test_roles_must_cover_the_stack(tmp_path, ssh_lab):
    roots = make_host_roots()
    try:
        target = baremetal_target(ssh_lab, roots, roles=(("web",), ("web",), ("worker",)))
        stack = tmp_path / "lifeboat.yml"
        stack.write_text(STACK.format(app=CHIRP, target=target))
        result = run_cli("-c", str(stack), "-o", "json", "plan", "--on", "colo")
        assert result.code == 2 and result.envelope["errors"][0]["code"] == "host.missing_role"
        assert 'no host has the role "db"' in result.envelope["errors"][0]["message"]
    finally:
        shutil.rmtree(roots, ignore_errors=True)


def test_killed_inside_the_venv_build_then_rerun_completes_first_time(colo):
    """kill -9 of `up` at two offsets inside the virtualenv build (during `python3 -m venv`/ensurepip, and
    during pip): the build's programs keep running on the hosts; the next `up` stops them, waits, rebuilds
    and succeeds on its first try (it used to fail racing them: "rm: cannot remove ...: Directory not
    empty", or rebuild while the old ensurepip still wrote into the folder)."""
    import signal
    import subprocess

    from .conftest import LIFEBOAT

    requirements = colo["app"] / "requirements.txt"
    original = requirements.read_text()
    caught = []
    for offset in (0.3, 6.0):
        requirements.write_text(original + f"# rebuilt after a kill {offset} s into the build\n")
        proc = subprocess.Popen([*LIFEBOAT, "-c", str(colo["stack"]), "up", "--on", "colo"], text=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            for line in proc.stderr:
                if "building a virtualenv" in line:
                    break
            time.sleep(offset)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        builders = [p for p in all_pids_under(colo["roots"]) if "/venvs/" in
                    Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")] if colo["roots"].exists() else []
        caught.append(len(builders))
        again = lb(colo, "up", "--on", "colo")
        assert again.code == 0, (offset, again)
        assert again.envelope["data"]["status"]["healthy"]
        assert not [p for p in builders if pid_alive(p)]
    assert any(caught), caught  # the kills landed while the build's programs ran
