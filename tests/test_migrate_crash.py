"""Crash safety of `lifeboat migrate`: the process is killed with SIGKILL at five points (mid-dump, half-way
through a large object, after the deploy, mid-freeze, mid-cutover); `--resume` finishes each time with every
row and object present once, the source frozen and DNS on the target."""

from __future__ import annotations

import json

import pytest

from toolkit.config import stackfile
from toolkit.run.engine import Engine
from toolkit.run.faults import FAULT_POINTS

from .conftest import run_cli, run_cli_stalled, seeded_chirp
from .test_migrate_local import objects, rows

NEW = """  new:
    type: local
    state_dir: state/new
    address: 127.0.0.22
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with seeded_chirp(tmp_path_factory.mktemp("migrate-crash"), NEW, users=40, posts=500, media=8,
                      large_mb=3) as path:
        yield path


def journal_events(stack) -> list[dict]:
    base = stack.parent / ".lifeboat" / "migrate-old-new" / "migrations"
    current = (base / "current").read_text().strip()
    return [json.loads(line) for line in (base / current / "journal.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_killed_then_resumed_loses_and_duplicates_nothing(stack, point):
    lb = ["-c", str(stack), "-o", "json", "--yes"]
    # Each case starts from a fresh target and a serving source (the previous case left it frozen).
    assert run_cli(*lb, "destroy", "--on", "new").code == 0
    assert run_cli(*lb, "up", "--on", "old", "--take-dns").code == 0

    killed = run_cli(*lb, "migrate", "--from", "old", "--to", "new", env={"LIFEBOAT_FAULT": f"kill:{point}"})
    assert killed.code == -9, killed
    step = point.split(":")[0]
    events = journal_events(stack)
    began = [e for e in events if e["step"] == step and e["event"] == "begin"]
    done = [e for e in events if e["step"] == step and e["event"] == "done"]
    assert began and not done, f"the kill was meant to land inside {step}: {events}"

    resumed = run_cli(*lb, "migrate", "--from", "old", "--to", "new", "--resume")
    assert resumed.code == 0, resumed
    steps = {s["step"]: s for s in resumed.envelope["data"]["steps"]}
    assert not steps[step].get("resumed"), f"{step} must run again after the kill"

    engine = Engine(stackfile.load(stack))
    old, new = engine.provider("old"), engine.provider("new")
    assert rows(old) == rows(new)  # counts and digests of every row: nothing lost, nothing twice
    assert rows(new)["posts"][0] == 500
    assert objects(old.objects()) == objects(new.objects()) and len(objects(new.objects())) == 8
    assert not [i for i in old.compute().instances() if i.state == "running"], "the source must end frozen"
    assert all(i.healthy for i in new.compute().instances())
    records = {(r.name, r.type): r for r in old.dns().records("lifeboat.test")}
    assert records[("chirp", "A")].values == ("127.0.0.22",)
    leftovers = list((stack.parent / "state" / "new").rglob(".tmp/*"))
    assert not leftovers, f"partial writes left behind: {leftovers}"


def test_a_source_taking_writes_during_the_dump_still_verifies_exactly(stack):
    """The dump and the source's digests come from one exported snapshot: rows written while the dump
    streams are neither half-copied nor reported as a mismatch (they follow in the next pass)."""
    import psycopg

    lb = ["-c", str(stack), "-o", "json", "--yes"]
    assert run_cli(*lb, "up", "--on", "old", "--take-dns").code == 0
    engine = Engine(stackfile.load(stack))
    old = engine.provider("old")
    before = rows(old)["posts"][0]
    def write_rows() -> None:
        with psycopg.connect(old.database().connection_url().reveal_text(), autocommit=True) as conn:
            conn.execute("INSERT INTO posts (user_id, body) SELECT id, 'written during the dump' FROM users "
                         "ORDER BY id LIMIT 25")

    result = run_cli_stalled(*lb, "migrate", "--from", "old", "--to", "new", "--no-cutover", point="database:mid",
                             meanwhile=write_rows, seconds=3)
    assert result.code == 0, result
    database = next(s for s in result.envelope["data"]["steps"] if s["step"] == "database")
    assert "snapshot" in database["verified"], database
    assert rows(engine.provider("new"))["posts"][0] == before
    assert rows(old)["posts"][0] == before + 25


def test_a_parallel_database_copy_matches_and_a_second_pass_replaces_it(stack):
    """--db-jobs 3: schema, then every table on its own stream from one snapshot, then sequences, then
    indexes and constraints. Rows, sequences and digests match; the target has the same indexes and
    foreign keys; a second pass into the populated target still replaces everything."""
    import psycopg

    lb = ["-c", str(stack), "-o", "json", "--yes"]
    assert run_cli(*lb, "destroy", "--on", "new").code == 0
    assert run_cli(*lb, "up", "--on", "old", "--take-dns").code == 0
    first = run_cli(*lb, "migrate", "--from", "old", "--to", "new", "--no-cutover", "--db-jobs", "3")
    assert first.code == 0, first
    database = next(s for s in first.envelope["data"]["steps"] if s["step"] == "database")
    assert database["jobs"] == 3 and "snapshot" in database["verified"], database
    engine = Engine(stackfile.load(stack))
    old, new = engine.provider("old"), engine.provider("new")
    assert rows(old) == rows(new)

    def schema(provider) -> list:
        with psycopg.connect(provider.database().connection_url().reveal_text()) as conn:
            return conn.execute("SELECT conrelid::regclass::text, contype, pg_get_constraintdef(oid) FROM pg_constraint "
                                "WHERE connamespace = 'public'::regnamespace UNION ALL "
                                "SELECT tablename, 'i', indexdef FROM pg_indexes WHERE schemaname = 'public' "
                                "ORDER BY 1, 2, 3").fetchall()

    assert schema(old) == schema(new) and any(c[1] == "f" for c in schema(new))
    with psycopg.connect(old.database().connection_url().reveal_text(), autocommit=True) as conn:
        conn.execute("INSERT INTO posts (user_id, body) SELECT id, 'second pass' FROM users ORDER BY id LIMIT 3")
    second = run_cli(*lb, "migrate", "--from", "old", "--to", "new", "--no-cutover", "--db-jobs", "3")
    assert second.code == 0, second
    assert rows(old) == rows(new)


def test_a_new_run_after_a_kill_in_the_freeze_lifts_it_before_starting_over(stack):
    """Killed with the source frozen, then run again without --resume: the source's services start again
    first (the interrupted journal records the freeze as undone, the run says so), and the new run copies
    with the source serving (here without a cutover, so it ends serving)."""
    lb = ["-c", str(stack), "-o", "json", "--yes"]
    assert run_cli(*lb, "destroy", "--on", "new").code == 0
    assert run_cli(*lb, "up", "--on", "old", "--take-dns").code == 0
    killed = run_cli(*lb, "migrate", "--from", "old", "--to", "new", env={"LIFEBOAT_FAULT": "kill:freeze:mid"})
    assert killed.code == -9, killed
    interrupted = journal_events(stack)
    old = Engine(stackfile.load(stack)).provider("old")
    assert not [i for i in old.compute().instances() if i.state == "running"], "the kill was meant after the pause"

    again = run_cli(*lb, "migrate", "--from", "old", "--to", "new", "--no-cutover")
    assert again.code == 0, again
    assert any("left old frozen" in w for w in again.envelope["warnings"]), again.envelope["warnings"]
    base = stack.parent / ".lifeboat" / "migrate-old-new" / "migrations"
    first = [json.loads(line) for line in (base / interrupted[0]["id"] / "journal.jsonl").read_text().splitlines()]
    assert first[-1]["step"] == "freeze" and first[-1]["event"] == "undone", first[-1]
    old = Engine(stackfile.load(stack)).provider("old")
    assert all(i.state == "running" and i.healthy for i in old.compute().instances())
