"""The docker runtime of the bare-metal provider against real Docker engines (one per web host): images
built on the first host from the uploaded release, shipped to the other with docker save | docker load
over SSH (no registry), containers started and health-checked, a rolling update that keeps the app
answering, and destroy removing containers and images."""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.request

import pytest

from .conftest import baremetal_target, chirp_copy, make_host_roots, run_cli

STACK = """version: 1
name: chirpd
domain: chirp.lifeboat.test
services:
  web:
    role: web
    build: {app}
    command: ["python", "-m", "chirp", "web"]
    port: 8200
    health: /healthz
    env: {{CHIRP_WORKERS: "1"}}
  worker:
    role: worker
    build: {app}
    command: ["python", "-m", "chirp", "worker"]
postgres: {{version: 15, database: chirpd}}
redis: {{}}
buckets: {{media: {{}}}}
providers:
{target}"""


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - the lab's loopback hosts
        return resp.read()


@pytest.fixture(scope="module")
def dock(tmp_path_factory, ssh_lab, docker_engines):
    root = tmp_path_factory.mktemp("docker-baremetal")
    app = chirp_copy(root)
    roots = make_host_roots()
    stack = root / "lifeboat.yml"
    target = baremetal_target(ssh_lab, roots, pg_port=5451, redis_port=6401, docker_engines=docker_engines)
    stack.write_text(STACK.format(app=app, target=target))
    yield {"stack": stack, "app": app, "roots": roots, "engines": docker_engines}
    run_cli("-c", str(stack), "--yes", "destroy", "--on", "colo")
    shutil.rmtree(roots, ignore_errors=True)


def lb(dock, *args):
    return run_cli("-c", str(dock["stack"]), "-o", "json", *args)


def test_docker_deploy_rolling_update_and_destroy(dock):
    e1, e2 = dock["engines"]
    up = lb(dock, "up", "--on", "colo")
    assert up.code == 0, up
    status = up.envelope["data"]["status"]
    assert status["healthy"], status
    release = {s["release"] for s in status["services"] if s["service"] == "web"}
    assert len(release) == 1
    tag = f"lifeboat/chirpd-web:{release.pop()}"
    # built on web1's engine, loaded into web2's without a registry
    assert e1.docker("image", "inspect", tag, check=False).returncode == 0
    assert e2.docker("image", "inspect", tag, check=False).returncode == 0
    names = sorted(e1.docker("ps", "--format", "{{.Names}}").stdout.split())
    assert names == ["lifeboat-chirpd-web1-web-0", "lifeboat-chirpd-web1-worker-0"]
    assert e2.docker("ps", "--format", "{{.Names}}").stdout.split() == ["lifeboat-chirpd-web2-web-0"]

    seed = run_cli("-c", str(dock["stack"]), "exec", "--on", "colo", "web", "--", "python", "-m", "chirp", "seed",
                   "--users", "40", "--posts", "300", "--media", "5")
    assert seed.code == 0, seed
    for address in ("127.0.0.2", "127.0.0.3"):
        assert json.loads(get(f"http://{address}:8200/api/stats"))["posts"] == 300

    # A rolling update: the hosts are replaced one after the other, so one always answers.
    (dock["app"] / "chirp" / "version.txt").write_text("2\n")
    failures, answered, stop = [], [], threading.Event()

    def poll():
        while not stop.is_set():
            ok = []
            for address in ("127.0.0.2", "127.0.0.3"):
                try:
                    ok.append(json.loads(get(f"http://{address}:8200/api/stats"))["posts"] == 300)
                except Exception:
                    ok.append(False)
            (answered if any(ok) else failures).append(time.time())
            time.sleep(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    rolled = lb(dock, "up", "--on", "colo")
    stop.set()
    poller.join()
    assert rolled.code == 0, rolled
    changed = {a["resource"] for a in rolled.envelope["data"]["applied"]}
    assert changed == {"service/web", "service/worker"}
    assert answered and not failures, f"{len(failures)} polls found no host answering during the update"
    new = {s["release"] for s in rolled.envelope["data"]["status"]["services"] if s["service"] == "web"}
    assert len(new) == 1 and new != {tag.rsplit(":", 1)[1]}

    assert lb(dock, "up", "--on", "colo").envelope["data"]["applied"] == []

    # Back to the first image (kept on both engines), host after host; then forward again with `up`.
    back = lb(dock, "--yes", "release", "rollback", "--on", "colo", "web")
    assert back.code == 0, back
    assert back.envelope["data"]["rolled_back"][0]["to"] == tag.rsplit(":", 1)[1]
    for engine in (e1, e2):
        image = engine.docker("inspect", "--format", "{{.Config.Image}}", [n for n in engine.docker(
            "ps", "--format", "{{.Names}}").stdout.split() if n.endswith("-web-0")][0]).stdout.strip()
        assert image == tag
    forward = lb(dock, "up", "--on", "colo")
    assert {a["resource"] for a in forward.envelope["data"]["applied"]} == {"service/web"}
    assert lb(dock, "plan", "--on", "colo", "--detailed-exitcode").code == 0

    # A write freeze (what migrate does to its source): containers stopped and kept, then started again.
    from toolkit.config import stackfile
    from toolkit.run.engine import Engine

    compute = Engine(stackfile.load(dock["stack"])).provider("colo").compute()
    compute.pause(["web", "worker"])
    for engine in (e1, e2):
        states = engine.docker("ps", "-a", "--filter", "label=lifeboat.stack=chirpd", "--format",
                               "{{.State}}").stdout.split()
        assert states and set(states) == {"exited"}, states
    for address in ("127.0.0.2", "127.0.0.3"):
        with pytest.raises(OSError):
            get(f"http://{address}:8200/api/stats")
    compute.resume(["web", "worker"])
    for address in ("127.0.0.2", "127.0.0.3"):
        assert json.loads(get(f"http://{address}:8200/api/stats"))["posts"] == 300
    assert lb(dock, "plan", "--on", "colo", "--detailed-exitcode").code == 0

    gone = lb(dock, "--yes", "destroy", "--on", "colo")
    assert gone.code == 0, gone
    for engine in (e1, e2):
        assert engine.docker("ps", "-a", "--filter", "label=lifeboat.stack=chirpd", "-q").stdout.strip() == ""
        assert "lifeboat/chirpd" not in engine.docker("image", "ls").stdout
    assert not list(dock["roots"].iterdir())
