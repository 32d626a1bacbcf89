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

from .conftest import LIFEBOAT, baremetal_target, chirp_copy, make_host_roots, run_cli

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
    # the containers' logs (docker logs: times per line, so --since works), one per host
    logs = lb(dock, "logs", "--on", "colo", "web", "--since", "1h", "-n", "50")
    assert logs.code == 0, logs
    got = {(one["host"], one["replica"]): one["lines"] for one in logs.envelope["data"]["logs"]}
    assert set(got) == {("web1", 0), ("web2", 0)} and all(got.values()), got
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


PHASED = """version: 1
name: chirpp
domain: chirp.lifeboat.test
services:
  web:
    role: web
    build: {app}
    command: {command}
    port: 8210
    health: /healthz
    health_timeout: 40
    env: {{CHIRP_WORKERS: "1"}}
    secrets: [CHIRP_SECRET_KEY]
    build_command: ["python", "-c", "import os; open('built.txt', 'w').write(str(len(os.environ['CHIRP_SECRET_KEY'])))"]
    release: {release}
postgres: {{version: 15, database: chirpp}}
redis: {{}}
secrets:
  CHIRP_SECRET_KEY: {{from: generate, length: 40}}
providers:
{target}"""
RECORD = ('["python", "-c", "import os, psycopg; c = psycopg.connect(os.environ[\'DATABASE_URL\'], autocommit=True); '
          "c.execute('CREATE TABLE IF NOT EXISTS released (n serial, at timestamptz DEFAULT now())'); "
          "c.execute('INSERT INTO released DEFAULT VALUES')\"]")
SERVE = '["python", "-m", "chirp", "web"]'


def test_docker_runs_the_build_and_release_phases_and_keeps_the_previous_release_serving(tmp_path, ssh_lab,
                                                                                         docker_engines):
    """build_command runs in the new image and is committed into it (its entrypoint and command kept, no
    secret left in its configuration); release: runs once per new release, before any container of it; a
    failing release command or a container that dies leaves the previous containers serving (issue 23)."""
    from toolkit.config import stackfile
    from toolkit.run.engine import Engine

    e1, e2 = docker_engines
    app = chirp_copy(tmp_path)
    roots = make_host_roots()
    target = baremetal_target(ssh_lab, roots, pg_port=5452, redis_port=6402, docker_engines=docker_engines)
    stack = tmp_path / "lifeboat.yml"

    def write(command: str = SERVE, release: str = RECORD) -> None:
        stack.write_text(PHASED.format(app=app, target=target, command=command, release=release))

    def released() -> int:
        colo = Engine(stackfile.load(stack)).provider("colo")
        import psycopg

        with psycopg.connect(colo.database().connection_url().reveal_text()) as conn:
            return conn.execute("SELECT count(*) FROM released").fetchone()[0]

    def answering() -> bool:
        return all(get(f"http://{a}:8210/healthz") for a in ("127.0.0.2", "127.0.0.3"))

    lb = ["-c", str(stack), "-o", "json", "--yes"]
    write()
    try:
        up = run_cli(*lb, "up", "--on", "colo", timeout=900)
        assert up.code == 0, json.dumps(up.envelope, indent=1)[:4000]
        assert released() == 1 and answering()
        release = {s["release"] for s in up.envelope["data"]["status"]["services"]}.pop()
        tag = f"lifeboat/chirpp-web:{release}"
        secret = Engine(stackfile.load(stack)).provider("colo").secrets().read("CHIRP_SECRET_KEY").reveal_text()
        for engine in (e1, e2):  # built once, on web1, and shipped with what the command wrote
            assert engine.docker("run", "--rm", tag, "cat", "built.txt").stdout == str(len(secret))
            config = json.loads(engine.docker("image", "inspect", "--format", "{{json .Config}}", tag).stdout)
            assert config["Cmd"] == ["python", "-m", "chirp", "web"] and not config.get("Entrypoint"), config
            assert secret not in json.dumps(config) and config["Labels"]["lifeboat.stack.built"] == "1"
        assert run_cli(*lb, "up", "--on", "colo").envelope["data"]["applied"] == []
        assert released() == 1  # once per release, not per run
        # console: `docker run -it` on a pseudo-terminal of the host, in the service's image and environment
        from .test_console import in_terminal

        code, out = in_terminal([*LIFEBOAT, "-c", str(stack), "console", "--on", "colo", "web", "--", "sh"],
                                b"tty; echo svc=$LIFEBOAT_SERVICE; cat built.txt; echo; exit 4\n")
        assert code == 4 and "/dev/pts/" in out and "svc=web" in out and str(len(secret)) in out, out

        # a new release whose release command fails: not started anywhere, the previous one serves
        (app / "chirp" / "version.txt").write_text("2\n")
        write(release='["python", "-c", "print(\'migration 0042 failed\'); raise SystemExit(3)"]')
        failed = run_cli(*lb, "up", "--on", "colo", timeout=900)
        assert failed.code == 1 and "migration 0042 failed" in failed.envelope["errors"][0]["message"], failed
        assert "previous one still serves" in failed.envelope["errors"][0]["message"]
        assert answering()
        for engine in (e1, e2):
            running = engine.docker("ps", "--filter", "label=lifeboat.stack=chirpp", "--format",
                                    "{{.Image}}").stdout.split()
            assert running == [tag], running

        # a release whose containers die at once: the first host's old container is started again
        write(command='["python", "-c", "raise SystemExit(1)"]')
        crashed = run_cli(*lb, "up", "--on", "colo", timeout=900)
        assert crashed.code == 1 and "runs again" in crashed.envelope["errors"][0]["message"], crashed
        assert answering()
        assert released() == 2  # that release's command did run (it is the same release as the crashing one)

        write()
        fixed = run_cli(*lb, "up", "--on", "colo", timeout=900)
        assert fixed.code == 0, fixed
        assert answering() and released() == 3  # (a release is its code and its command: this one is new)
        assert run_cli(*lb, "plan", "--on", "colo", "--detailed-exitcode").code == 0
    finally:
        run_cli(*lb, "destroy", "--on", "colo", timeout=900)
        shutil.rmtree(roots, ignore_errors=True)
