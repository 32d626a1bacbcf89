"""Failover when the host is gone: chirp runs on three real SSH hosts (bare metal), is backed up to this
machine's local target with its WAL archived (backup: wal: true), more rows are written and only the WAL
shipped, then every SSH host drops off the network (sshd and its sessions killed); `failover --to here`
brings chirp up here from the backup and the WAL alone, with every row (those after the backup too) and
object, and switches DNS."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request

from toolkit.config import stackfile
from toolkit.run.engine import Engine

from .conftest import baremetal_target, chirp_stack, make_host_roots, run_cli
from .test_migrate_local import objects, rows

KEY_VAR = "LB_TEST_FAILOVER_KEY"
SECRETS = f"""  CHIRP_SECRET_KEY: {{from: generate, length: 48}}
  BACKUP_KEY: {{from: env, var: {KEY_VAR}}}
"""


def test_failover_from_dead_hosts(tmp_path, ssh_lab):
    roots = make_host_roots()
    extra = baremetal_target(ssh_lab, roots, pg_port=5448, redis_port=6398) + \
        "backup:\n  to: here\n  encrypt_with: BACKUP_KEY\n  wal: true\n"
    stack = chirp_stack(tmp_path, target="here", extra_target=extra, secrets=SECRETS)
    env = {KEY_VAR: "the operator's own key for this test"}
    lb = ["-c", str(stack), "-o", "json", "--yes"]
    try:
        up = run_cli(*lb, "up", "--on", "colo", "--take-dns", env=env)
        assert up.code == 0, up
        seed = run_cli("-c", str(stack), "exec", "--on", "colo", "web", "--", "python", "-m", "chirp", "seed",
                       "--users", "30", "--posts", "400", "--media", "6", "--large-mb", "2")
        assert seed.code == 0, seed
        colo = Engine(stackfile.load(stack)).provider("colo")
        expected = {"rows": rows(colo), "objects": objects(colo.objects()),
                    "secret": colo.secrets().read("CHIRP_SECRET_KEY")}

        saved = run_cli(*lb, "backup", "--from", "colo", env=env)
        assert saved.code == 0, saved

        # A drill on the very hosts that run the stack: the scratch copy sits beside it (own roots, ports
        # moved up), is compared with it, torn down, and the live deployment is untouched.
        drill = run_cli(*lb, "drill", "--to", "colo", "--against", "colo", env=env)
        assert drill.code == 0, drill
        report = drill.envelope["data"]
        assert report["ok"] and report["torn_down"] and report["backup"] == saved.envelope["data"]["backup"]
        assert report["against_source"]["database"]["changed_since_backup"] == {}, report["against_source"]
        assert not [p for p in roots.iterdir() if "drill" in p.name], list(roots.iterdir())
        assert rows(colo) == expected["rows"] and objects(colo.objects()) == expected["objects"]
        with urllib.request.urlopen("http://127.0.0.2:8000/api/stats", timeout=10) as resp:  # noqa: S310
            assert json.loads(resp.read())["posts"] == 400

        # Written after the backup: only the WAL carries it off the host.
        import psycopg

        with psycopg.connect(colo.database().connection_url().reveal_text(), autocommit=True) as conn:
            conn.execute("CREATE TABLE after_backup (id int PRIMARY KEY, note text)")
            conn.execute("INSERT INTO after_backup SELECT g, 'après ' || g FROM generate_series(1, 250) g")
        pgh, wal = colo.postgres(), colo.database().wal_source()
        segment = wal.current_segment()
        pgh.psql("SELECT pg_switch_wal();\n", user="lifeboat", password=colo.internal_secret("pg_superuser").reveal())
        deadline = time.monotonic() + 30
        while segment not in wal.spooled():
            assert time.monotonic() < deadline, f"{segment} was not archived"
            time.sleep(0.2)
        shipped = run_cli(*lb, "backup", "--from", "colo", "--wal-only", env=env)
        assert shipped.code == 0 and shipped.envelope["data"]["wal"]["files"] >= 1, shipped
        assert wal.spooled() == []

        for host in ssh_lab.hosts:  # the hosts are gone
            host.crash()
        status = run_cli(*lb, "status", "--on", "colo", env=env)
        assert status.code == 5, status

        over = run_cli(*lb, "failover", "--to", "here", env=env)
        assert over.code == 0, over
        data = over.envelope["data"]
        assert data["backup"] == saved.envelope["data"]["backup"] and data["rpo_seconds"] > 0
        steps = {s["step"]: s for s in data["steps"]}
        assert steps["media"]["written"] == 6 and [r["record"] for r in steps["cutover"]["records"]] == ["chirp A"]

        here = Engine(stackfile.load(stack)).provider("here")
        assert rows(here) == expected["rows"]
        assert steps["database"]["replayed_wal_files"] >= 1
        with psycopg.connect(here.database().connection_url().reveal_text()) as conn:
            assert conn.execute("SELECT count(*), max(note) FROM after_backup").fetchone() == (250, "après 99")
        assert objects(here.objects()) == expected["objects"]
        assert here.secrets().read("CHIRP_SECRET_KEY") == expected["secret"]
        records = {(r.name, r.type): r for r in here.dns().records("lifeboat.test")}
        assert records[("chirp", "A")].values == ("127.0.0.1",)
        web = next(s["url"] for s in run_cli(*lb, "status", "--on", "here").envelope["data"]["services"]
                   if s["service"] == "web")
        with urllib.request.urlopen(web + "/api/stats", timeout=10) as resp:  # noqa: S310 - loopback
            assert json.loads(resp.read())["posts"] == 400
    finally:
        for host in ssh_lab.hosts:
            if host.process is None:
                host.start(ssh_lab.authorized_keys)
        run_cli(*lb, "destroy", "--on", "colo", "--delete-backups", env=env)
        run_cli(*lb, "destroy", "--on", "here", "--delete-backups", env=env)
        shutil.rmtree(roots, ignore_errors=True)


def test_scratch_copy_settings_share_no_folder_or_port(tmp_path):
    """What a drill's scratch copy of a bare-metal target is (data only: no host is contacted)."""
    from types import SimpleNamespace

    import pytest

    from toolkit.contract import Unsupported

    lab = SimpleNamespace(hosts=[SimpleNamespace(address=f"127.0.0.{i}", port=22) for i in (2, 3, 4)],
                          known_hosts=tmp_path / "known_hosts", user="root", client_key=tmp_path / "id")
    stack = chirp_stack(tmp_path, target="here", extra_target=baremetal_target(lab, tmp_path / "roots"))
    colo = Engine(stackfile.load(stack)).provider("colo")
    settings = colo.scratch_settings("drill-colo")
    assert [h["root"] for h in settings["hosts"]] == [f"{s.root}-drill-colo" for s in colo.specs]
    assert (settings["postgres_port"], settings["redis_port"], settings["media_port"]) == (15433, 16380, 18790)
    assert settings["port_offset"] == 10000 and settings["proxy"]["https_port"] == 10443
    docker = chirp_stack(tmp_path, target="here", extra_target=baremetal_target(lab, tmp_path / "roots") +
                         "    runtime: docker\n")
    with pytest.raises(Unsupported):
        Engine(stackfile.load(docker)).provider("colo").scratch_settings("drill-colo")
