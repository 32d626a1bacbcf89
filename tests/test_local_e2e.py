"""End to end on the local provider, as a user would: up -> chirp answers HTTP with seeded posts and
media -> status healthy -> crash and recovery -> second up is a no-op -> a concurrent run gets exit 3 ->
destroy -> no process, port or file left behind."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from toolkit.agents.supervisor import alive
from toolkit.config import stackfile
from toolkit.run.engine import Engine

from .conftest import CHIRP, chirp_stack, run_cli


def get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback test server
        return resp.status, resp.read()


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def pid_alive(pid: int) -> bool:
    return alive(pid)


def all_pids_under(state_root: Path) -> set[int]:
    """Every process whose command line or cwd mentions the state dir (services, supervisor, redis...)."""
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except (FileNotFoundError, PermissionError, ProcessLookupError, OSError):
            continue
        if str(state_root) in cmd or cwd.startswith(str(state_root)):
            found.add(int(proc.name))
    return found


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-local")
    stack = chirp_stack(root, replicas=2)
    yield root, stack
    run_cli("-c", str(stack), "--yes", "destroy", "--on", "here")


def test_local_end_to_end(deployment):
    root, stack = deployment
    lb = ["-c", str(stack), "-o", "json"]

    up = run_cli(*lb, "up", "--on", "here")
    assert up.code == 0, up
    env = up.envelope
    assert env["status"] == "ok" and env["data"]["status"]["healthy"] is True
    created = {a["resource"] for a in env["data"]["applied"]}
    assert {"database/chirp", "cache/redis", "bucket/media", "service/web", "service/worker",
            "secret/CHIRP_SECRET_KEY", "record/chirp A"} <= created
    webs = [s for s in env["data"]["status"]["services"] if s["service"] == "web"]
    assert len(webs) == 2 and len({w["url"] for w in webs}) == 2
    state = root / "state" / "here"  # the state folder and every folder in it (env, logs) are the owner's alone
    open_folders = [str(p) for p in [state, *state.rglob("*")] if p.is_dir() and not p.is_symlink()
                    and p.stat().st_mode & 0o077 and "builds" not in p.relative_to(state).parts
                    and "releases" not in p.relative_to(state).parts[:-1]]  # (code copies, in a 0700 folder)
    assert (state / "services" / "logs").is_dir() and (state / "services" / "env").is_dir()
    assert (state / "objects" / "media").is_dir() and not open_folders, open_folders

    seed = run_cli("-c", str(stack), "exec", "--on", "here", "web", "--", "python", "-m", "chirp", "seed",
                   "--users", "150", "--posts", "2500", "--media", "24", "--large-mb", "6")
    assert seed.code == 0, seed
    assert json.loads(seed.stdout.strip().splitlines()[-1])["seeded"] is True

    # Every web replica serves the seeded posts and media.
    for web in webs:
        status, body = get(web["url"] + "/")
        assert status == 200 and b"50 latest posts" in body
        stats = json.loads(get(web["url"] + "/api/stats")[1])
        assert stats["users"] == 150 and stats["posts"] == 2500 and stats["media"] == 24

    engine = Engine(stackfile.load(stack))
    provider = engine.provider("here")
    import psycopg

    with psycopg.connect(provider.database().connection_url().reveal_text()) as conn:
        media = conn.execute("SELECT key, size, sha256 FROM media ORDER BY key").fetchall()
    sizes = {size for _, size, _ in media}
    assert 0 in sizes and (6 << 20) in sizes
    assert any(" " in key for key, _, _ in media) and any("☕" in key for key, _, _ in media)
    listed = {o.key: o for o in provider.objects().list("media")}
    assert sorted(listed) == [key for key, _, _ in media]
    for key, size, sha in media:
        assert (listed[key].size, listed[key].sha256) == (size, sha)
        status, body = get(webs[1]["url"] + "/media/" + urllib.parse.quote(key))
        assert status == 200 and len(body) == size and hashlib.sha256(body).hexdigest() == sha

    # The home timeline is built from PostgreSQL, then served from Redis.
    first = json.loads(get(webs[0]["url"] + "/api/users/user00003/home")[1])
    second = json.loads(get(webs[0]["url"] + "/api/users/user00003/home")[1])
    assert first["cached"] is False and second["cached"] is True and first["posts"] == second["posts"]

    status = run_cli(*lb, "status", "--on", "here")
    assert status.code == 0 and status.envelope["data"]["healthy"] is True

    # A crashed web process is restarted by the supervisor.
    victim = webs[0]["pid"]
    os.kill(victim, 9)
    deadline = time.time() + 30
    while time.time() < deadline:
        data = run_cli(*lb, "status", "--on", "here").envelope["data"]
        now = [s for s in data["services"] if s["service"] == "web" and s["replica"] == 0][0]
        if now["pid"] != victim and now["healthy"]:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"web.0 did not come back: {data}")
    assert now["restarts"] >= 1

    # A second up changes nothing; plan agrees.
    again = run_cli(*lb, "up", "--on", "here")
    assert again.code == 0 and again.envelope["data"]["applied"] == []
    assert run_cli(*lb, "plan", "--on", "here", "--detailed-exitcode").code == 0

    # A service the stack declares but the target does not run makes status unhealthy (exit 1), named.
    more = root / "more.yml"
    more.write_text(stack.read_text().replace("  worker:\n", "  beat:\n    role: worker\n    build: "
                                              f"{CHIRP}\n    command: [\"sleep\", \"60\"]\n  worker:\n", 1))
    missing = run_cli("-c", str(more), "-o", "json", "status", "--on", "here")
    assert missing.code == 1 and missing.envelope["data"]["healthy"] is False, missing
    assert [p for p in missing.envelope["data"]["problems"] if "service beat is declared but not deployed" in p]
    more.unlink()

    # A concurrent run is refused with exit 3 and says who holds the lock.
    with provider.lock("someone@elsewhere"):
        held = run_cli(*lb, "up", "--on", "here")
    assert held.code == 3 and held.envelope["errors"][0]["code"] == "lock.held"
    assert "someone@elsewhere" in held.envelope["errors"][0]["message"]

    # The generated secret reaches the app but no output, log or process argument.
    secret = provider.secrets().read("CHIRP_SECRET_KEY").reveal_text()
    assert len(secret) >= 48
    for result in (up, seed, status, again, held):
        assert secret not in result.stdout + result.stderr
    for log in (provider.state.root / "services").rglob("*.log"):
        assert secret not in log.read_text(errors="replace")
    pids = all_pids_under(provider.state.root) | {s["pid"] for s in data["services"]}
    for pid in pids:
        try:
            assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            pass

    # Without a terminal and without --yes, destroy refuses and changes nothing.
    refused = run_cli(*lb, "destroy", "--on", "here")
    assert refused.code == 2 and refused.envelope["errors"][0]["code"] == "confirmation_required"
    assert run_cli(*lb, "status", "--on", "here").code == 0

    ports = json.loads((provider.state.root / "state.json").read_text())["ports"]
    pg_root = Path(json.loads((provider.state.root / "state.json").read_text())["pg_root"])
    pids |= all_pids_under(pg_root)
    gone = run_cli(*lb, "--yes", "destroy", "--on", "here")
    assert gone.code == 0, gone

    time.sleep(0.5)
    assert not [p for p in pids if pid_alive(p)], "processes left behind"
    assert not [p for p in ports.values() if port_open(p)], "ports left open"
    assert not (root / "state").exists() and not pg_root.exists(), "files left behind"
    assert sorted(p.name for p in root.iterdir()) == ["lifeboat.yml"]
