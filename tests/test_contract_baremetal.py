"""The bare-metal provider passes the shared contract suite on three real OpenSSH hosts."""

from __future__ import annotations

import pytest

from toolkit import stackfile
from toolkit.engine import Engine

from .conftest import baremetal_target, make_host_roots, tiny_app
from .contract import ProviderContract

STACK = """version: 1
name: contract
domain: contract.lifeboat.test
services:
  web:
    role: web
    build: {app}
    command: ["python3", "serve.py"]
    port: 8100
    replicas: 2
  worker:
    role: worker
    build: {app}
    command: ["sleep", "3600"]
postgres:
  version: 15
  database: contract
  extensions: [pg_trgm]
redis: {{}}
buckets:
  media: {{}}
providers:
{target}"""


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, ssh_lab):
    root = tmp_path_factory.mktemp("contract-baremetal")
    app = tiny_app(root)
    roots = make_host_roots()
    target = baremetal_target(ssh_lab, roots, pg_port=5441, redis_port=6391)
    (root / "lifeboat.yml").write_text(STACK.format(app=app, target=target))
    engine = Engine(stackfile.load(root / "lifeboat.yml"))
    try:
        engine.up("colo")
        yield engine.provider("colo")
    finally:
        engine.destroy("colo")
        left = list(roots.iterdir())
        roots.rmdir() if not left else None
        assert not left, f"destroy left {left}"


class TestBaremetalContract(ProviderContract):
    @pytest.fixture
    def provider(self, deployed):
        return deployed

    def test_every_web_host_runs_every_replica(self, provider):
        instances = provider.compute().instances()
        web = sorted((i.host, i.replica) for i in instances if i.service == "web")
        assert web == [("web1", 0), ("web1", 1), ("web2", 0), ("web2", 1)]
        assert {i.url for i in instances if i.service == "web"} == {
            "http://127.0.0.2:8100", "http://127.0.0.2:8101", "http://127.0.0.3:8100", "http://127.0.0.3:8101"}
        assert [i.host for i in instances if i.service == "worker"] == ["web1"]
