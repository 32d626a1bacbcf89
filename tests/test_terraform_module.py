"""`type: terraform`: a Terraform module of the user's as a provider. The test module (tests/tfhosts) is
built on the builtin terraform_data resource (no provider download) and reports real OpenSSH hosts on
loopback through the output contract; chirp migrates from this machine onto it (the module applied by the
migration's prepare step), runs there healthy, and `destroy` cleans the hosts and destroys the module."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

from toolkit import stackfile
from toolkit.engine import Engine

from .conftest import REPO, chirp_stack, make_host_roots, run_cli
from .test_migrate_local import objects, rows

MODULE = REPO / "tests" / "tfhosts"


def target(lab, roots: Path) -> str:
    web1, web2, db1 = lab.hosts[:3]
    return f"""  tf:
    type: terraform
    module: {MODULE}
    state_dir: state/tf
    key: {lab.client_key}
    known_hosts: {lab.known_hosts}
    ssh_user: {lab.user}
    postgres_port: 5451
    redis_port: 6402
    variables:
      user: {lab.user}
      web1: "{web1.address}:{web1.port}"
      web2: "{web2.address}:{web2.port}"
      db1: "{db1.address}:{db1.port}"
    hosts:
      - {{name: web1, roles: [web, worker, storage], root: {roots}/tf-web1}}
      - {{name: web2, roles: [web], root: {roots}/tf-web2}}
      - {{name: db1, roles: [db], root: {roots}/tf-db1}}
"""


def test_migrate_onto_a_terraform_module_then_destroy(tmp_path, ssh_lab, terraform_rc):
    from .conftest import aws_environment

    roots = make_host_roots()
    stack = chirp_stack(tmp_path, target="here", extra_target=target(ssh_lab, roots))
    env = {"TF_CLI_CONFIG_FILE": aws_environment(terraform_rc)["TF_CLI_CONFIG_FILE"], "TF_IN_AUTOMATION": "1"}
    lb = ["-c", str(stack), "-o", "json", "--yes"]
    try:
        assert run_cli(*lb, "up", "--on", "here").code == 0
        seed = run_cli("-c", str(stack), "exec", "--on", "here", "web", "--", "python", "-m", "chirp", "seed",
                       "--users", "20", "--posts", "200", "--media", "4", "--large-mb", "1")
        assert seed.code == 0, seed
        plan = run_cli(*lb, "plan", "--on", "tf", env=env)
        assert plan.code == 0, plan
        planned = {(c["kind"], c["name"]) for c in plan.envelope["data"]["changes"] if c["action"] == "create"}
        assert {("infra", 'terraform_data.host["web1"]'), ("infra", 'terraform_data.host["db1"]'),
                ("service", "web"), ("database", "chirp")} <= planned, planned

        moved = run_cli(*lb, "migrate", "--from", "here", "--to", "tf", env=env)
        assert moved.code == 0, moved
        engine = Engine(stackfile.load(stack))
        here, tf = engine.provider("here"), engine.provider("tf")
        assert rows(here) == rows(tf) and objects(here.objects()) == objects(tf.objects())
        status = run_cli(*lb, "status", "--on", "tf", env=env)
        assert status.code == 0 and status.envelope["data"]["healthy"], status
        hosts = {s["host"] for s in status.envelope["data"]["services"]}
        assert hosts == {"web1", "web2"}
        web1 = ssh_lab.hosts[0]
        with urllib.request.urlopen(f"http://{web1.address}:8000/api/stats", timeout=10) as resp:  # noqa: S310
            assert json.loads(resp.read())["posts"] == 200
        state = stack.parent / "state" / "tf" / "terraform"
        assert (state / "terraform.tfstate").exists()

        gone = run_cli(*lb, "destroy", "--on", "tf", env=env)
        assert gone.code == 0, gone
        assert not (stack.parent / "state" / "tf").exists()
        assert not [p for p in roots.iterdir() if p.name.startswith("tf-")]
    finally:
        run_cli(*lb, "destroy", "--on", "tf", env=env)
        run_cli(*lb, "destroy", "--on", "here")
        shutil.rmtree(roots, ignore_errors=True)


def test_module_contract_is_checked():
    from providers.tfmodule import module_contract

    assert module_contract(MODULE) == []
    assert module_contract(REPO / "tests" / "tfmodule")  # a module that is not a Lifeboat provider


def test_shipped_cloud_modules_are_formatted_and_follow_the_contract(terraform_rc):
    """Hetzner and DigitalOcean modules: their providers cannot be downloaded here, so they are checked by
    `terraform fmt -check` and against the contract, not applied (the README says so)."""
    import subprocess

    from providers.tfmodule import module_contract

    for cloud in ("hetzner", "digitalocean"):
        module = REPO / "templates" / "terraform" / cloud
        fmt = subprocess.run(["terraform", "fmt", "-check", "-diff", str(module)], capture_output=True, text=True)
        assert fmt.returncode == 0, fmt.stdout + fmt.stderr
        assert module_contract(module) == [], cloud
        text = (module / "main.tf").read_text()
        for variable in ("hosts", "db_hosts", "admin_cidrs"):
            assert f'variable "{variable}"' in text, (cloud, variable)
        assert "host_keys" in text and "ssh_deletekeys" in text  # keys pinned, not trusted on first use
