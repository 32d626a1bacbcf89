"""`lifeboat backup`, `backups list|verify` and `failover` on this machine: chirp seeded on a local target
"old", backed up (sealed) into the object store of another local target "new", more writes, a second,
incremental backup; then "old" is destroyed (nothing of it is left to read) and `failover --to new`
brings chirp up there from the second backup, with DNS (zone files of a third target) switched. Tampered
parts and a wrong key are refused; no secret value appears anywhere it should not."""

from __future__ import annotations

import calendar
import hashlib
import io
import json
import os
import time
import urllib.request
from pathlib import Path

import pytest

from toolkit.config import stackfile
from toolkit.run.engine import Engine
from toolkit.stores.dirstore import DirectoryStore

from .conftest import run_cli, seeded_chirp
from .test_migrate_local import objects, on_db, rows

KEY_VAR = "LB_TEST_BACKUP_KEY"
KEY = "correct horse battery staple, but longer: 7f1c9a"

EXTRA = """  gcs:
    type: gcs
    project: lifeboat-test
    endpoint_url: {fake_gcs}
  blobs:
    type: azure-blob
    account: devstoreaccount1
    endpoint_url: {azurite}
    key_env: LB_TEST_AZURE_KEY
  spaces:
    type: s3
    endpoint_url: {s3rver}
    access_key_env: LB_TEST_S3_KEY
    secret_key_env: LB_TEST_S3_SECRET
  vault:
    type: aws
    region: eu-west-3
    ami: ami-12c6146b
    endpoint_url: {endpoint}
    instances:
      - {{name: web-1, roles: [web, worker, db]}}
  new:
    type: local
    state_dir: state/new
    address: 127.0.0.21
  names:
    type: local
    state_dir: state/names
dns:
  provider: names
  zone: lifeboat.test
  ttl: 4
  cutover_ttl: 2
  records:
    - {{name: chirp, type: A, target: web}}
backup:
  to: new
  keep: 5
  encrypt_with: BACKUP_KEY
"""
SECRETS = f"""  CHIRP_SECRET_KEY: {{from: generate, length: 48}}
  BACKUP_KEY: {{from: env, var: {KEY_VAR}}}
"""

NEW_OBJECTS = {"later/ünïcode name ☃.txt": b"written after the first backup\n", "later/empty": b"",
               "later/bin": os.urandom(300_000)}


def _lb_env() -> dict:
    from .awslab import AWS_ENV
    from .azurelab import KEY as AZURITE_KEY

    return {**AWS_ENV, KEY_VAR: KEY, "LB_TEST_S3_KEY": "S3RVER", "LB_TEST_S3_SECRET": "S3RVER",
            "LB_TEST_AZURE_KEY": AZURITE_KEY}


def lb(stack: Path, *args: str, key: str | None = KEY, env: dict | None = None):
    return run_cli("-c", str(stack), "-o", "json", "--yes", *args, env={**_lb_env(), KEY_VAR: key, **(env or {})})


@pytest.fixture(scope="module")
def world(tmp_path_factory, moto_server, s3rver, azurite, fake_gcs):
    extra = EXTRA.format(endpoint=moto_server.url, s3rver=s3rver.url, azurite=azurite.url, fake_gcs=fake_gcs.url)
    with seeded_chirp(tmp_path_factory.mktemp("backup-local"), extra, users=40, posts=600, media=10, large_mb=2,
                      dns=False, targets=("new", "names"), secrets=SECRETS) as path:
        yield {"stack": path, "outputs": []}


def engine_of(stack: Path) -> Engine:
    return Engine(stackfile.load(stack))


def test_up_and_migrate_never_need_or_store_the_backup_key(world):
    old = engine_of(world["stack"]).provider("old")
    assert "BACKUP_KEY" not in old.secrets().names()
    plan = run_cli("-c", str(world["stack"]), "-o", "json", "plan", "--on", "old", env={KEY_VAR: None})
    assert plan.code == 0, plan


