"""The bare-metal provider passes the shared contract suite on three real OpenSSH hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.config import stackfile
from toolkit.contract.suite import ProviderContract
from toolkit.run.engine import Engine

from .conftest import baremetal_target, make_host_roots, tiny_app

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

    def test_one_writer_serves_batch_after_batch(self, provider):
        """Batch after batch goes to one writer on the host (one connection and login for all); after a batch
        that fails part-way its writer is not used again (what landed of it is whole and verified, the rest
        is not there); a writer whose connection died between batches is replaced; release() ends the
        writers, each exiting 0, and so does dropping the store."""
        import hashlib
        import io
        from contextlib import contextmanager, nullcontext

        store = provider.objects()
        body = {}

        def batch(name: str, count: int, broken_at: int | None = None) -> list:
            @contextmanager
            def opener(key):
                if key.endswith(f"/{broken_at}"):
                    raise OSError("the source broke off")
                yield io.BytesIO(body[key])

            keys = [f"serve/{name}/{i}" for i in range(count)]
            body.update((k, f"{k} ☕ ".encode() * (7 + len(body))) for k in keys)
            return [(k, (lambda k=k: opener(k)), len(body[k]), None) for k in keys]

        store.write_batch("media", batch("a", 3))
        [writer] = store._writers["media"]
        store.write_batch("media", batch("b", 40))
        assert store._writers["media"] == [writer] and writer.alive
        with pytest.raises(OSError):
            store.write_batch("media", batch("c", 4, broken_at=2))
        assert store._writers["media"] == [] and not writer.alive
        store.write_batch("media", batch("d", 2))
        [second] = store._writers["media"]
        assert second is not writer
        second.proc.kill()  # its connection dies between batches
        second.proc.wait()
        store.write_batch("media", batch("e", 2))
        [third] = store._writers["media"]
        assert third is not second
        store.release()
        assert third.proc.returncode == 0 and store._writers == {}
        other = type(store)(store.conn, store.root)  # a store dropped without release() ends its writers too
        other.write_batch("media", batch("f", 2))
        [fourth] = other._writers["media"]
        del other
        import gc

        gc.collect()
        assert fourth.proc.returncode == 0
        # release() ends every writer even when one does not end well (killed here), then raises that one;
        # copy_objects' releasing() lets an error that stopped the work win over a failed release
        from toolkit.errors import ToolkitError, VerificationFailed
        from toolkit.stores.copier import releasing

        store.create_bucket("spare")
        for stopped in (None, VerificationFailed("what stopped the copy")):
            store.write_batch("media", batch(f"g{stopped is None}", 2))
            body.update({k.replace("serve/", "spare/"): v for k, v in body.items() if k.startswith("serve/g")})
            store.write_batch("spare", [(k, (lambda k=k: nullcontext(io.BytesIO(body[k]))), len(body[k]), None)
                                        for k in body if k.startswith("spare/")])
            [dead], [kept] = store._writers["media"], store._writers["spare"]
            dead.proc.kill()
            dead.proc.wait()
            with pytest.raises(ToolkitError) as info:
                with releasing(store):
                    if stopped is not None:
                        raise stopped
            assert (info.value is stopped) if stopped is not None else ("exited" in info.value.message), info.value
            assert kept.proc.returncode == 0 and store._writers == {}
            for key in [k for k in body if k.startswith("spare/")]:
                assert store.checksum("spare", key) == hashlib.sha256(body.pop(key)).hexdigest()
        held = {o.key: o for o in store.list("media", prefix="serve/")}
        for key, data in body.items():
            if key.startswith("serve/c/"):
                assert key not in held or held[key].sha256 == hashlib.sha256(data).hexdigest()
                continue
            assert held[key].size == len(data) and store.checksum("media", key) == hashlib.sha256(data).hexdigest()
        assert not any(k in held for k in ("serve/c/2", "serve/c/3"))

    def test_small_objects_in_one_batch_land_verified(self, provider):
        import hashlib
        import io
        import json
        from contextlib import contextmanager

        from toolkit.agents.batchwriter import batch_writer_program

        store = provider.objects()
        bodies = {"batch/empty": b"", "batch/café ☕ with space.txt": "☕".encode() * 999,
                  "batch/../escape": b"x" * 70000, "batch/binary": bytes(range(256)) * 40,
                  "batch/large": bytes(range(251)) * 40000}  # 10 MB: written by the thread, flushed as it comes

        @contextmanager
        def opener(key):
            yield io.BytesIO(bodies[key])

        infos = store.write_batch("media", [(k, (lambda k=k: opener(k)), len(v), None) for k, v in bodies.items()])
        assert [(i.key, i.size, i.sha256) for i in infos] == [
            (k, len(v), hashlib.sha256(v).hexdigest()) for k, v in bodies.items()]
        for key, body in bodies.items():  # read back through the normal path, and hashed on the host
            with store.open_read("media", key) as stream:
                assert stream.read() == body
            assert store.checksum("media", key) == hashlib.sha256(body).hexdigest()

        # The host half refuses to place an object whose bytes do not hash to what the client says it sent.
        answer = bytearray()
        frame = json.dumps({"key": "batch/liar", "size": 3}).encode() + b"\n"
        frame += b"abc" + json.dumps({"sha256": "0" * 64}).encode() + b"\n"
        with store.conn.write_stream(["python3", "-c", batch_writer_program(), store.root, "media", "w-test-1-x"],
                                     output=answer) as sink:
            sink.write(frame)
        assert json.loads(answer.decode())["error"] == "sha256 differs"
        assert store.head("media", "batch/liar") is None

        # With the digest the source records, a file-backed stream goes by sendfile, unhashed by the client:
        # the host still checks it, so a source whose bytes no longer match its record is refused.
        import tempfile

        from toolkit.errors import VerificationFailed

        with tempfile.NamedTemporaryFile() as held:
            held.write(b"file-backed body " * 70000)  # above SENDFILE_MIN
            held.flush()
            body = open(held.name, "rb").read()
            infos = store.write_batch("media", [("batch/sent", lambda: open(held.name, "rb"), len(body), None,
                                                 hashlib.sha256(body).hexdigest())])
            assert (infos[0].size, infos[0].sha256) == (len(body), hashlib.sha256(body).hexdigest())
            with store.open_read("media", "batch/sent") as stream:
                assert stream.read() == body
            with pytest.raises(VerificationFailed):
                store.write_batch("media", [("batch/rotten", lambda: open(held.name, "rb"), len(body), None,
                                             hashlib.sha256(b"what the source once held").hexdigest())])
            assert store.head("media", "batch/rotten") is None
        # Where the file system cannot make unnamed files (the writer's "named" mode): partial files named
        # under .tmp/, renamed into place; a new object and one replacing another both land, nothing is left.
        def frames(objects: dict) -> bytes:  # what write_batch sends, for the writer run by hand
            return b"".join(json.dumps({"key": k, "size": len(v)}).encode() + b"\n" + v
                            + json.dumps({"sha256": hashlib.sha256(v).hexdigest()}).encode() + b"\n"
                            for k, v in objects.items())

        named = {"batch/named-new": b"new " * 1000, "batch/binary": b"replaced " * 999}
        answer = bytearray()
        with store.conn.write_stream(["python3", "-c", batch_writer_program(), store.root, "media", "w-test-2-x",
                                      "named"], output=answer) as sink:
            sink.write(frames(named))
        assert [json.loads(line)["size"] for line in answer.decode().splitlines()] == [len(v) for v in named.values()]
        for key, body in named.items():
            with store.open_read("media", key) as stream:
                assert stream.read() == body
            assert store.checksum("media", key) == hashlib.sha256(body).hexdigest()
        assert not list(Path(store.root, ".tmp").iterdir())  # (the lab's hosts are this machine)
        # With few descriptors allowed (64: unnamed files are held open until placed), the first ones are
        # unnamed and the rest named: all land.
        many = {f"batch/many-{i:03d}": f"object {i} ".encode() * (i + 1) for i in range(100)}
        answer = bytearray()
        with store.conn.write_stream(["prlimit", "--nofile=64:64", "python3", "-c", batch_writer_program(),
                                      store.root, "media", "w-test-3-x"], output=answer) as sink:
            sink.write(frames(many))
        assert len(answer.decode().splitlines()) == 100 and "error" not in answer.decode()
        assert {i.key: i.sha256 for i in store.list("media", "batch/many-")} == {
            k: hashlib.sha256(v).hexdigest() for k, v in many.items()}
        assert not list(Path(store.root, ".tmp").iterdir())
        for key in [*bodies, *named, *many, "batch/liar", "batch/sent"]:
            store.delete("media", key)
