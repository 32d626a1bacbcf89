"""Continuous WAL archiving (`backup: wal: true`) on this machine, with real PostgreSQL servers: the source
archives its WAL, a backup carries a base backup, `backup --wal-only` ships what was written after it;
the source is destroyed; `failover` replays base + WAL in a scratch cluster and the target holds every
row committed before the last shipped segment, with the recovery point at the last replayed transaction.
`--before` (or `--at`) TIME stops the replay at that time; an altered or missing segment is refused (exit 4)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from toolkit.config import stackfile
from toolkit.run.engine import Engine
from toolkit.stores.dirstore import DirectoryStore

from .conftest import run_cli, tiny_app
from .test_backup_local import flip

KEY_VAR = "LB_TEST_WAL_KEY"
KEY = "a key only the operator holds: 91c2e0"


def lb(stack: Path, *args: str):
    return run_cli("-c", str(stack), "-o", "json", "--yes", *args, env={KEY_VAR: KEY})


TWO_TARGETS = """  old: {type: local, state_dir: state/old}
  new: {type: local, state_dir: state/new, address: 127.0.0.21}
"""


def write_stack(root: Path, *, name: str = "walapp", providers: str = TWO_TARGETS, backup_to: str = "new",
                keep: int = 3) -> Path:
    app = tiny_app(root)
    path = root / "lifeboat.yml"
    path.write_text(f"""version: 1
name: {name}
domain: {name}.lifeboat.test
services:
  web: {{role: web, build: {app}, command: ["python3", "serve.py"], port: 8000}}
postgres: {{version: 15, database: {name}}}
secrets:
  BACKUP_KEY: {{from: env, var: {KEY_VAR}}}