def test_backup_into_an_s3_repository(world, moto_server):
    """The repository in a bucket of an S3 API (moto): made private and encrypted at rest; every part sealed."""
    import boto3

    stack = world["stack"]
    saved = lb(stack, "backup", "--from", "old", "--to", "vault")
    assert saved.code == 0, saved
    world["outputs"].append(saved)
    listed = lb(stack, "backups", "list", "--at", "vault")
    assert listed.code == 0 and [b["complete"] for b in listed.envelope["data"]["backups"]] == [True], listed
    verified = lb(stack, "backups", "verify", "--at", "vault")
    assert verified.code == 0 and verified.envelope["data"]["backups"][0]["objects"] == 10, verified
    s3 = boto3.client("s3", endpoint_url=moto_server.url, region_name="eu-west-3",
                      aws_access_key_id="testing", aws_secret_access_key="testing")  # noqa: S106 - moto
    block = s3.get_public_access_block(Bucket="lifeboat-backups")["PublicAccessBlockConfiguration"]
    assert all(block.values())
    ident = saved.envelope["data"]["backup"]
    dump = s3.get_object(Bucket="lifeboat-backups", Key=f"chirp/backups/{ident}/database.dump")["Body"].read()
    assert dump.startswith(b"LBX1") and b"PGDMP" not in dump and b"CREATE" not in dump

    # And into any S3-compatible store (type: s3, on s3rver), Azure Blob Storage (on Azurite) and Google
    # Cloud Storage (on fake-gcs-server).
    for where in ("spaces", "blobs", "gcs"):
        saved = lb(stack, "backup", "--from", "old", "--to", where)
        assert saved.code == 0, saved
        verified = lb(stack, "backups", "verify", "--at", where)
        assert verified.code == 0 and verified.envelope["data"]["failed"] == [], verified


def test_retention_removes_old_backups_and_unreferenced_media(world, monkeypatch):
    """keep=1: the older backup goes, and with it the media blob no kept backup lists; a backup running
    holds the source's lock: a second one is exit 3."""
    from toolkit.workflows.backup import prune
    from toolkit.workflows.repository import Repository

    from .conftest import run_cli_stalled

    stack = world["stack"]
    engine = engine_of(stack)
    old = engine.provider("old")
    old.objects().write("media", "gone/soon.txt", io.BytesIO(b"only in the older backup"), size=24)
    first = lb(stack, "backup", "--from", "old", "--to", "spaces")
    assert first.code == 0, first
    old.objects().delete("media", "gone/soon.txt")

    second_holder = {}

    def meanwhile():
        second_holder["result"] = lb(stack, "backup", "--from", "old", "--to", "spaces")

    held = run_cli_stalled("-c", str(stack), "-o", "json", "--yes", "backup", "--from", "old", "--to", "spaces",
                           point="media", meanwhile=meanwhile, seconds=3,
                           env={**_lb_env(), "LIFEBOAT_FAULT": "stall:media"})
    assert held.code == 0, held
    assert second_holder["result"].code == 3, second_holder["result"]

    for name, value in _lb_env().items():
        monkeypatch.setenv(name, value)
    repo = Repository.open(engine.provider("spaces"), engine.stack)
    ids = repo.complete_ids()
    assert len(ids) >= 3  # the earlier test's, first, the one that held the lock
    doomed = repo.blob(hashlib.sha256(b"only in the older backup").hexdigest())
    assert doomed in repo.blobs()
    pruned = prune(repo, 1)
    assert pruned["kept"] == 1 and sorted(pruned["removed_backups"]) == ids[:-1]
    assert repo.complete_ids() == ids[-1:] and doomed not in repo.blobs() and pruned["removed_blobs"] >= 1
    kept = {repo.blob(e[3]) for e in repo.media_index(ids[-1])}
    assert kept <= set(repo.blobs())
    verified = lb(stack, "backups", "verify", "--at", "spaces")
    assert verified.code == 0 and [b["id"] for b in verified.envelope["data"]["backups"]] == ids[-1:], verified


