"""Pure parts tested as data: command builders (exact argv), the planner, secret values, key encoding."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from toolkit.cli.output import Outcome, envelope
from toolkit.commands import pgcommands
from toolkit.contract import Resource, SecretValue
from toolkit.plan import planner
from toolkit.stores.layout import flat_key, flat_name

BIN = Path("/usr/lib/postgresql/15/bin")


def test_initdb_argv_has_no_password():
    argv = pgcommands.initdb(BIN, Path("/d/data"), superuser="lifeboat", pwfile=Path("/d/.pw"))
    assert argv == ["/usr/lib/postgresql/15/bin/initdb", "-D", "/d/data", "-U", "lifeboat", "--pwfile=/d/.pw",
                    "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
                    "--no-instructions"]


def test_pg_ctl_argv():
    assert pgcommands.pg_ctl_start(BIN, Path("/d"), Path("/d.log")) == [
        "/usr/lib/postgresql/15/bin/pg_ctl", "-D", "/d", "-l", "/d.log", "-w", "-t", "60", "start"]
    assert pgcommands.pg_ctl_stop(BIN, Path("/d"), mode="immediate", timeout=5) == [
        "/usr/lib/postgresql/15/bin/pg_ctl", "-D", "/d", "-m", "immediate", "-w", "-t", "5", "stop"]


def test_dump_and_restore_argv():
    assert pgcommands.pg_dump(BIN, host="127.0.0.1", port=5433, user="chirp", database="chirp") == [
        "/usr/lib/postgresql/15/bin/pg_dump", "--format=custom", "--compress=1", "--no-password",
        "-h", "127.0.0.1", "-p", "5433", "-U", "chirp", "-d", "chirp"]
    assert pgcommands.pg_restore(BIN, host="h", port=1, user="u", database="d") == [
        "python3", "-c", pgcommands.KEEP_EXTENSIONS, "/usr/lib/postgresql/15/bin/pg_restore", "--clean", "--if-exists", "--no-password", "--no-owner",
        "--role=u", "--exit-on-error", "--single-transaction", "-h", "h", "-p", "1", "-U", "u", "-d", "d"]
    assert "--clean" not in pgcommands.pg_restore(BIN, host="h", port=1, user="u", database="d", clean=False)


def test_postgres_conf_quotes_paths():
    conf = pgcommands.postgres_conf(port=5555, socket_dir=Path("/tmp/it's here"))
    assert "unix_socket_directories = '/tmp/it''s here'" in conf
    assert "port = 5555" in conf and "listen_addresses = '127.0.0.1'" in conf


def test_redis_conf_quotes_and_keeps_password_out_of_argv():
    conf = pgcommands.redis_conf(port=1, data_dir=Path('/a "b"'), pid_file=Path("/p"), log_file=Path("/l"),
                                 password='pa"ss')
    assert 'dir "/a \\"b\\""' in conf
    assert 'requirepass "pa\\"ss"' in conf
    assert pgcommands.redis_server("/usr/bin/redis-server", Path("/c.conf")) == ["/usr/bin/redis-server", "/c.conf"]


def res(kind, name, **attrs):
    return Resource(kind, name, attrs)


def test_plan_create_update_noop_delete_in_order():
    desired = [res("service", "web", release="b"), res("database", "chirp", version=15),
               res("bucket", "media")]
    observed = [res("service", "web", release="a"), res("bucket", "media"), res("cache", "redis", running=True)]
    plan = planner.compute("t", desired, observed)
    assert [(c.action, c.id) for c in plan.changes] == [
        ("delete", "cache/redis"), ("create", "database/chirp"), ("noop", "bucket/media"),
        ("update", "service/web")]
    assert plan.changes[-1].diff() == {"release": {"before": "a", "after": "b"}}
    assert plan.summary() == {"create": 1, "update": 1, "delete": 1, "noop": 1, "skip": 0}
    assert plan.has_changes


def test_plan_ignores_observed_only_attributes():
    plan = planner.compute("t", [res("bucket", "m")], [Resource("bucket", "m", {"objects": 3}, {"bytes": 9})])
    assert [c.action for c in plan.changes] == ["noop"]
    assert not plan.has_changes


def test_plan_keep_kinds_are_skipped_not_deleted():
    plan = planner.compute("t", [], [res("record", "www A")], keep={"record"})
    assert [(c.action, c.reason) for c in plan.changes] == [("skip", "not in the stack; left alone")]


def test_destroy_plan_reverse_order():
    plan = planner.destroy("t", [res("secret", "S"), res("service", "web"), res("database", "d")])
    assert [c.id for c in plan.changes] == ["service/web", "database/d", "secret/S"]


def test_secret_change_is_redacted_in_plan_json():
    before, after = res("secret", "K", value=SecretValue("old-s3cret")), res("secret", "K", value=SecretValue("new"))
    change = planner.Change("update", "secret", "K", before, after)
    text = json.dumps(planner.Plan("t", [change]).as_dict())
    assert "old-s3cret" not in text and "new" not in text.replace("<redacted>", "")
    assert change.diff() == {"value": {"before": "<redacted>", "after": "<redacted>"}}


def test_secret_value_never_shows_or_serialises():
    value = SecretValue("hunter2")
    assert "hunter2" not in repr(value) and "hunter2" not in str(value) and "hunter2" not in f"{value}"
    with pytest.raises(TypeError):
        pickle.dumps(value)
    assert value == SecretValue("hunter2") and value != SecretValue("hunter3")
    assert "hunter2" not in envelope("x", Outcome({"v": value}))


@pytest.mark.parametrize("key", ["a", "media/x.jpg", "../../etc/passwd", ".", "..", ".hidden", "a//b", "café ☕.jpg",
                                 "sp ace", "per%cent", "new\nline", "~tilde", "x" * 300])
def test_flat_names_are_one_safe_file_name(key):
    name = flat_name(key)
    assert "/" not in name and name not in (".", "..") and not name.startswith(".")
    assert len(name.encode()) <= 240
    decoded = flat_key(name)
    assert decoded == key or (decoded is None and name.startswith("~"))


def test_envelope_shape():
    env = json.loads(envelope("plan", Outcome({"a": 1}, status="changes", exit_code=10), ["careful"]))
    assert env == {"lifeboat": 1, "command": "plan", "status": "changes", "exit_code": 10, "data": {"a": 1},
                   "errors": [], "warnings": ["careful"]}


def test_packages_per_role():
    from toolkit.hostops.bootstrap import packages_needed

    base = ["python3", "python3-venv", "tar", "coreutils", "util-linux"]
    assert packages_needed(("db",), postgres=15, redis=True, tls=True, runtime="process", app=False) == \
        base + ["postgresql-15", "postgresql-contrib", "redis-server", "redis-tools"]
    assert packages_needed(("web",), postgres=15, redis=True, tls=True, runtime="docker", app=True) == \
        base + ["docker.io", "caddy"]
    assert packages_needed(("web",), postgres=None, redis=False, tls=False, runtime="process", app=True) == base


def test_digest_method_of_old_and_new_digests():
    """A manifest written before r1 (bare sums) is checked with the text method; sequences do not count."""
    from toolkit.contract import TableDigest
    from toolkit.stores.digests import digest_sql, method_of

    assert method_of({"posts": [3, "-123"], "sequence:posts_id_seq": [0, "3"]}) == "text"
    assert method_of({"posts": [3, "r1:-123"], "sequence:posts_id_seq": [0, "3"]}) == "r1"
    assert method_of({"a": TableDigest("a", 1, "r1:5"), "b": TableDigest("b", 1, "5")}) == "text"
    assert method_of({}) == "text"
    table = ("s p", 'we"ird', [("a", "bytes"), ("b", "exact"), ("c d", "text")])
    sql = digest_sql([table], "r1")
    assert 'hash_record_extended(ROW(t."a" COLLATE "C", t."b", t."c d"::text), 0)' in sql
    assert 'FROM ONLY "s p"."we""ird" AS t' in sql and "'r1:' ||" in sql
    assert "hashtextextended(t::text, 0)" in digest_sql([table], "text")
    assert "hashtextextended(t::text, 0)" in digest_sql([("public", "z", [])], "r1")  # no columns


def test_wal_archive_settings_and_segment_arithmetic():
    """What backup: wal: true writes into PostgreSQL's settings, and how segments are ordered and gaps found."""
    from types import SimpleNamespace

    from toolkit.workflows import walarchive

    conf = pgcommands.postgres_conf(port=5432, socket_dir=Path("/run/pg"), wal_spool=Path("/srv/it's here/wal"))
    assert "archive_mode = on" in conf and "archive_timeout = 60" in conf
    command = pgcommands.archive_command(Path("/srv/it's here/wal"))
    assert "'/srv/it'\"'\"'s here/wal'/\"%f\"" in command  # the spool path quoted for the shell
    assert pgcommands.pg_conf_quote(command) in conf  # and the whole command for postgresql.conf
    assert "archive_mode" not in pgcommands.postgres_conf(port=5432, socket_dir=Path("/run/pg"))
    assert "local replication all scram-sha-256" in pgcommands.pg_hba([])
    assert walarchive.position("0000000100000001000000FF") + 1 == walarchive.position("000000020000000200000000")
    assert walarchive.lsn_position("2/3000148") == walarchive.position("000000010000000200000003")
    assert walarchive.WAL_FILE.fullmatch("00000002.history") and walarchive.WAL_FILE.fullmatch(
        "000000010000000000000002.00000028.backup") and not walarchive.WAL_FILE.fullmatch("000000010000000000000002.part")
    repo = SimpleNamespace(where="bucket b")
    first = "000000010000000000000001"
    assert walarchive._gap(repo, [first, "000000010000000000000002"], first) is None
    gap = walarchive._gap(repo, [first, "000000010000000000000004"], first)
    assert gap.code == "backup.wal_gap" and "0000000000000002" in gap.message and "1 more" in gap.message
    # the base backup's own segment is part of the chain: a replay needs it
    missing_start = walarchive._gap(repo, ["000000010000000000000002", "000000010000000000000003"], first)
    assert missing_start.code == "backup.wal_gap" and "0000000000000001" in missing_start.message


