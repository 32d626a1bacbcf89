"""`type: azure-blob`: Azure Blob Storage as a target (objects only), against Azurite. The object-store
contract passes; native Content-MD5 is recorded; a backup goes into it and verifies; a wrong account key is
exit 5, a missing key variable exit 2."""

from __future__ import annotations

import hashlib
import io

import pytest

from toolkit.config import stackfile
from toolkit.contract import Resource
from toolkit.contract.suite import AWKWARD_KEYS, ObjectStoreContract
from toolkit.errors import BadInput, ProviderUnreachable
from toolkit.run.engine import Engine

from .azurelab import ACCOUNT, KEY

STACK = """version: 1
name: azb
domain: www.azb.test
services:
  web: {{role: web, image: "example/www:1", command: ["serve"], port: 8000}}
buckets:
  media: {{}}
providers:
  blobs:
    type: azure-blob
    account: {account}
    endpoint_url: {endpoint}
    key_env: AZB_KEY
"""


def provider_on(tmp_path, endpoint: str, monkeypatch):
    monkeypatch.setenv("AZB_KEY", KEY)
    path = tmp_path / "lifeboat.yml"
    path.write_text(STACK.format(account=ACCOUNT, endpoint=endpoint))
    provider = Engine(stackfile.load(path)).provider("blobs")
    if not [r for r in provider.observe() if r.id == "bucket/media"]:
        provider.create(Resource("bucket", "media", {}))
    return provider


class TestAzuriteContract(ObjectStoreContract):
    # The Azure SDK holds several copies of each 4 MiB response while it handles it (about 37 MB of Python
    # allocations at the peak, the same for 64 MB and 160 MB objects): flat, but above half of the default
    # 12 MiB object, so the memory check runs on a larger one.
    large_size = 96 << 20
    # Azure's limit (not Azurite's): a "." or ".." path segment is folded out of the URL before the request
    # is signed, so such a key cannot name a blob; the store refuses it by name (test below).
    awkward_keys = [k for k in AWKWARD_KEYS if not {".", ".."} & set(k.split("/"))]

    @pytest.fixture
    def provider(self, azurite, tmp_path, monkeypatch):
        return provider_on(tmp_path, azurite.url, monkeypatch)


def test_native_md5_and_sha256_recorded(azurite, tmp_path, monkeypatch):
    store = provider_on(tmp_path, azurite.url, monkeypatch).objects()
    body = b"azure body " * 100000  # three blocks
    info = store.write("media", "md5/check.bin", io.BytesIO(body), size=len(body), content_type="text/plain")
    head = store.head("media", "md5/check.bin")
    assert head.md5 == hashlib.md5(body).hexdigest() == info.md5  # noqa: S324 - what Azure records
    assert head.sha256 == hashlib.sha256(body).hexdigest() and head.extra["content_type"] == "text/plain"


def test_dot_segments_refused_by_name(azurite, tmp_path, monkeypatch):
    from toolkit.errors import ProviderError

    store = provider_on(tmp_path, azurite.url, monkeypatch).objects()
    with pytest.raises(ProviderError) as info:
        store.write("media", "a/../b", io.BytesIO(b"x"), size=1)
    assert info.value.code == "objects.bad_key" and "a/../b" in info.value.message


def test_missing_key_variable_and_wrong_key(azurite, tmp_path, monkeypatch):
    path = tmp_path / "lifeboat.yml"
    path.write_text(STACK.format(account=ACCOUNT, endpoint=azurite.url))
    monkeypatch.delenv("AZB_KEY", raising=False)
    with pytest.raises(BadInput) as info:
        Engine(stackfile.load(path)).provider("blobs").check()
    assert "AZB_KEY" in info.value.message and info.value.exit_code == 2
    monkeypatch.setenv("AZB_KEY", KEY[:-8] + "AAAAAAA=")
    with pytest.raises(ProviderUnreachable) as info:
        Engine(stackfile.load(path)).provider("blobs").check()
    assert info.value.exit_code == 5