def test_backup_twice_then_failover_after_the_source_is_gone(world):
    stack = world["stack"]
    outputs = world["outputs"]
    no_key = lb(stack, "backup", "--from", "old", key=None)
    assert no_key.code == 2 and no_key.envelope["errors"][0]["code"] == "secret.missing", no_key
    same = lb(stack, "backup", "--from", "old", "--to", "old")
    assert same.code == 2 and same.envelope["errors"][0]["code"] == "backup.same_target", same

    first = lb(stack, "backup", "--from", "old")
    outputs.append(first)
    assert first.code == 0, first
    steps = {s["step"]: s for s in first.envelope["data"]["steps"]}
    assert steps["media"]["objects"] == 10 and steps["media"]["uploaded"] >= 1
    first_id = first.envelope["data"]["backup"]

    # More writes on the source: rows in every table's neighbourhood and awkward objects.
    engine = engine_of(stack)
    old = engine.provider("old")
    import psycopg

    held = set(objects(old.objects()).values())
    with psycopg.connect(old.database().connection_url().reveal_text()) as conn:
        conn.execute("INSERT INTO posts (user_id, body, meta) SELECT user_id, body || ' (again) ✓', "
                     "'{\"second\": true}' FROM posts ORDER BY id LIMIT 25")
        conn.execute("INSERT INTO users (handle, display_name, avatar) VALUES ('late-comer', 'Lätè', '\\x00ff00')")
    for key, data in NEW_OBJECTS.items():
        old.objects().write("media", key, io.BytesIO(data), size=len(data))
    import redis

    cache = redis.Redis.from_url(old.cache().connection_url().reveal_text())
    cache.set("session:ünï", b"\x00logged-in", ex=3600)
    cache.rpush("timeline:1", "3", "2", "1")
    # the broker, in db 1 (redis-py takes the URL's database over db=: the URL says which)
    redis.Redis.from_url(on_db(old.cache().connection_url().reveal_text(), 1)).rpush("celery", "queued task")
    assert not cache.exists("celery")
    expected = {"rows": rows(old), "objects": objects(old.objects()),
                "secret": old.secrets().read("CHIRP_SECRET_KEY").reveal_text()}
    world["secret"] = expected["secret"]

    # Killed as it stores the media, then resumed: the same backup, completed.
    killed = lb(stack, "backup", "--from", "old", env={"LIFEBOAT_FAULT": "kill:media"})
    assert killed.code == -9, killed
    second = lb(stack, "backup", "--from", "old", "--resume")
    outputs.append(second)
    assert second.code == 0, second
    assert [s["step"] for s in second.envelope["data"]["steps"] if s.get("resumed")] == ["database", "base", "wal", "cache"]
    steps = {s["step"]: s for s in second.envelope["data"]["steps"]}
    # Incremental: only content no earlier backup holds is stored (the seed has an empty object too).
    fresh = {hashlib.sha256(d).hexdigest() for d in NEW_OBJECTS.values()} - held
    assert steps["media"]["objects"] == 13 and len(fresh) == 2
    assert steps["media"]["uploaded"] == 2 and steps["media"]["already_held"] == 11, steps["media"]
    second_id = second.envelope["data"]["backup"]
    assert second_id > first_id
    world.update(first=first_id, second=second_id, expected=expected)

    listed = lb(stack, "backups", "list")
    outputs.append(listed)
    assert listed.code == 0, listed
    found = {b["id"]: b for b in listed.envelope["data"]["backups"]}
    assert set(found) == {first_id, second_id} and all(b["complete"] for b in found.values()), [b["problems"] for b in found.values()]
    verified = lb(stack, "backups", "verify")
    assert verified.code == 0 and verified.envelope["data"]["failed"] == [], verified

    # A drill: the newest backup restored into a scratch copy of "new", compared with the live source, torn
    # down; DNS untouched; the report's RTO agrees with the step timings of its journal.
    names = engine_of(stack).provider("names")
    dns_before = names.dns().records("lifeboat.test")
    drill = lb(stack, "drill", "--to", "new", "--against", "old")
    outputs.append(drill)
    assert drill.code == 0, drill
    report = drill.envelope["data"]
    assert report["ok"] and report["torn_down"] and report["backup"] == second_id, report
    assert report["against_source"]["database"]["changed_since_backup"] == {}, report["against_source"]
    assert report["against_source"]["media"]["written_since_backup"] == 0
    timings = [json.loads(line) for line in Path(report["journal"]).read_text().splitlines()]
    spent = sum(e.get("seconds", 0) for e in timings if e.get("event") == "done" and e["step"] != "failover")
    assert spent <= report["rto_seconds"] <= spent + 10, (spent, report["rto_seconds"])
    assert 0 < report["rpo_seconds"] < 600
    assert f"RTO {report['rto_seconds']:.1f} s" in Path(report["report"]["markdown"]).read_text()
    assert json.loads(Path(report["report"]["json"]).read_text())["rto_seconds"] == report["rto_seconds"]
    assert not (stack.parent / "state" / "drill-new").exists()
    assert names.dns().records("lifeboat.test") == dns_before

    # The source is gone: destroyed, nothing of it left to read.
    gone = lb(stack, "destroy", "--on", "old")
    assert gone.code == 0, gone
    assert not (stack.parent / "state" / "old").exists()

    began = time.time()
    killed = lb(stack, "failover", "--to", "new", env={"LIFEBOAT_FAULT": "kill:database:mid"})
    assert killed.code == -9, killed
    over = lb(stack, "failover", "--to", "new", "--resume")
    outputs.append(over)
    assert over.code == 0, over
    assert [s["step"] for s in over.envelope["data"]["steps"] if s.get("resumed")] == ["check", "secrets", "prepare"]
    data = over.envelope["data"]
    assert data["backup"] == second_id
    manifest_taken = calendar.timegm(time.strptime(data["recovery_point"], "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(data["rpo_seconds"] - (began - manifest_taken)) < 5, data
    assert 0 < data["rto_seconds"] < time.time() - began + 1

    kept = lb(stack, "destroy", "--on", "new")  # it keeps the backups: refused, nothing changed
    assert kept.code == 2 and kept.envelope["errors"][0]["code"] == "destroy.holds_backups", kept
    new = engine_of(stack).provider("new")
    assert rows(new) == expected["rows"]
    assert objects(new.objects()) == expected["objects"]
    assert new.secrets().read("CHIRP_SECRET_KEY").reveal_text() == expected["secret"]
    cache = redis.Redis.from_url(new.cache().connection_url().reveal_text())
    assert cache.get("session:ünï") == b"\x00logged-in" and 0 < cache.ttl("session:ünï") <= 3600
    assert cache.lrange("timeline:1", 0, -1) == [b"3", b"2", b"1"]
    assert redis.Redis.from_url(on_db(new.cache().connection_url().reveal_text(), 1)).lrange("celery", 0, -1) == [
        b"queued task"]
    assert "BACKUP_KEY" not in new.secrets().names()
    records = {(r.name, r.type): r for r in engine_of(stack).provider("names").dns().records("lifeboat.test")}
    assert records[("chirp", "A")].values == ("127.0.0.21",)
    # chirp answers on the target with the restored posts and media.
    status = lb(stack, "status", "--on", "new")
    url = next(s["url"] for s in status.envelope["data"]["services"] if s["service"] == "web")
    with urllib.request.urlopen(url + "/healthz", timeout=10) as resp:  # noqa: S310 - loopback
        assert resp.status == 200


def test_tampered_backup_is_refused_and_an_older_one_restores(world):
    stack = world["stack"]
    if "second" not in world:
        pytest.skip("needs the backups of the test before")  # it failed: that failure is the report
    store = DirectoryStore(stack.parent / "state" / "new" / "objects")
    dump = store.path_of("lifeboat-backups", f"chirp/backups/{world['second']}/database.dump")
    flip(dump, 5000)
    verify = lb(stack, "backups", "verify")
    assert verify.code == 4, verify
    failed = {b["id"]: b for b in verify.envelope["data"]["backups"]}
    assert failed[world["first"]]["ok"] and not failed[world["second"]]["ok"]
    assert any("database.dump" in p for p in failed[world["second"]]["problems"])

    new = engine_of(stack).provider("new")
    import redis

    cache = redis.Redis.from_url(new.cache().connection_url().reveal_text())
    cache.set("session:ünï", b"canary")  # the backup holds another value: a restore would replace it
    refused = lb(stack, "failover", "--to", "new")
    world["outputs"].append(refused)
    assert refused.code == 4, refused
    error = refused.envelope["errors"][0]
    assert world["second"] in error["message"] and "--backup" in error["hint"]
    # Found by the check before anything changed on the target (it used to restore secrets, and Redis
    # stayed as the restore left it)
    assert "Nothing on new was changed" in error["message"], error
    assert cache.get("session:ünï") == b"canary"

    older = lb(stack, "failover", "--to", "new", "--backup", world["first"])
    world["outputs"].append(older)
    assert older.code == 0, older
    new = engine_of(stack).provider("new")
    later = {k for k in objects(new.objects()) if k.startswith("later/")}
    # A failover restores what the backup holds; objects written after it that are already there stay.
    assert rows(new)["users"][0] == world["expected"]["rows"]["users"][0] - 1
    assert later == set(NEW_OBJECTS)


def test_tampered_media_object_is_named(world, monkeypatch):
    stack = world["stack"]
    if "second" not in world:
        pytest.skip("needs the backups of the first test")
    engine = engine_of(stack)
    from toolkit.workflows.repository import Repository

    monkeypatch.setenv(KEY_VAR, KEY)
    repo = Repository.open(engine.provider("new"), engine.stack)
    blob = repo.blob(hashlib.sha256(NEW_OBJECTS["later/bin"]).hexdigest())
    store = DirectoryStore(stack.parent / "state" / "new" / "objects")
    flip(store.path_of("lifeboat-backups", blob), 200_000)
    verify = lb(stack, "backups", "verify", "--backup", world["second"])
    assert verify.code == 4, verify
    problems = verify.envelope["data"]["backups"][0]["problems"]
    assert any("later/bin" in p for p in problems), problems
    # A media object is checked as it is restored (reading every object twice would double the restore):
    # the refusal then says exactly what it left on the target.
    dump = store.path_of("lifeboat-backups", f"chirp/backups/{world['second']}/database.dump")
    flip(dump, 5000)  # the test before left it flipped
    engine.provider("new").objects().delete("media", "later/bin")  # so that the failover restores it
    refused = lb(stack, "failover", "--to", "new", "--backup", world["second"])
    world["outputs"].append(refused)
    flip(dump, 5000)
    assert refused.code == 4, refused
    message = refused.envelope["errors"][0]["message"]
    assert "later/bin" in message and "Left on new: its secrets, its database, its cache" in message, message
    assert "services were not deployed and DNS still points where it did" in message


def test_wrong_key_is_a_clear_error(world):
    stack = world["stack"]
    if "second" not in world:
        pytest.skip("needs the backups of the first test")
    for args in (("backups", "list"), ("failover", "--to", "new")):
        wrong = lb(stack, *args, key="not the key")
        assert wrong.code == 2, wrong
        assert wrong.envelope["errors"][0]["code"] == "backup.wrong_key"
        assert "BACKUP_KEY" in wrong.envelope["errors"][0]["message"]


def test_no_secret_value_anywhere(world):
    stack = world["stack"]
    if "secret" not in world:
        pytest.skip("needs the backups of the first test")
    needles = [world["secret"].encode(), KEY.encode()]
    for result in world["outputs"]:
        for text in (result.stdout, result.stderr):
            for needle in needles:
                assert needle.decode() not in text
    # Journals and the repository (sealed parts, blobs, its config).
    kept = [*(stack.parent / ".lifeboat").rglob("*"), *(stack.parent / "state" / "new" / "objects").rglob("*")]
    assert any("lifeboat-backups" in p.parts for p in kept)
    for path in kept:
        if not path.is_file() or "media" in path.parts:
            continue
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, path
    for path in (stack.parent / ".lifeboat").rglob("journal.jsonl"):
        assert path.stat().st_mode & 0o077 == 0
        for line in path.read_text().splitlines():
            json.loads(line)


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def test_destroying_the_target_dns_points_at_says_how_to_take_it_back(world):
    """The zone lives on another target (names): destroying the one the records point at leaves them
    pointing at nothing, and a plain `up` elsewhere does not take them; the destroy says so and how."""
    stack = world["stack"]
    if "second" not in world:
        pytest.skip("needs the failover of the tests before")
    gone = lb(stack, "destroy", "--on", "new", "--delete-backups")
    assert gone.code == 0, gone
    warnings = gone.envelope["data"]["warnings"]
    assert any("chirp A" in w and "127.0.0.21" in w and "lifeboat up --on old --take-dns" in w for w in warnings), warnings
