"""`type: s3`: any S3-compatible store as a target of its own. The object-store contract passes against
s3rver (an S3-compatible server that is not AWS's emulator) and against moto reached as a custom endpoint;
a backup goes into it and verifies; bad credentials or a dead endpoint are exit 5, a missing key variable
exit 2."""

from __future__ import annotations

import pytest

from toolkit.config import stackfile
from toolkit.contract import Resource
from toolkit.contract.suite import AWKWARD_KEYS, ObjectStoreContract
from toolkit.errors import BadInput, ProviderUnreachable
from toolkit.run.engine import Engine

from .conftest import make_host_roots, run_cli

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


def test_a_copy_checks_what_it_read_against_the_digest_recorded_with_the_object(tmp_path, moto_server, monkeypatch,
                                                                                ssh_lab):
    """S3 lists no digests, so the copier takes the SHA-256 recorded with each object from its GET: an object
    whose bytes no longer match that record (bit rot, a writer that bypassed Lifeboat) is refused, whether
    it goes alone or in a batch, and nothing of it lands; a multipart object's record (a tag) counts too."""
    import hashlib
    import io
    import shutil

    import boto3

    from toolkit.errors import VerificationFailed
    from toolkit.stores.copier import copy_objects
    from toolkit.stores.dirstore import DirectoryStore
    from toolkit.stores.s3 import SHA_META
    from toolkit.stores.sftpstore import RemoteDirectoryStore
    from toolkit.transport.ssh import SSHConnection

    moto_server.reset()
    src = provider_on(tmp_path, moto_server.url, monkeypatch).objects()
    big = bytes(range(256)) * (40 << 12)  # 10 MiB: above the multipart threshold
    src.write("media", "fine.txt", io.BytesIO(b"fine"))
    src.write("media", "big.bin", io.BytesIO(big))
    assert [o.sha256 for o in src.list("media")] == [None, None]  # not in the listing: no request per object
    # one by one (a directory store) and in batches (an SSH host: the batch writer)
    roots = make_host_roots()
    shutil.chown(roots, ssh_lab.user)
    host = ssh_lab.hosts[0]
    conn = SSHConnection(host.address, port=host.port, user=ssh_lab.user, key_file=str(ssh_lab.client_key),
                         known_hosts=str(ssh_lab.known_hosts))
    targets = [DirectoryStore(tmp_path / "target"), RemoteDirectoryStore(conn, str(roots / "store"))]
    for target in targets:
        target.create_bucket("media")
        assert copy_objects(src, target, ["media"])["copied"] == 2
        assert target.checksum("media", "big.bin") == hashlib.sha256(big).hexdigest()

    s3 = boto3.client("s3", endpoint_url=moto_server.url, region_name="us-east-1", aws_access_key_id="S3RVER",
                      aws_secret_access_key="S3RVER")
    real = src.real("media")
    s3.copy_object(Bucket=real, Key="rotten.txt", CopySource={"Bucket": real, "Key": "fine.txt"},
                   Metadata={SHA_META: hashlib.sha256(b"what it once held").hexdigest()}, MetadataDirective="REPLACE")
    for large in (False, True):
        if large:  # a multipart object whose tag no longer matches its bytes
            s3.delete_object(Bucket=real, Key="rotten.txt")
            src.write("media", "rotten.bin", io.BytesIO(big))
            s3.put_object_tagging(Bucket=real, Key="rotten.bin", Tagging={"TagSet": [
                {"Key": SHA_META, "Value": hashlib.sha256(b"other bytes").hexdigest()}]})
        for target in targets:
            with pytest.raises(VerificationFailed):
                copy_objects(src, target, ["media"], parallel=1)
            assert {o.key for o in target.list("media")} == {"fine.txt", "big.bin"}
    conn.close()
    shutil.rmtree(roots, ignore_errors=True)


