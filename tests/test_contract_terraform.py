"""The `terraform` provider type passes the shared contract suite: the test module (tests/tfhosts, builtin
terraform_data) reports three real OpenSSH hosts, `up` applies it and deploys a small stack on them. Its
lifeboat_dns output names a hetzner-dns service: a FAKE of the Hetzner Cloud API (tests/clouddnslab.py),
since the real one cannot be reached from here."""

from __future__ import annotations

import json
import os

import pytest

from toolkit.config import stackfile
from toolkit.contract.suite import ProviderContract
from toolkit.run.engine import Engine

from .clouddnslab import FakeHetzner
from .conftest import make_host_roots, tiny_app
from .test_contract_baremetal import STACK
from .test_terraform_module import target


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, ssh_lab, terraform_rc):
    root = tmp_path_factory.mktemp("contract-terraform")
    app = tiny_app(root)
    roots = make_host_roots()
    fake_dns = FakeHetzner("contract-dns-token", ["lifeboat.test"]).__enter__()
    dns = json.dumps({"type": "hetzner-dns", "token_env": "LB_TEST_TF_DNS_TOKEN", "endpoint": fake_dns.endpoint})
    text = target(ssh_lab, roots).replace("5451", "5452").replace("6402", "6403").replace("state/tf", str(root / "tf"))
    text = text.replace("    hosts:\n", f"      dns: '{dns}'\n    hosts:\n")
    text += (f"  vault: {{type: local, state_dir: {root / 'vault'}}}\n"  # keeps the backups for the drill
             "secrets:\n  BACKUP_KEY: {from: env, var: LB_TEST_TF_BACKUP_KEY}\n"
             "backup: {to: vault, encrypt_with: BACKUP_KEY}\n")
    (root / "lifeboat.yml").write_text(STACK.format(app=app, target=text))
    saved = os.environ.get("TF_CLI_CONFIG_FILE")
    os.environ["TF_CLI_CONFIG_FILE"] = str(terraform_rc)
    os.environ["LB_TEST_TF_DNS_TOKEN"] = "contract-dns-token"  # noqa: S105 - the fake's token
    os.environ["LB_TEST_TF_BACKUP_KEY"] = "the operator's key for the terraform drill"
    engine = Engine(stackfile.load(root / "lifeboat.yml"))
    try:
        engine.up("tf")
        yield engine.provider("tf")
    finally:
        try:
            engine.destroy("tf")
        finally:
            os.environ.pop("LB_TEST_TF_DNS_TOKEN", None)
            os.environ.pop("LB_TEST_TF_BACKUP_KEY", None)
            fake_dns.__exit__(None, None, None)
            if saved is None:
                os.environ.pop("TF_CLI_CONFIG_FILE", None)
            else:
                os.environ["TF_CLI_CONFIG_FILE"] = saved
        left = list(roots.iterdir())
        roots.rmdir() if not left else None
        assert not left, f"destroy left {left}"


class TestTerraformModuleContract(ProviderContract):
    @pytest.fixture
    def provider(self, deployed):
        return deployed

    def test_hosts_come_from_the_module_outputs(self, provider):
        outputs = provider.outputs()["lifeboat_hosts"]
        assert sorted(outputs) == ["db1", "web1", "web2"]
        assert {s.name: s.address for s in provider.specs} == {n: o["address"] for n, o in outputs.items()}
        assert [r.kind for r in provider.observe()].count("infra") == 3


def test_drill_applies_the_module_again_for_its_scratch_copy(deployed, monkeypatch):
    """A drill into a terraform target: the module applied a second time from a state folder of its own
    (under its own lifeboat_name), the backup restored and deployed there beside the live stack (the test
    module hands out the same hosts: roots suffixed, ports moved up), compared with it, then destroyed
    (module, hosts' folders, state) while the deployment keeps running."""
    import psycopg

    from toolkit.workflows.backup import Backup
    from toolkit.workflows.drill import Drill

    engine = Engine(deployed.stack)
    with psycopg.connect(deployed.database().connection_url().reveal_text(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS drilled (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO drilled SELECT g, 'n' || g FROM generate_series(1, 50) g ON CONFLICT DO NOTHING")
    from providers.tfmodule import TerraformModuleProvider

    destroyed = []
    real = TerraformModuleProvider._destroy_infra
    monkeypatch.setattr(TerraformModuleProvider, "_destroy_infra",
                        lambda self: (destroyed.append((self.target.name, self.state_root)), real(self))[1])
    saved = Backup(engine, "tf", "vault").run()
    report = Drill(engine, "tf", against="tf", report_dir=deployed.stack.root / "drills").run()
    assert report["ok"] and report["torn_down"] and report["backup"] == saved["backup"], report
    assert report["against_source"]["database"]["changed_since_backup"] == {}, report["against_source"]
    scratch_state = deployed.state_root.parent / f"{deployed.state_root.name}-drill-tf"
    assert destroyed == [("drill-tf", scratch_state)]  # its own module state, not the live one
    assert not scratch_state.exists()
    assert not [h for h in deployed.specs if deployed.conn(h.name).run(["test", "-e", f"{h.root}-drill-tf"],
                                                                       check=False).ok]
    assert engine.status("tf")["healthy"]
