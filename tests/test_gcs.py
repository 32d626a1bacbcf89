"""`type: gcs`: Google Cloud Storage as a target (objects only), against fake-gcs-server. The object-store
contract passes; GCS's native MD5 is recorded; missing credentials are exit 2."""

from __future__ import annotations

import hashlib
import io

import pytest

from toolkit.config import stackfile
from toolkit.contract import Resource
from toolkit.contract.suite import ObjectStoreContract
from toolkit.errors import BadInput
from toolkit.run.engine import Engine

STACK = """version: 1
name: gcsy
domain: www.gcsy.test
services:
  web: {{role: web, image: "example/www:1", command: ["serve"], port: 8000}}
buckets:
  media: {{}}
providers:
  gcs:
    type: gcs
    project: lifeboat-test
{endpoint}"""


def provider_on(tmp_path, endpoint: str):
    path = tmp_path / "lifeboat.yml"
    path.write_text(STACK.format(endpoint=f"    endpoint_url: {endpoint}\n"))
    provider = Engine(stackfile.load(path)).provider("gcs")
    if not [r for r in provider.observe() if r.id == "bucket/media"]:
        provider.create(Resource("bucket", "media", {}))
    return provider


class TestFakeGcsContract(ObjectStoreContract):
    # The SDK holds an 8 MiB upload chunk and copies of it while sending (about 25 MB of Python allocations
    # at the peak, the same for larger objects): flat, but above half of the default 12 MiB object.
    large_size = 96 << 20

    @pytest.fixture
    def provider(self, fake_gcs, tmp_path):
        return provider_on(tmp_path, fake_gcs.url)


def test_native_md5_and_sha256_recorded(fake_gcs, tmp_path):
    store = provider_on(tmp_path, fake_gcs.url).objects()
    body = b"gcs body " * 100000
    store.write("media", "md5/check.bin", io.BytesIO(body), size=len(body), content_type="text/plain")
    head = store.head("media", "md5/check.bin")
    assert head.md5 == hashlib.md5(body).hexdigest()  # noqa: S324 - what GCS records
    assert head.sha256 == hashlib.sha256(body).hexdigest() and head.extra["crc32c"]


def test_missing_credentials_are_bad_input(tmp_path, monkeypatch):
    path = tmp_path / "lifeboat.yml"
    path.write_text(STACK.format(endpoint=""))
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    with pytest.raises(BadInput) as info:
        Engine(stackfile.load(path)).provider("gcs").check()
    assert "GOOGLE_APPLICATION_CREDENTIALS" in info.value.message and info.value.exit_code == 2