providers:
{providers}backup: {{to: {backup_to}, keep: {keep}, encrypt_with: BACKUP_KEY, wal: true}}
""")
    return path


def connect(stack: Path, target: str):
    import psycopg

    url = Engine(stackfile.load(stack)).provider(target).database().connection_url().reveal_text()
    return psycopg.connect(url, autocommit=True)


def counted(stack: Path, target: str) -> tuple[int, int]:
    with connect(stack, target) as conn:
        return conn.execute("SELECT count(*), coalesce(sum(length(body)), 0) FROM notes").fetchone()


def switch_and_wait(provider, spool: Path) -> None:
    """Close the current WAL segment (as the superuser) and wait until the archiver has put it in the spool."""
    with provider.pg_connect("postgres") as conn:
        name = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
        conn.execute("SELECT pg_switch_wal()")
    deadline = time.monotonic() + 30
    while not (spool / name).exists():
        assert time.monotonic() < deadline, f"{name} was not archived into {spool}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("wal-local")
    path = write_stack(root)
    try:
        yield path
    finally:
        for target in ("old", "new"):
            lb(path, "destroy", "--on", target, "--delete-backups")


def test_failover_replays_the_wal_shipped_after_the_backup(stack):
    up = lb(stack, "up", "--on", "old")
    assert up.code == 0, up
    old = Engine(stackfile.load(stack)).provider("old")
    spool = old.wal_spool()
    with connect(stack, "old") as conn:
        assert conn.execute("SHOW archive_mode").fetchone()[0] == "on"
        conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL, at timestamptz DEFAULT now())")
        conn.execute("INSERT INTO notes (body) SELECT 'before the backup ' || g || ' ☃' FROM generate_series(1, 1000) g")

    backup = lb(stack, "backup", "--from", "old")
    assert backup.code == 0, backup
    steps = {s["step"]: s for s in backup.envelope["data"]["steps"]}
    assert steps["base"]["part"]["plain_bytes"] > 1_000_000 and steps["base"]["start_segment"]

    with connect(stack, "old") as conn:  # three more segments, each with new rows
        for batch in range(3):
            conn.execute(f"INSERT INTO notes (body) SELECT 'batch {batch} ' || g FROM generate_series(1, 300) g")  # noqa: S608
            switch_and_wait(old, spool)
        time.sleep(1.1)
        middle = int(time.time())  # a whole second after the batches, before the last rows
        time.sleep(1.1)
        conn.execute("INSERT INTO notes (body) SELECT 'last, after --before ' || g FROM generate_series(1, 7) g")
        last_commit = time.time()
        switch_and_wait(old, spool)
    expected = counted(stack, "old")
    assert expected[0] == 1000 + 900 + 7

    shipped = lb(stack, "backup", "--from", "old", "--wal-only")
    assert shipped.code == 0, shipped
    assert shipped.envelope["data"]["wal"]["files"] >= 4
    assert not [p for p in spool.iterdir() if not p.name.endswith(".part")]  # the spool is emptied once shipped
    again = lb(stack, "backup", "--from", "old", "--wal-only")
    assert again.code == 0 and again.envelope["data"]["wal"]["files"] == 0, again

    listed = lb(stack, "backups", "list")
    assert listed.code == 0 and listed.envelope["data"]["backups"][0]["point_in_time"], listed
    assert listed.envelope["data"]["wal"]["files"] >= 4 and listed.envelope["data"]["wal"]["newest_segment"]
    gone = lb(stack, "destroy", "--on", "old")  # the source is gone: nothing of it is read below
    assert gone.code == 0, gone

    store = DirectoryStore(stack.parent / "state" / "new" / "objects")
    wal = sorted(o.key for o in store.list("lifeboat-backups", "walapp/wal/"))
    segments = [k for k in wal if len(k.rsplit("/", 1)[1]) == 24]
    assert len(segments) >= 4

    # An altered segment is refused, and so is a missing one: replay would stop there without a word.
    victim = store.path_of("lifeboat-backups", segments[-2])
    flip(victim, 4000)
    tampered = lb(stack, "failover", "--to", "new")
    assert tampered.code == 4, tampered
    assert tampered.envelope["errors"][0]["code"] == "backup.tampered"
    assert "--no-wal" in tampered.envelope["errors"][0]["hint"]
    flip(victim, 4000)
    saved = victim.read_bytes()
    victim.unlink()
    gap = lb(stack, "failover", "--to", "new")
    assert gap.code == 4 and gap.envelope["errors"][0]["code"] == "backup.wal_gap", gap
    verify = lb(stack, "backups", "verify")  # the backup's dump is fine; its point-in-time recovery is not
    assert verify.code == 4 and "gap" in verify.envelope["errors"][0]["message"], verify
    dump_only = lb(stack, "failover", "--to", "new", "--no-wal")
    assert dump_only.code == 0, dump_only
    assert counted(stack, "new")[0] == 1000  # what the backup's dump holds
    victim.write_bytes(saved)
    assert lb(stack, "backups", "verify").code == 0

    moved = lb(stack, "failover", "--to", "new")
    assert moved.code == 0, moved
    data = moved.envelope["data"]
    database = {s["step"]: s for s in data["steps"]}["database"]
    assert counted(stack, "new") == expected  # every row, those written after the backup too
    assert database["replayed_wal_files"] >= 4 and "replayed" in database["verified"]
    point = database["recovery_point"]
    assert last_commit - 2 <= point <= last_commit + 1, (point, last_commit)
    assert data["rpo_seconds"] < time.time() - steps["base"]["taken_at"]  # better than the backup alone

    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(middle))
    assert lb(stack, "failover", "--to", "new", "--at", until, "--before", until).code == 2  # two times: ambiguous
    nowhere = lb(stack, "failover", "--to", "new", "--at", "nowhere")  # neither a target nor a time
    assert nowhere.code == 2 and nowhere.envelope["errors"][0]["code"] == "target.unknown", nowhere
    earlier = lb(stack, "failover", "--to", "new", "--at", until)  # the spelling of --before
    assert earlier.code == 0, earlier
    assert counted(stack, "new")[0] == 1000 + 900  # stopped before the last rows
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    beyond = lb(stack, "failover", "--to", "new", "--before", later)  # past the archive's end: all of it
    assert beyond.code == 0, beyond
    assert counted(stack, "new") == expected
    for result in (backup, shipped, moved, earlier, beyond):
        assert KEY not in result.stdout + result.stderr

    # The dump is not what a replay reads, but a backup is trusted whole (as `backups verify` says): a
    # tampered dump refuses the failover before anything on the target changes (it used to restore, exit 0).
    ident = backup.envelope["data"]["backup"]
    dump = store.path_of("lifeboat-backups", f"walapp/backups/{ident}/database.dump")
    flip(dump, 100)
    with connect(stack, "new") as conn:
        conn.execute("UPDATE notes SET body = 'canary' WHERE id = 1")
    refused = lb(stack, "failover", "--to", "new")
    assert refused.code == 4, refused
    error = refused.envelope["errors"][0]
    assert error["code"] == "backup.tampered" and "database.dump" in error["message"], error
    assert "Nothing on new was changed" in error["message"], error
    with connect(stack, "new") as conn:
        assert conn.execute("SELECT body FROM notes WHERE id = 1").fetchone()[0] == "canary"
    assert lb(stack, "backups", "verify").code == 4
    flip(dump, 100)


def test_a_killed_failover_leaves_no_scratch_cluster_once_resumed(stack):
    """kill -9 while the scratch cluster that replayed the WAL is running: its folder and its postgres stay
    behind; the --resume (or any next replay) stops that postgres and removes the folder, and finishes."""
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="lifeboat-scratch-", dir="/tmp"))
    scratch.chmod(0o711)  # the scratch cluster runs as the `lifeboat` account
    env = {KEY_VAR: KEY, "TMPDIR": str(scratch)}
    try:
        killed = run_cli("-c", str(stack), "-o", "json", "--yes", "failover", "--to", "new",
                         env={**env, "LIFEBOAT_FAULT": "kill:replay:done"})
        assert killed.code == -9, killed
        left = [p for p in scratch.iterdir() if p.name.startswith("lifeboat-replay-")]
        assert len(left) == 1, left
        postmaster = int((left[0] / "data" / "postmaster.pid").read_text().split()[0])
        assert Path(f"/proc/{postmaster}").exists()  # the killed run's postgres still runs
        resumed = run_cli("-c", str(stack), "-o", "json", "--yes", "failover", "--to", "new", "--resume", env=env)
        assert resumed.code == 0, resumed
        assert not list(scratch.iterdir()), list(scratch.iterdir())
        assert not Path(f"/proc/{postmaster}").exists() or "zombie" in Path(f"/proc/{postmaster}/status").read_text()
        database = {s["step"]: s for s in resumed.envelope["data"]["steps"]}["database"]
        assert database["replayed_wal_files"] >= 4
    finally:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)


def test_every_cluster_keeps_its_own_archived_wal_after_a_failover(tmp_path):
    """The stack's first source A archives WAL, fails over to B, and B (a new cluster whose segment names
    restart where A's did) backs up and archives into the same repository. A's point-in-time history must
    survive B's: a failover from A's backup to a third target restores exactly A's rows, one from B's backup
    B's, and `backups verify` checks each backup's WAL against its own base. Before WAL was keyed by cluster,
    B's first backup overwrote A's segments of the same names."""
    path = write_stack(tmp_path, name="walclusters", backup_to="vault", keep=5, providers="""\
  a: {type: local, state_dir: state/a, address: 127.0.0.31}
  b: {type: local, state_dir: state/b, address: 127.0.0.32}
  c: {type: local, state_dir: state/c, address: 127.0.0.33}
  vault: {type: local, state_dir: state/vault}
