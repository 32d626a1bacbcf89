"""`type: s3`: any S3-compatible store as a target of its own. The object-store contract passes against
s3rver (an S3-compatible server that is not AWS's emulator) and against moto reached as a custom endpoint;
a backup goes into it and verifies; bad credentials or a dead endpoint are exit 5, a missing key variable
exit 2."""

from __future__ import annotations

import pytest

from toolkit import stackfile
from toolkit.contract import Resource
from toolkit.engine import Engine
from toolkit.errors import BadInput, ProviderUnreachable

from .conftest import run_cli
from .contract import AWKWARD_KEYS, ObjectStoreContract

STACK = """version: 1
name: s3c
domain: www.s3c.test
services:
  web: {{role: web, image: "example/www:1", command: ["serve"], port: 8000}}
buckets:
  media: {{}}
providers:
  store:
    type: s3
    endpoint_url: {endpoint}
    access_key_env: S3C_KEY
    secret_key_env: S3C_SECRET
"""


def provider_on(tmp_path, endpoint: str, monkeypatch):
    monkeypatch.setenv("S3C_KEY", "S3RVER")
    monkeypatch.setenv("S3C_SECRET", "S3RVER")
    path = tmp_path / "lifeboat.yml"
    path.write_text(STACK.format(endpoint=endpoint))
    provider = Engine(stackfile.load(path)).provider("store")
    if not [r for r in provider.observe() if r.id == "bucket/media"]:
        provider.create(Resource("bucket", "media", {}))
    return provider


class TestS3rverContract(ObjectStoreContract):
    # s3rver's limits: its router folds "//" and ".." path segments (404, or the object lands elsewhere),
    # it keeps each key as files on disk, so a 400-byte path segment kills it (ENAMETOOLONG), and it answers
    # EncodingType=url listings without encoding the keys (so "%2F" reads back as "/"). Real S3 takes all
    # of them; moto takes them (its own limit is a newline).
    awkward_keys = [k for k in AWKWARD_KEYS if "//" not in k and ".." not in k and "%" not in k
                    and max(len(p) for p in k.split("/")) <= 200]

    @pytest.fixture
    def provider(self, s3rver, tmp_path, monkeypatch):
        return provider_on(tmp_path, s3rver.url, monkeypatch)


class TestMotoCustomEndpointContract(ObjectStoreContract):
    awkward_keys = [k for k in AWKWARD_KEYS if "\n" not in k] + ["tab\tkey"]  # moto's limit (test_aws_moto.py)

    @pytest.fixture
    def provider(self, moto_server, tmp_path, monkeypatch):
        return provider_on(tmp_path, moto_server.url, monkeypatch)


def test_missing_key_variable_and_dead_endpoint(tmp_path, monkeypatch):
    path = tmp_path / "lifeboat.yml"
    path.write_text(STACK.format(endpoint="http://127.0.0.1:9"))
    monkeypatch.delenv("S3C_KEY", raising=False)
    monkeypatch.setenv("S3C_SECRET", "x")
    provider = Engine(stackfile.load(path)).provider("store")
    with pytest.raises(BadInput) as info:
        provider.check()
    assert "S3C_KEY" in info.value.message and info.value.exit_code == 2
    monkeypatch.setenv("S3C_KEY", "x")
    with pytest.raises(ProviderUnreachable) as info:
        Engine(stackfile.load(path)).provider("store").check()
    assert "127.0.0.1:9" in info.value.message and info.value.exit_code == 5


def test_objects_only_target_runs_nothing(tmp_path, s3rver):
    path = tmp_path / "lifeboat.yml"
    path.write_text(STACK.format(endpoint=s3rver.url))
    result = run_cli("-c", str(path), "-o", "json", "plan", "--on", "store",
                     env={"S3C_KEY": "S3RVER", "S3C_SECRET": "S3RVER"})
    assert result.code == 2 and result.envelope["errors"][0]["code"] == "target.not_runnable", result
    # s3rver checks the access key id (not the secret): an unknown one is refused, exit 5
    wrong = run_cli("-c", str(path), "-o", "json", "backups", "list", "--at", "store",
                    env={"S3C_KEY": "nobody", "S3C_SECRET": "S3RVER"})
    assert wrong.code == 5 and wrong.envelope["errors"][0]["code"] == "s3.credentials", wrong
