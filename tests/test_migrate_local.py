"""`lifeboat migrate` between two targets of this machine (two local providers, each with its own
PostgreSQL, Redis, object store and processes): chirp seeded on one, moved to the other, checked
independently; a run killed mid-way resumes from its journal; a dry run changes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import urllib.request
from contextlib import contextmanager

import pytest

from toolkit.config import stackfile
from toolkit.run.engine import Engine

from .conftest import LIFEBOAT, run_cli, seeded_chirp

NEW = """  new:
    type: local
    state_dir: state/new
"""


def on_db(url: str, db: int) -> str:
    """The Redis URL of another database on the same server (redis-py takes the URL's path over db=)."""
    return url.rsplit("/", 1)[0] + f"/{db}"


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback
        return resp.read()


def objects(store) -> dict[str, str]:
    """key -> SHA-256 of what the store returns when read (not what it says about itself)."""
    out = {}
    for obj in store.list("media"):
        with store.open_read("media", obj.key) as stream:
            out[obj.key] = hashlib.sha256(stream.read()).hexdigest()
    return out


def rows(provider) -> dict:
    import psycopg

    with psycopg.connect(provider.database().connection_url().reveal_text()) as conn:
        return {t: conn.execute(f"SELECT count(*), md5(string_agg(x::text, '' ORDER BY x::text)) FROM {t} x")  # noqa: S608
                .fetchone() for t in ("users", "posts", "follows", "media")}


@contextmanager
def stalled(argv: list[str], point: str, seconds: int):
    """A lifeboat run (a process of its own) held at ``point`` by the fault hook for up to ``seconds``:
    yielded once it says so, killed afterwards if it is still there."""
    proc = subprocess.Popen([*LIFEBOAT, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "LIFEBOAT_FAULT": f"stall:{point}", "LIFEBOAT_FAULT_SECONDS": str(seconds)})
    try:
        for line in proc.stderr:
            if f"stalled at {point}" in line:
                break
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with seeded_chirp(tmp_path_factory.mktemp("migrate-local"), NEW, users=80, posts=1200, media=15,
                      large_mb=3) as path:
        yield path


def source_state(stack) -> dict:
    """What the source holds, read independently: rows, objects, secrets, DNS records, running services."""
    engine = Engine(stackfile.load(stack))
    old = engine.provider("old")
    return {"rows": rows(old), "objects": objects(old.objects()),
            "secret": old.secrets().read("CHIRP_SECRET_KEY").reveal_text(),
            "dns": sorted((r.name, r.type, r.ttl, r.values) for r in old.dns().records("lifeboat.test")),
            "running": sorted((i.service, i.replica, i.state) for i in old.compute().instances())}


def test_dry_run_changes_nothing(stack):
    before = sorted(p.relative_to(stack.parent) for p in stack.parent.rglob("*") if "new" in p.parts)
    source_before = source_state(stack)
    result = run_cli("-c", str(stack), "-o", "json", "migrate", "--from", "old", "--to", "new", "--dry-run")
    assert result.code == 0, result
    data = result.envelope["data"]
    assert data["dry_run"] and data["media"]["objects"] == 15 and data["database"]["tables"] >= 4
    assert data["secrets"] == ["CHIRP_SECRET_KEY"]
    after = sorted(p.relative_to(stack.parent) for p in stack.parent.rglob("*") if "new" in p.parts)
    assert before == after == []
    assert source_state(stack) == source_before


def test_killed_mid_media_then_resumed_moves_everything(stack):
    lb = ["-c", str(stack), "-o", "json", "--yes"]
    killed = run_cli(*lb, "migrate", "--from", "old", "--to", "new", env={"LIFEBOAT_FAULT": "kill:media"})
    assert killed.code == -9, killed
    # The lock died with the process; a new run without --resume would start over, --resume continues.
    resumed = run_cli(*lb, "migrate", "--from", "old", "--to", "new", "--resume")
    assert resumed.code == 0, resumed
    steps = {s["step"]: s for s in resumed.envelope["data"]["steps"]}
    assert steps["database"].get("resumed") and steps["secrets"].get("resumed")
    assert not steps["media"].get("resumed") and steps["media"]["objects"] == 15
    assert steps["database"]["verified"].startswith("row counts")

    engine = Engine(stackfile.load(stack))
    old, new = engine.provider("old"), engine.provider("new")
    assert rows(old) == rows(new)
    assert objects(old.objects()) == objects(new.objects()) and len(objects(new.objects())) == 15
    assert new.secrets().read("CHIRP_SECRET_KEY") == old.secrets().read("CHIRP_SECRET_KEY")
    url = [i.url for i in new.compute().instances() if i.service == "web"][0]
    assert json.loads(get(url + "/api/stats"))["posts"] == 1200
    secret = old.secrets().read("CHIRP_SECRET_KEY").reveal_text()
    journal = next((stack.parent / ".lifeboat" / "migrate-old-new").rglob("journal.jsonl"))
    assert secret not in journal.read_text() and secret not in resumed.stdout + resumed.stderr
    assert journal.stat().st_mode & 0o077 == 0
    for folder in (stack.parent / ".lifeboat", journal.parent, journal.parent.parent):  # .lifeboat/ itself too
        assert folder.stat().st_mode & 0o077 == 0, folder

    # Running it again is safe: nothing is re-sent, everything still matches.
    again = run_cli(*lb, "migrate", "--from", "old", "--to", "new")
    assert again.code == 0, again
    steps = {s["step"]: s for s in again.envelope["data"]["steps"]}
    assert steps["media"]["copied"] == 0 and steps["media"]["already_there"] == 15
    # nor the database (its digests are equal on both sides), nor a Redis key with the same value
    assert steps["database"]["sent_bytes"] == 0 and "nothing sent" in steps["database"]["verified"], steps["database"]
    assert steps["cache"]["already_there"] == steps["cache"]["keys"], steps["cache"]
    assert rows(old) == rows(new)


def test_resume_without_an_interrupted_run_is_bad_input(stack):
    result = run_cli("-c", str(stack), "-o", "json", "--yes", "migrate", "--from", "old", "--to", "new", "--resume")
    assert result.code == 2 and "nothing to resume" in result.envelope["errors"][0]["message"]


def test_freeze_carries_late_writes_and_a_failure_lifts_it(stack):
    lb = ["-c", str(stack), "-o", "json", "--yes"]
    assert run_cli(*lb, "up", "--on", "old").code == 0  # the last migration left the source frozen
    engine = Engine(stackfile.load(stack))
    assert run_cli(*lb, "status", "--on", "old").envelope["data"]["healthy"] is True

    failed = run_cli(*lb, "migrate", "--from", "old", "--to", "new", env={"LIFEBOAT_FAULT": "fail:final_sync"})
    assert failed.code == 1 and "injected failure" in failed.envelope["errors"][0]["message"]
    status = run_cli(*lb, "status", "--on", "old").envelope["data"]
    assert status["healthy"] is True, f"a failure before the cutover must leave the source serving: {status}"

    import io

    import redis

    old_cache = redis.Redis.from_url(engine.provider("old").cache().connection_url().reveal_text())
    old_cache.set(b"session:gone \xff", b"deleted on the source after the first pass")
    old_cache.set(b"session:kept", b"stays")
    # a task queue in db 1 (Celery's broker) and a feed in db 7: every database in use is carried (item 14)
    old_url = engine.provider("old").cache().connection_url().reveal_text()
    broker = redis.Redis.from_url(on_db(old_url, 1))
    assert broker.dbsize() == 0 and old_cache.dbsize() > 0  # two databases indeed
    broker.rpush(b"celery", b"task-1", b"task-2")
    broker.set(b"lock", b"x", px=600_000)
    redis.Redis.from_url(on_db(old_url, 7)).zadd(b"feed:1", {b"post-9": 9.0})
    killed = run_cli(*lb, "migrate", "--from", "old", "--to", "new", env={"LIFEBOAT_FAULT": "kill:freeze"})
    assert killed.code == -9
    import psycopg

    with psycopg.connect(engine.provider("old").database().connection_url().reveal_text(), autocommit=True) as conn:
        conn.execute("INSERT INTO posts (user_id, body) SELECT id, 'written after the first copy ✓' FROM users "
                     "ORDER BY id LIMIT 1")
    # After the first pass: a user deletes a media file and a session ends on the source; something the
    # source never had sits on the target. After the freeze the target must equal the source, both ways.
    old_store, new_store = engine.provider("old").objects(), engine.provider("new").objects()
    deleted = sorted(o.key for o in old_store.list("media"))[0]
    assert deleted in objects(new_store)
    old_store.delete("media", deleted)
    old_cache.delete(b"session:gone \xff")
    new_store.write("media", "stray/not-on-the-source.bin", io.BytesIO(b"stray"), size=5)
    new_url = engine.provider("new").cache().connection_url().reveal_text()
    new_cache = redis.Redis.from_url(new_url)
    assert new_cache.exists(b"session:gone \xff")
    redis.Redis.from_url(on_db(new_url, 2)).set(b"stray", b"never on the source")
    resumed = run_cli(*lb, "migrate", "--from", "old", "--to", "new", "--resume")
    assert resumed.code == 0, resumed
    steps = {s["step"]: s for s in resumed.envelope["data"]["steps"]}
    assert steps["freeze"]["paused"] == ["web", "worker"] and steps["final_sync"]["database"]["rows"] > 0
    final = steps["final_sync"]
    assert final["media"]["removed_from_target"] == 2, final["media"]
    assert sorted(final["media"]["removed_examples"]) == sorted([f"media/{deleted}", "media/stray/not-on-the-source.bin"])
    assert "exactly the source's keys" in final["media"]["verified"]
    assert final["cache"]["removed_from_target"] == 2 and final["cache"]["keys"] >= 4, final["cache"]
    assert final["cache"]["databases"]["db1"] == 2 and final["cache"]["databases"]["db7"] == 1, final["cache"]
    new_broker = redis.Redis.from_url(on_db(new_url, 1))
    assert new_broker.lrange(b"celery", 0, -1) == [b"task-1", b"task-2"]
    assert 0 < new_broker.pttl(b"lock") <= 600_000
    assert redis.Redis.from_url(on_db(new_url, 7)).zrange(b"feed:1", 0, -1, withscores=True) == [(b"post-9", 9.0)]
    assert not redis.Redis.from_url(on_db(new_url, 2)).exists(b"stray")
    engine = Engine(stackfile.load(stack))
    old, new = engine.provider("old"), engine.provider("new")
    assert objects(old.objects()) == objects(new.objects()) and deleted not in objects(new.objects())
    assert not new_cache.exists(b"session:gone \xff") and new_cache.get(b"session:kept") == b"stays"
    assert rows(old) == rows(new)
    assert rows(new)["posts"][0] == 1201
    assert not [i for i in old.compute().instances() if i.state == "running"], "the source was not frozen"
    assert steps["verify"]["database"] == "identical"


def test_verify_tells_the_targets_own_writes_from_the_sources(stack):
    """After a frozen move, a difference at verification comes from the target's own services (its worker
    writing once started), not from the source: verify says so, naming the tables."""
    import psycopg

    lb = ["-c", str(stack), "-o", "json", "--yes"]
    assert run_cli(*lb, "up", "--on", "old").code == 0  # the source serves again (the last move froze it)
    with stalled([*lb, "migrate", "--from", "old", "--to", "new"], "verify", 15) as proc:
        new = Engine(stackfile.load(stack)).provider("new")
        with psycopg.connect(new.database().connection_url().reveal_text(), autocommit=True) as conn:
            conn.execute("INSERT INTO posts (user_id, body) SELECT id, 'the target writes' FROM users LIMIT 1")
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    steps = {s["step"]: s for s in json.loads(out)["data"]["steps"]}
    assert steps["freeze"]["paused"] == ["web", "worker"]
    verified = steps["verify"]
    assert verified["database"].startswith("written on the target since the final copy"), verified
    tables = verified["database_tables"]
    assert tables and all("posts" in name for name in tables), verified  # the table (and its id sequence)


def test_a_concurrent_migration_gets_exit_3_naming_the_holder(stack):
    engine = Engine(stackfile.load(stack))
    with engine.provider("new").lock("someone@elsewhere"):
        result = run_cli("-c", str(stack), "-o", "json", "--yes", "migrate", "--from", "old", "--to", "new")
    assert result.code == 3, result
    assert "someone@elsewhere" in result.envelope["errors"][0]["message"]


def test_rollback_puts_traffic_back_on_the_source(stack):
    lb = ["-c", str(stack), "-o", "json", "--yes"]
    result = run_cli(*lb, "rollback")
    assert result.code == 0, result
    data = result.envelope["data"]
    assert (data["from"], data["to"], data["target_paused"]) == ("new", "old", ["web", "worker"])
    assert run_cli(*lb, "status", "--on", "old").envelope["data"]["healthy"] is True
    engine = Engine(stackfile.load(stack))
    assert not [i for i in engine.provider("new").compute().instances() if i.state == "running"]
    records = {(r.name, r.type): r for r in engine.provider("old").dns().records("lifeboat.test")}
    assert records[("chirp", "A")].values == ("127.0.0.1",)
    again = run_cli(*lb, "rollback")
    assert again.code == 2 and "already rolled back" in again.envelope["errors"][0]["message"]


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_ctrl_c_exits_130_and_resume_finishes_the_move(stack, sig, code):
    """SIGINT (what Ctrl-C sends) to a real run in the middle of its media step: exit 130, the envelope says
    to re-run with --resume, the locks are released, and --resume completes the move. SIGTERM (systemd, a
    CI timeout) unwinds the same way, exit 143 (it used to end the process where it stood)."""
    import signal

    lb = ["-c", str(stack), "-o", "json", "--yes"]
    with stalled([*lb, "migrate", "--from", "old", "--to", "new", "--no-cutover"], "media", 120) as proc:
        proc.send_signal(getattr(signal, sig))
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == code, (proc.returncode, out)
    error = json.loads(out)["errors"][0]
    assert error["code"] == "interrupted" and "--resume" in error["message"], error
    resumed = run_cli(*lb, "migrate", "--from", "old", "--to", "new", "--no-cutover", "--resume")
    assert resumed.code == 0, resumed  # the interrupted run held no lock any more
    steps = {s["step"]: s for s in resumed.envelope["data"]["steps"]}
    assert steps["database"].get("resumed") and not steps["media"].get("resumed")
