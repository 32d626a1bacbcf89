"""The `terraform` provider type passes the shared contract suite: the test module (tests/tfhosts, builtin
terraform_data) reports three real OpenSSH hosts, `up` applies it and deploys a small stack on them."""

from __future__ import annotations

import os

import pytest

from toolkit import stackfile
from toolkit.engine import Engine

from .conftest import make_host_roots, tiny_app
from .contract import ProviderContract
from .test_contract_baremetal import STACK
from .test_terraform_module import target


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, ssh_lab, terraform_rc):
    root = tmp_path_factory.mktemp("contract-terraform")
    app = tiny_app(root)
    roots = make_host_roots()
    text = target(ssh_lab, roots).replace("5451", "5452").replace("6402", "6403").replace("state/tf", str(root / "tf"))
    (root / "lifeboat.yml").write_text(STACK.format(app=app, target=text))
    saved = os.environ.get("TF_CLI_CONFIG_FILE")
    os.environ["TF_CLI_CONFIG_FILE"] = str(terraform_rc)
    engine = Engine(stackfile.load(root / "lifeboat.yml"))
    try:
        engine.up("tf")
        yield engine.provider("tf")
    finally:
        try:
            engine.destroy("tf")
        finally:
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
