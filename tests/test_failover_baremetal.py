"""Failover when the host is gone: chirp runs on three real SSH hosts (bare metal), is backed up to this
machine's local target, then every SSH host drops off the network (sshd and its sessions killed); `failover
--to here` brings chirp up here from the backup alone, with every row and object, and switches DNS."""

from __future__ import annotations

import json
import shutil
import urllib.request

from toolkit import stackfile
from toolkit.engine import Engine

from .conftest import baremetal_target, chirp_stack, make_host_roots, run_cli
from .test_migrate_local import objects, rows

KEY_VAR = "LB_TEST_FAILOVER_KEY"
SECRETS = f"""  CHIRP_SECRET_KEY: {{from: generate, length: 48}}
  BACKUP_KEY: {{from: env, var: {KEY_VAR}}}
"""


def test_failover_from_dead_hosts(tmp_path, ssh_lab):
    roots = make_host_roots()
    extra = baremetal_target(ssh_lab, roots, pg_port=5448, redis_port=6398) + \
        "backup:\n  to: here\n  encrypt_with: BACKUP_KEY\n"
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