""")
    engine = Engine(stackfile.load(path))

    def write(target: str, label: str, rows: int, *, segments: int) -> None:
        provider = engine.provider(target)
        with connect(path, target) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS notes (id serial PRIMARY KEY, body text NOT NULL)")
            for n in range(segments):
                conn.execute(f"INSERT INTO notes (body) SELECT '{label} {n} ' || g FROM generate_series(1, {rows}) g")  # noqa: S608
                switch_and_wait(provider, provider.wal_spool())

    def rows(target: str) -> dict[str, int]:
        with connect(path, target) as conn:
            found = conn.execute("SELECT split_part(body, ' ', 1), count(*) FROM notes GROUP BY 1").fetchall()
        return dict(found)

    try:
        assert lb(path, "up", "--on", "a").code == 0
        write("a", "from-a", 400, segments=1)
        first = lb(path, "backup", "--from", "a")
        assert first.code == 0, first
        a_backup = first.envelope["data"]["backup"]
        write("a", "from-a", 100, segments=4)  # A's history after its backup: in its archived WAL only
        assert lb(path, "backup", "--from", "a", "--wal-only").code == 0
        a_rows = rows("a")
        assert a_rows == {"from-a": 800}
        assert lb(path, "destroy", "--on", "a").code == 0  # A is gone

        moved = lb(path, "failover", "--to", "b", "--backup", a_backup)
        assert moved.code == 0, moved
        assert rows("b") == a_rows
        write("b", "from-b", 50, segments=1)
        second = lb(path, "backup", "--from", "b")  # B's own base backup and WAL, from segment 1 again
        assert second.code == 0, second
        b_backup = second.envelope["data"]["backup"]
        write("b", "from-b", 30, segments=5)
        assert lb(path, "backup", "--from", "b", "--wal-only").code == 0
        b_rows = rows("b")
        assert b_rows == {"from-a": 800, "from-b": 200}

        verified = lb(path, "backups", "verify")
        assert verified.code == 0, verified

        old = lb(path, "failover", "--to", "c", "--backup", a_backup)
        assert old.code == 0, old
        assert rows("c") == a_rows  # exactly A's rows: its base and every segment it archived after it
        new = lb(path, "failover", "--to", "c", "--backup", b_backup)
        assert new.code == 0, new
        assert rows("c") == b_rows
        database = {s["step"]: s for s in new.envelope["data"]["steps"]}["database"]
        assert database["replayed_wal_files"] >= 5, database

        listed = lb(path, "backups", "list")
        assert listed.code == 0, listed
        assert len(listed.envelope["data"]["wal"]["clusters"]) == 2, listed.envelope["data"]["wal"]
        # Both clusters hold segments of the same names, side by side (this is what used to be overwritten).
        store = DirectoryStore(tmp_path / "state" / "vault" / "objects")
        by_cluster: dict[str, set[str]] = {}
        for info in store.list("lifeboat-backups", "walclusters/wal/"):
            cluster, name = info.key.split("/")[2:]
            by_cluster.setdefault(cluster, set()).add(name)
        assert len(by_cluster) == 2 and set.intersection(*by_cluster.values()), by_cluster
    finally:
        for target in ("a", "b", "c", "vault"):
            lb(path, "destroy", "--on", target, "--delete-backups")
