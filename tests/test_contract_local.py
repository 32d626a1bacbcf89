"""The local provider passes the shared contract suite (real PostgreSQL, Redis, processes, files)."""

from __future__ import annotations

import stat

import pytest

from toolkit.config import stackfile
from toolkit.contract.suite import ProviderContract
from toolkit.run.engine import Engine

from .conftest import tiny_app

STACK = """version: 1
name: contract
domain: contract.lifeboat.test
services:
  web:
    role: web
    build: {app}
    command: ["python3", "serve.py"]
    port: 8000
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
  here:
    type: local
    state_dir: state
dns:
  provider: here
  zone: lifeboat.test
"""


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract-local")
    app = tiny_app(root)
    (root / "lifeboat.yml").write_text(STACK.format(app=app))
    engine = Engine(stackfile.load(root / "lifeboat.yml"))
    try:
        engine.up("here")
        yield engine.provider("here")
    finally:
        engine.destroy("here")


class TestLocalContract(ProviderContract):
    @pytest.fixture
    def provider(self, deployed):
        return deployed

    def test_state_files_are_private(self, provider):
        bad = []
        for path in provider.state.root.rglob("*"):
            if path.is_symlink() or "builds" in path.parts or "objects" in path.parts:
                continue
            if "releases" in path.relative_to(provider.state.root).parts[:1]:
                continue  # copies of the app's code with release modes, in a 0700 folder (checked below)
            mode = stat.S_IMODE(path.stat().st_mode)
            if path.is_file() and mode & 0o077:
                bad.append((str(path), oct(mode)))
        assert stat.S_IMODE(provider.state.root.stat().st_mode) == 0o700
        releases = provider.state.root / "releases"
        assert not releases.exists() or stat.S_IMODE(releases.stat().st_mode) == 0o700
        assert not bad