@pytest.mark.parametrize("server", ["moto_server", "s3rver"])
def test_a_read_cut_short_goes_on_from_where_it_stopped(server, request, tmp_path, monkeypatch):
    """A GET whose response breaks off (a dropped connection; LocalStack does it now and then) is asked
    again from the byte where it stopped, pinned to the object's ETag: every byte arrives once, in order;
    an object replaced in between fails the read (objects.changed); a response that keeps breaking off
    without progress gives up after RESUMES tries (aws.s3). A copy through such a connection completes."""
    import hashlib
    import io

    import boto3

    from toolkit.errors import ProviderError
    from toolkit.stores.copier import copy_objects
    from toolkit.stores.dirstore import DirectoryStore
    from toolkit.stores.s3 import _ResumingBody

    from .faultproxy import CuttingProxy

    served = request.getfixturevalue(server)
    host, port = served.url.removeprefix("http://").rsplit(":", 1)
    proxy = CuttingProxy((host, int(port)))
    request.addfinalizer(proxy.close)
    monkeypatch.setattr(_ResumingBody, "PAUSE", 0.01)
    store = provider_on(tmp_path, proxy.url, monkeypatch).objects()
    store.create_bucket("cut-short")  # a bucket of its own: the servers live for the whole session
    data = hashlib.sha256(b"seed").digest() * (10 << 15)  # 10 MiB, no repeating 1 MiB blocks
    small = bytes(range(256)) * 4096  # 1 MiB: a single-part object
    store.write("cut-short", "cut/big.bin", io.BytesIO(data))
    store.write("cut-short", "cut/small.bin", io.BytesIO(small))

    def read_all(key: str) -> tuple[bytes, int]:
        with store.open_read("cut-short", key) as stream:
            out = b"".join(iter(lambda: stream.read(1 << 20), b""))
            return out, stream.resumed

    for key, body, cuts in (("cut/big.bin", data, 1), ("cut/big.bin", data, 3), ("cut/small.bin", small, 1)):
        before = proxy.cuts
        proxy.cut_after(len(body) // (cuts + 1), times=cuts)
        got, resumed = read_all(key)
        assert proxy.cuts - before == cuts and resumed == cuts, (key, cuts, resumed)
        assert len(got) == len(body) and hashlib.sha256(got).digest() == hashlib.sha256(body).digest(), (key, cuts)
    # a copy through a connection that breaks off completes and checks out
    proxy.cut_after(3 << 20, times=2)
    target = DirectoryStore(tmp_path / "target")
    target.create_bucket("cut-short")
    assert copy_objects(store, target, ["cut-short"])["copied"] == 2
    assert target.checksum("cut-short", "cut/big.bin") == hashlib.sha256(data).hexdigest()
    proxy.disarm()

    # replaced between the break and the new request: the read fails, nothing of two versions mixed
    direct = boto3.client("s3", endpoint_url=served.url, region_name="us-east-1", aws_access_key_id="S3RVER",
                          aws_secret_access_key="S3RVER")
    # (shorter now, or as long but other bytes)
    for replacement in (b"a new version", bytes(reversed(data))):
        proxy.cut_after(4 << 20)
        with store.open_read("cut-short", "cut/big.bin") as stream:
            first = stream.read(1 << 20)
            direct.put_object(Bucket="cut-short", Key="cut/big.bin", Body=replacement)
            with pytest.raises(ProviderError) as info:
                while stream.read(1 << 20):
                    pass
        assert info.value.code == "objects.changed" and "cut/big.bin" in info.value.message, info.value
        assert first == data[: 1 << 20]
        store.write("cut-short", "cut/big.bin", io.BytesIO(data))

    # breaking off again and again without a byte of progress (each new request cut within its headers):
    # gives up, naming the object and where
    proxy.cut_after(256 << 10, times=1000, then=20)
    with store.open_read("cut-short", "cut/small.bin") as stream:
        with pytest.raises(ProviderError) as info:
            while stream.read(1 << 20):
                pass
    proxy.disarm()
    assert info.value.code == "aws.s3" and "cut/small.bin" in info.value.message, info.value
    assert f"{_ResumingBody.RESUMES + 1} times" in info.value.message, info.value


@pytest.mark.parametrize("server", ["moto_server", "s3rver"])
def test_object_bodies_are_not_hashed_twice_on_loopback(server, request, tmp_path, monkeypatch):
    """A write to a plain-http endpoint on loopback sends UNSIGNED-PAYLOAD with the body's SHA-256 in the
    signed checksum header (single part and each part of a multipart upload), the server takes it, and it
    reads back whole; other requests keep signed payloads. Across a network (any address not loopback)
    every payload is signed: checked without sending, by stopping the request before it leaves."""
    import hashlib
    import io

    served = request.getfixturevalue(server)
    store = provider_on(tmp_path, served.url, monkeypatch).objects()
    store.create_bucket("unsigned")
    store._plain_puts = False  # put_object here (a plain PUT is unsigned-payload by construction)
    sent: list[tuple[str, bytes, bool]] = []
    store.s3.meta.events.register("before-send.s3", lambda request, **_: sent.append((
        request.url.split("?")[-1] if "?" in request.url else "", request.headers.get("X-Amz-Content-SHA256"),
        "x-amz-checksum-sha256" in request.headers)))
    big = hashlib.sha256(b"parts").digest() * ((9 << 20) // 32)  # 9 MiB: two parts
    store.write("unsigned", "one.bin", io.BytesIO(b"small body"))
    store.write("unsigned", "two.bin", io.BytesIO(big))
    writes = [(query, payload) for query, payload, checksummed in sent if checksummed]
    assert len(writes) == 3 and all(payload == b"UNSIGNED-PAYLOAD" for _, payload in writes), sent
    others = [payload for query, payload, checksummed in sent if not checksummed and payload]
    assert others and all(len(p) == 64 and p != b"UNSIGNED-PAYLOAD" for p in others), sent  # e.g. the tagging
    for key, body in (("one.bin", b"small body"), ("two.bin", big)):
        with store.open_read("unsigned", key) as stream:
            assert stream.read() == body

    class Stopped(Exception):
        pass

    def stop(request, **_):
        raise Stopped(request.headers.get("X-Amz-Content-SHA256"))

    import base64

    import boto3

    from toolkit.stores.s3 import client_config, unsigned_payload_when_checksummed, unsigned_payloads_fit

    # (the same rule decides where a single-part write may go as a presigned PUT: S3Store._plain_put)
    for endpoint, fits in (("https://s3.example.com", True), ("http://127.0.0.1:9000", True),
                           ("http://localhost:9000", True), ("http://[::1]:9000", True),
                           ("http://192.0.2.10:9000", False), ("http://minio.lan:9000", False), (None, False)):
        assert unsigned_payloads_fit(endpoint) is fits, endpoint

    sha = base64.b64encode(hashlib.sha256(b"small body").digest()).decode()
    for endpoint, signed in (("http://192.0.2.10:9000", True), (served.url, False)):
        s3 = unsigned_payload_when_checksummed(boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="S3RVER",
            aws_secret_access_key="S3RVER", config=client_config("path")))
        s3.meta.events.register("before-send.s3", stop)
        with pytest.raises(Stopped) as stopped:
            s3.put_object(Bucket="unsigned", Key="never.bin", Body=b"small body", ChecksumSHA256=sha)
        payload = stopped.value.args[0]
        assert (payload == hashlib.sha256(b"small body").hexdigest().encode()) is signed, (endpoint, payload)


@pytest.mark.parametrize("server", ["moto_server", "s3rver"])
def test_listings_read_timestamps_without_dateutil(server, request, tmp_path, monkeypatch):
    """Clients Lifeboat makes read the servers' timestamps with the standard library (botocore's dateutil
    parser cost 40 ms per 1,000-object listing page), to the same instants as botocore's own parser."""
    import datetime
    import io

    from botocore.utils import parse_timestamp as botocore_parse

    from providers.aws.api import AwsApi
    from toolkit.stores.s3 import parse_timestamp

    served = request.getfixturevalue(server)
    store = provider_on(tmp_path, served.url, monkeypatch).objects()
    store.create_bucket("stamped")
    store.write("stamped", "a.bin", io.BytesIO(b"stamped"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "S3RVER")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "S3RVER")
    aws = AwsApi({"endpoint_url": served.url, "region": "us-east-1"}, "test").client("s3")
    for s3 in (store.s3, aws):
        [listed] = s3.list_objects_v2(Bucket=store.real("stamped"))["Contents"]
        head = s3.head_object(Bucket=store.real("stamped"), Key="a.bin")
        for stamp in (listed["LastModified"], head["LastModified"]):
            assert stamp.tzinfo is datetime.UTC  # (dateutil's would be tzutc())
            assert abs(stamp - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(minutes=5)
    for text in ("2026-11-26T18:00:00.000Z", "2026-11-26T18:00:00.123456+02:00", "Thu, 26 Nov 2026 18:00:00 GMT",
                 1700000000, "1700000000", "2026-11-26T18:00:00", "2026-11-26T18:00:00.123456789Z", "garbage"):
        try:
            expected = botocore_parse(text)
        except ValueError:
            with pytest.raises(ValueError):
                parse_timestamp(text)
            continue
        assert parse_timestamp(text) == expected, text


@pytest.mark.parametrize("server", ["moto_server", "s3rver"])
def test_plain_gets_and_puts_go_around_botocore_and_fall_back_to_it(server, request, tmp_path, monkeypatch):
    """The first GET of an object and a single-part PUT are presigned URLs sent on the client's own
    connection pool (no botocore call): what they write and read is what get_object and put_object would
    (bytes, length, content type, the recorded SHA-256: metadata, or a multipart object's tag). (That the
    server checks a plain PUT's body against its signed SHA-256 header: test_aws_localstack, since neither
    moto nor s3rver checks that header on any PUT.) A missing object still fails as
    objects.missing, through get_object. A server that refuses the URLs (here: s3rver, which checks the
    access key id, handed a wrong one) is asked through botocore, which names the refusal, and the store
    asks that way from then on."""
    import hashlib
    import io

    from toolkit.errors import ProviderError

    served = request.getfixturevalue(server)
    store = provider_on(tmp_path, served.url, monkeypatch).objects()
    store.create_bucket("plain-gets")
    big = hashlib.sha256(b"plain").digest() * ((9 << 20) // 32)  # multipart: its SHA-256 is a tag
    bodies = {"one.bin": b"one body", "empty": b"", "dir/with space \u00e9.bin": b"x" * 70000, "big.bin": big}
    calls: list[str] = []
    for operation in ("GetObject", "PutObject"):
        store.s3.meta.events.register(f"before-call.s3.{operation}", lambda event_name, **_: calls.append(
            event_name.rsplit(".", 1)[1]))
    for plain in (False, True):
        store._plain_puts = plain
        for key, body in bodies.items():
            store.write("plain-gets", f"{plain}/{key}", io.BytesIO(body), content_type="text/x-lifeboat")
        assert store._plain_puts is plain
    assert calls == ["PutObject"] * 3, calls  # (the big one is a multipart upload either way)

    def read(key: str) -> tuple:
        with store.open_read("plain-gets", key) as stream:
            return stream.read(), stream.size, stream.etag, stream.recorded_sha256

    store._plain_gets = False
    through_botocore = {key: read(f"False/{key}") for key in bodies}
    store._plain_gets = True
    calls.clear()
    for key, body in bodies.items():
        for written in ("False", "True"):
            got = read(f"{written}/{key}")
            assert got == through_botocore[key] and got[:2] == (body, len(body)), (written, key)
            if server == "moto_server":  # (s3rver keeps no tags: its multipart objects are hashed where they land)
                assert got[3] == hashlib.sha256(body).hexdigest(), key
            head = store.s3.head_object(Bucket=store.real("plain-gets"), Key=f"{written}/{key}")
            assert head["ContentType"] == "text/x-lifeboat", (written, key, head)
    assert calls == [] and store._plain_gets, calls
    with pytest.raises(ProviderError) as info:
        with store.open_read("plain-gets", "never-written"):
            pass
    assert info.value.code == "objects.missing" and calls == ["GetObject"] and store._plain_gets, info.value

    if server == "s3rver":
        monkeypatch.setenv("S3C_KEY", "nobody")
        from providers.s3 import S3CompatibleApi
        from toolkit.stores.s3 import S3Store

        refused = S3Store(S3CompatibleApi({"endpoint_url": served.url, "access_key_env": "S3C_KEY",
                                           "secret_key_env": "S3C_SECRET"}, "refused"), store.names)
        for operation in ("GetObject", "PutObject"):
            refused.s3.meta.events.register(f"before-call.s3.{operation}", lambda event_name, **_: calls.append(
                "refused " + event_name.rsplit(".", 1)[1]))
        with pytest.raises(ProviderError) as info:
            with refused.open_read("plain-gets", "True/one.bin"):
                pass
        assert calls[-1] == "refused GetObject" and not refused._plain_gets, calls
        assert info.value.code == "aws.s3" and "InvalidAccessKeyId" in info.value.message, info.value
        with pytest.raises(ProviderError) as info:
            refused.write("plain-gets", "refused.bin", io.BytesIO(b"refused"))
        assert calls[-1] == "refused PutObject" and not refused._plain_puts, calls
        assert info.value.code == "aws.s3" and "InvalidAccessKeyId" in info.value.message, info.value
