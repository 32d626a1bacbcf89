"""An untrusted PostgreSQL extension (bloom: only a superuser may create it) through every restore path:
`up` creates it as the superuser; migrate, backup + failover and the drill restore the app's dump (as the app
role, --clean) without trying to drop or comment it ("must be owner of extension bloom" stopped all three:
issue 23, item 13); the index that uses it arrives and answers."""

from __future__ import annotations

import pytest

from toolkit.config import stackfile
from toolkit.run.engine import Engine

from .conftest import run_cli, seeded_chirp
from .test_migrate_local import rows

KEY_VAR = "LB_TEST_EXT_BACKUP_KEY"
EXTRA = """  new:
    type: local
    state_dir: state/new
  spare:
    type: local
    state_dir: state/spare
backup:
  to: old
  encrypt_with: BACKUP_KEY
"""
SECRETS = f"""  CHIRP_SECRET_KEY: {{from: generate, length: 48}}
  BACKUP_KEY: {{from: env, var: {KEY_VAR}}}
"""
ENV = {KEY_VAR: "a long enough passphrase for the extension test"}


def lb(stack, *args):
    return run_cli("-c", str(stack), "-o", "json", "--yes", *args, env=ENV)


def bloom_state(provider) -> tuple:
    """(the extension's owner is a superuser, the index uses bloom, what a lookup through it finds)."""
    import psycopg

    with psycopg.connect(provider.database().connection_url().reveal_text()) as conn:
        owner_super = conn.execute("SELECT r.rolsuper FROM pg_extension e JOIN pg_roles r ON r.oid = e.extowner "
                                   "WHERE e.extname = 'bloom'").fetchone()
        method = conn.execute("SELECT am.amname FROM pg_class c JOIN pg_am am ON am.oid = c.relam "
                              "WHERE c.relname = 'tags_bloom'").fetchone()
        conn.execute("SET enable_seqscan = off")
        found = conn.execute("SELECT label FROM tags WHERE id = 42 AND weight = 2").fetchall()
    return (owner_super and owner_super[0], method and method[0], found)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with seeded_chirp(tmp_path_factory.mktemp("extensions"), EXTRA, users=10, posts=50, media=2, large_mb=1,
                      dns=False, targets=("new", "spare"), secrets=SECRETS, extensions=("pg_trgm", "bloom")) as path:
        import psycopg

        old = Engine(stackfile.load(path)).provider("old")
        with psycopg.connect(old.database().connection_url().reveal_text()) as conn:
            conn.execute("CREATE TABLE tags (id int, weight int, label text)")
            conn.execute("INSERT INTO tags SELECT i, i % 10, 'tag ' || i FROM generate_series(1, 5000) i")
            conn.execute("CREATE INDEX tags_bloom ON tags USING bloom (id, weight)")
        assert bloom_state(old) == (True, "bloom", [("tag 42",)])
        yield path


def test_migrate_carries_a_database_with_an_untrusted_extension(stack):
    moved = lb(stack, "migrate", "--from", "old", "--to", "new", "--no-cutover")
    assert moved.code == 0, moved
    engine = Engine(stackfile.load(stack))
    old, new = engine.provider("old"), engine.provider("new")
    assert bloom_state(new) == (True, "bloom", [("tag 42",)])
    assert rows(old) == rows(new)
    # a second run (the target holds the copy, extension and all) is as safe
    again = lb(stack, "migrate", "--from", "old", "--to", "new", "--no-cutover")
    assert again.code == 0, again
    assert bloom_state(new) == (True, "bloom", [("tag 42",)])


def test_backup_failover_and_drill_restore_it(stack):
    saved = lb(stack, "backup", "--from", "new")
    assert saved.code == 0, saved
    drill = lb(stack, "drill", "--to", "spare", "--against", "new")
    assert drill.code == 0, drill
    over = lb(stack, "failover", "--to", "spare", "--no-cutover")
    assert over.code == 0, over
    spare = Engine(stackfile.load(stack)).provider("spare")
    assert bloom_state(spare) == (True, "bloom", [("tag 42",)])