def test_a_wal_segment_names_its_cluster_in_its_first_page_header():
    """The system identifier of a segment's long page header (PostgreSQL 15's layout, little-endian), which
    files each archived segment under its own cluster; anything shorter or without the long header is None."""
    import struct

    from toolkit.workflows import walarchive

    head = struct.pack("<HHIQI4xQII", 0xD110, 0x0002 | 0x0004, 1, 0x1000000, 0, 7311543870162657282, 16 << 20, 8192)
    assert len(head) == 40 and walarchive.header_system_id(head[:32]) == "7311543870162657282"
    assert walarchive.header_system_id(head[:31]) is None
    short = struct.pack("<HHIQI4xQ", 0xD110, 0x0000, 1, 0x1002000, 0, 1)  # a page without the long header
    assert walarchive.header_system_id(short) is None
    assert walarchive._foreign("000000010000000000000003", head, "7311543870162657282") is None
    assert "belongs to PostgreSQL cluster 7311543870162657282" in walarchive._foreign(
        "000000010000000000000003", head, "42")
    assert walarchive._foreign("00000002.history", b"", "42") is None  # no header: filed by the server's id
    assert walarchive._foreign("000000010000000000000003", b"", walarchive.LEGACY) is None  # old layout

    class Stream:
        def __init__(self, data):
            self.data = data

        def read(self, n=-1):
            out, self.data = (self.data, b"") if n < 0 else (self.data[:n], self.data[n:])
            return out

    stream = Stream(b"abcdefgh")
    head = stream.read(3)
    joined = walarchive._Prefixed(head, stream)
    assert joined.read(2) + joined.read(4) + joined.read() == b"abcdefgh"


