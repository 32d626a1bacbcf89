"""`lifeboat migrate` from this machine (local provider) to three real SSH hosts (bare metal): chirp's rows,
media, secrets and cache arrive, the services answer on the hosts, DNS is switched to them."""

from __future__ import annotations

import json
import shutil
import urllib.request

from toolkit.config import stackfile
from toolkit.run.engine import Engine

from .conftest import baremetal_target, chirp_stack, make_host_roots, run_cli, run_cli_stalled
from .test_migrate_local import objects, rows


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - lab hosts on loopback
        return resp.read()


def test_local_to_baremetal(tmp_path, ssh_lab):
    roots = make_host_roots()
    stack = chirp_stack(tmp_path, target="here",
                        extra_target=baremetal_target(ssh_lab, roots, pg_port=5447, redis_port=6397))
    lb = ["-c", str(stack), "-o", "json", "--yes"]
    try:
        assert run_cli(*lb, "up", "--on", "here").code == 0
        seed = run_cli("-c", str(stack), "exec", "--on", "here", "web", "--", "python", "-m", "chirp", "seed",
                       "--users", "60", "--posts", "900", "--media", "10", "--large-mb", "2")
        assert seed.code == 0, seed
        engine = Engine(stackfile.load(stack))
        here = engine.provider("here")
        import redis

        cache = redis.Redis.from_url(here.cache().connection_url().reveal_text())
        cache.set("carried", "yes", ex=3600)
        # media an app writes itself, in nested folders (issue 23 item 1: they were skipped, silently)
        nested = {"attachments/2026/12/4/photo.webp": b"webp" * 1000, "cache/emoji/x/blob.png": b"png"}
        for key, body in nested.items():
            path = here.state.objects / "media" / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        status = run_cli(*lb, "status", "--on", "here").envelope["data"]
        assert {r["name"]: r for r in status["resources"] if r["kind"] == "bucket"}["media"]["objects"] == 12

        moved = run_cli(*lb, "migrate", "--from", "here", "--to", "colo")
        assert moved.code == 0, moved
        report = {s["step"]: s for s in moved.envelope["data"]["steps"]}
        assert report["media"]["copied"] == 12 and report["cache"]["keys"] >= 1
        storage = roots / "web1" / "objects" / "media"  # the lab's hosts are this machine
        for key, body in nested.items():  # where the app looks, the app account's
            assert (storage / key).read_bytes() == body
            assert (storage / key).owner() == "lifeboat-app" and (storage / key).stat().st_mode & 0o777 == 0o644
        assert [r["record"] for r in report["cutover"]["records"]] == ["chirp A"]
        assert sorted(report["cutover"]["records"][0]["values"]) == ["127.0.0.2", "127.0.0.3"]

        engine = Engine(stackfile.load(stack))
        here, colo = engine.provider("here"), engine.provider("colo")
        assert rows(here) == rows(colo)
        assert objects(here.objects()) == objects(colo.objects())
        assert colo.secrets().read("CHIRP_SECRET_KEY") == here.secrets().read("CHIRP_SECRET_KEY")
        moved_cache = redis.Redis.from_url(colo.cache().connection_url().reveal_text())
        assert moved_cache.get("carried") == b"yes" and 0 < moved_cache.ttl("carried") <= 3600
        for address in ("127.0.0.2", "127.0.0.3"):
            assert json.loads(get(f"http://{address}:8000/api/stats"))["posts"] == 900
        records = {(r.name, r.type): r for r in here.dns().records("lifeboat.test")}
        assert sorted(records[("chirp", "A")].values) == ["127.0.0.2", "127.0.0.3"]

        # And back, with the storage host dying half-way through a large object: exit 1 naming it, nothing
        # half-written on the target, and --resume completes once the host is back.
        import io
        import os

        web1 = ssh_lab.hosts[0]
        big = os.urandom(6 << 20)
        colo.objects().write("media", "late/after the move.bin", io.BytesIO(big), size=len(big))
        failed = run_cli_stalled(*lb, "migrate", "--from", "colo", "--to", "here", point="media:mid",
                                 meanwhile=web1.crash, seconds=6)
        assert failed.code == 1, failed
        problem = failed.envelope["errors"][0]
        assert "web1" in problem["message"] and "step media stopped" in problem["message"], problem
        assert "--resume" in problem["hint"]
        assert here.objects().head("media", "late/after the move.bin") is None
        web1.start(ssh_lab.authorized_keys)
        back = run_cli(*lb, "migrate", "--from", "colo", "--to", "here", "--resume")
        assert back.code == 0, back
        engine = Engine(stackfile.load(stack))
        here, colo = engine.provider("here"), engine.provider("colo")
        assert rows(here) == rows(colo)
        assert objects(here.objects()) == objects(colo.objects()) and len(objects(here.objects())) == 13
        assert not list((stack.parent / "state" / "here").rglob(".tmp/w-*"))
    finally:
        run_cli(*lb, "destroy", "--on", "colo")
        run_cli(*lb, "destroy", "--on", "here")
        shutil.rmtree(roots, ignore_errors=True)