@pytest.mark.parametrize("sizes", [
    [1000] * 1005,  # a remainder of 5: joins the batch before it
    [8 << 20] * 15 + [40 << 10] * 1000,  # heavy batches (bytes cap), then many small ones
    [40 << 10] * 1200,  # a remainder above a quarter stays a batch of its own
    [1],  # one object
    [],
])
def test_batches_hold_every_object_once_in_order(sizes):
    from toolkit.contract import ObjectInfo
    from toolkit.stores.copier import BATCH_BYTES, BATCH_COUNT, plan_batches

    objs = [ObjectInfo(f"k{i:05d}", size, None) for i, size in enumerate(sizes)]
    batches = plan_batches(objs)
    assert [o for b in batches for o in b] == objs
    assert all(b for b in batches)
    # the limits hold but for a merged small remainder (at most a quarter over)
    assert all(len(b) <= BATCH_COUNT * 5 // 4 and sum(o.size for o in b) <= BATCH_BYTES * 5 // 4 for b in batches)
    if sizes == [1000] * 1005:
        assert [len(b) for b in batches] == [500, 505]
    if sizes == [40 << 10] * 1200:
        assert [len(b) for b in batches] == [500, 500, 200]


def test_a_sequence_copy_must_reach_the_floor_read_with_the_snapshot():
    """Sequences are not transactional: a live source's advance while the dump is read. A copy's value at
    least the recorded one is right; lower would hand out ids again; tables compare exactly."""
    from toolkit.contract import TableDigest
    from toolkit.stores.digests import differing

    before = {"posts": TableDigest("posts", 3, "r1:9"), "sequence:posts_id_seq": TableDigest("sequence:posts_id_seq", 0, "40")}
    assert differing(before, {**before, "sequence:posts_id_seq": TableDigest("sequence:posts_id_seq", 0, "57")}) == []
    assert differing(before, {**before, "sequence:posts_id_seq": TableDigest("sequence:posts_id_seq", 0, "39")}) == \
        ["sequence:posts_id_seq"]
    assert differing(before, {"posts": TableDigest("posts", 3, "r1:8")}) == ["posts", "sequence:posts_id_seq"]
    manifest = {"posts": [3, "r1:9"], "sequence:posts_id_seq": [0, "40"]}  # a backup's manifest
    assert differing(manifest, {"posts": [3, "r1:9"], "sequence:posts_id_seq": [0, "41"]}) == []


def test_reports_are_rendered_for_people():
    """No Python repr, no epoch seconds, no class names: sizes in units, times in local ISO form."""
    import time

    from toolkit.cli.output import duration, human_fields, human_value

    assert human_value("bytes", 3 * 1024 * 1024) == "3.0 MiB" and human_value("x", None) == "-"
    assert human_value("records", ["chirp A", "www A"]) == "chirp A, www A" and human_value("ok", True) == "yes"
    at = time.mktime((2026, 12, 5, 6, 30, 0, 0, 0, -1))
    line = human_fields({"step": "lower_ttl", "lowered": {"chirp A": 20}, "to": 5, "confirmed_on": ["Route53"],
                         "wait_until_epoch": at, "seconds": 1.5})
    assert line == "lowered: chirp A 20; to: 5; confirmed on: Route53; wait until: 2026-12-05 06:30:00", line
    assert "{" not in line and "[" not in line and "_epoch" not in line
    assert duration(42) == "42 s" and duration(185) == "3 min 5 s" and duration(7800) == "2 h 10 min"


def test_progress_shows_no_rate_before_there_is_one_and_json_mode_streams_events(monkeypatch):
    import io

    from toolkit.cli.output import HumanEvents
    from toolkit.errors import Warned
    from toolkit.run.events import JsonLineEvents

    lines = []

    class Console:
        def print(self, text, end="\n"):
            pass

        def line(self, text):
            lines.append(text)

        def warn(self, text):
            lines.append("warn " + text)

    import types

    clock = iter([0.0, 0.0, 3.0])
    monkeypatch.setattr("toolkit.cli.output.time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    events = HumanEvents(Console())
    events.live = False
    events.progress("media", 0, 4096)
    events.progress("media", 2048, 4096)
    assert lines == ["media: 0.0 B of 4.0 KiB (0%)", "media: 2.0 KiB of 4.0 KiB (50%), 682.7 B/s, ETA 3 s"], lines

    stream = io.StringIO()
    json_events = JsonLineEvents(stream, every=5.0)
    json_events.step("checking here")
    json_events.warn(Warned("careful", "plan.x"))
    json_events.progress("media", 1, 10)
    json_events.progress("media", 2, 10)  # within 5 s: not shown
    json_events.progress("media", 10, 10)  # finished: always shown
    got = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [g["event"] for g in got] == ["step", "warn", "progress", "progress"], got
    assert got[1]["code"] == "plan.x" and got[3]["done"] == 10 and json_events.warnings == ["careful"]
