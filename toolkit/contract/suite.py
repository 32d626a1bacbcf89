"""The provider contract suite, written once and shipped with Lifeboat so that a third-party provider runs
it too (pytest needed, which Lifeboat itself does not import). A provider passes it by subclassing
``ProviderContract`` (or ``ObjectStoreContract`` / ``DnsContract`` for a store-only or DNS-only provider)
and giving a ``provider`` fixture: a provider instance with the stack deployed (database running, bucket
``media`` present), as Libcloud's integration suite does per backend::

    from toolkit.contract.suite import DnsContract

    class TestMyDns(DnsContract):
        @pytest.fixture
        def provider(self):
            return MyDnsProvider(stack, stack.targets["mine"])
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import tracemalloc

import pytest

from toolkit.contract import (
    CacheService,
    ComputeService,
    DatabaseService,
    DnsService,
    ObjectStore,
    Provider,
    Record,
    SecretStore,
    SecretValue,
    Unsupported,
)
from toolkit.errors import LockHeld, ToolkitError

AWKWARD_KEYS = ["plain.txt", "dir/sub/file.bin", "café ☕.jpg", "with space.png", "../escape", ".hidden",
                "a//double", "percent%2Fslash", "~tilde", "new\nline", "k" * 400, "emoji 🐦/日本語.txt"]


class ChunkStream:
    """Yields ``size`` deterministic bytes in chunks without holding them."""

    def __init__(self, size: int, seed: int = 7):
        self.left = size
        self.block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB pattern
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n is None or n < 0 else min(n, self.left)
        out = (self.block * (n // len(self.block) + 1))[:n]
        self.left -= n
        self.sha.update(out)
        return out


class DnsContract:
    """The DNS part of the contract, on its own for DNS-only providers."""

    zone = "lifeboat.test"

    def test_dns_records_with_ttl(self, provider):
        if "dns" not in provider.SERVICES:  # then asking for it must say so, not half-work
            with pytest.raises(Unsupported):
                provider.dns()
            return
        dns = provider.dns()
        dns.upsert(self.zone, Record("contract", "A", 60, ("192.0.2.10", "192.0.2.11")))
        dns.upsert(self.zone, Record("contract", "TXT", 120, ('"hello world"',)))
        found = {(r.name, r.type): r for r in dns.records(self.zone)}
        assert found[("contract", "A")] == Record("contract", "A", 60, ("192.0.2.10", "192.0.2.11"))
        assert found[("contract", "TXT")].ttl == 120
        dns.upsert(self.zone, Record("contract", "A", 30, ("192.0.2.12",)))
        found = {(r.name, r.type): r for r in dns.records(self.zone)}
        assert found[("contract", "A")] == Record("contract", "A", 30, ("192.0.2.12",))
        dns.delete(self.zone, "contract", "A")
        dns.delete(self.zone, "contract", "A")
        dns.delete(self.zone, "contract", "TXT")
        assert not [r for r in dns.records(self.zone) if r.name == "contract"]

    def test_dns_change_is_confirmed(self, provider):
        if "dns" not in provider.SERVICES:
            return
        dns = provider.dns()
        record = Record("confirmed", "A", 45, ("192.0.2.20",))
        dns.upsert(self.zone, record)
        try:
            assert dns.confirm(self.zone, record, timeout=30)
            with pytest.raises(ToolkitError, match="192.0.2.99"):
                dns.confirm(self.zone, Record("confirmed", "A", 45, ("192.0.2.99",)), timeout=1)
        finally:
            dns.delete(self.zone, "confirmed", "A")


class ObjectStoreContract:
    """The object-store part of the contract, on its own for object-store-only providers."""

    bucket = "media"
    #: keys the awkward-keys test writes; a backend narrows it only for a limit of an emulator, named there
    awkward_keys = AWKWARD_KEYS
    large_size = 12 << 20

    def test_declares_services(self, provider):
        assert provider.TYPE and provider.DESCRIPTION
        assert provider.SERVICES <= {"compute", "database", "cache", "objects", "dns", "secrets"}
        kinds = {"compute": ComputeService, "database": DatabaseService, "cache": CacheService,
                 "objects": ObjectStore, "dns": DnsService, "secrets": SecretStore}
        accessor = {"objects": "objects"}
        for service in provider.SERVICES:
            obj = getattr(provider, accessor.get(service, service))()
            assert isinstance(obj, kinds[service])

    def test_observe_is_stable(self, provider):
        assert provider.observe() == provider.observe()

    # ------------------------------------------------------------------ objects
    @pytest.mark.parametrize("size", [0, 1, 4096, 5 << 20])
    def test_object_roundtrip_keeps_size_and_checksum(self, provider, size):
        store = provider.objects()
        data = os.urandom(size)
        info = store.write(self.bucket, f"sizes/{size}", io.BytesIO(data), size=size)
        want = hashlib.sha256(data).hexdigest()
        assert (info.size, info.sha256) == (size, want)
        head = store.head(self.bucket, f"sizes/{size}")
        assert (head.size, head.sha256) == (size, want)
        assert store.checksum(self.bucket, f"sizes/{size}") == want
        with store.open_read(self.bucket, f"sizes/{size}") as stream:
            assert stream.read() == data

    def test_large_object_streams_without_holding_it(self, provider):
        store = provider.objects()
        source = ChunkStream(self.large_size)
        tracemalloc.start()
        try:
            info = store.write(self.bucket, "large/object.bin", source)
            with store.open_read(self.bucket, "large/object.bin") as stream:
                sha = hashlib.sha256()
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    sha.update(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert info.size == self.large_size
        assert info.sha256 == source.sha.hexdigest() == sha.hexdigest()
        assert peak < self.large_size / 2, f"peak Python allocation {peak} bytes for a {self.large_size} byte object"

    def test_awkward_keys_roundtrip_and_list(self, provider):
        store = provider.objects()
        for index, key in enumerate(self.awkward_keys):
            store.write(self.bucket, "awk/" + key, io.BytesIO(f"body {index}".encode()))
        listed = {o.key: o for o in store.list(self.bucket, prefix="awk/")}
        assert sorted(listed) == sorted("awk/" + k for k in self.awkward_keys)
        for index, key in enumerate(self.awkward_keys):
            with store.open_read(self.bucket, "awk/" + key) as stream:
                assert stream.read() == f"body {index}".encode()
            # a listing that carries no digest (S3) leaves it to checksum()
            assert (listed["awk/" + key].sha256 or store.checksum(self.bucket, "awk/" + key)) == \
                hashlib.sha256(f"body {index}".encode()).hexdigest()

    def test_list_is_sorted_and_filtered_by_prefix(self, provider):
        store = provider.objects()
        for key in ("p/b", "p/a", "q/a", "p/c/d"):
            store.write(self.bucket, key, io.BytesIO(key.encode()))
        assert [o.key for o in store.list(self.bucket, prefix="p/")] == ["p/a", "p/b", "p/c/d"]

    def test_overwrite_replaces_and_delete_is_idempotent(self, provider):
        store = provider.objects()
        store.write(self.bucket, "ow", io.BytesIO(b"one"))
        store.write(self.bucket, "ow", io.BytesIO(b"second"))
        assert store.head(self.bucket, "ow").size == 6
        store.delete(self.bucket, "ow")
        store.delete(self.bucket, "ow")
        assert store.head(self.bucket, "ow") is None
        assert "ow" not in [o.key for o in store.list(self.bucket)]

    def test_short_stream_stores_nothing(self, provider):
        store = provider.objects()
        with pytest.raises(ToolkitError):
            store.write(self.bucket, "short", io.BytesIO(b"abc"), size=10)
        assert store.head(self.bucket, "short") is None

    def test_missing_object(self, provider):
        store = provider.objects()
        assert store.head(self.bucket, "no/such/key") is None
        with pytest.raises(ToolkitError):
            with store.open_read(self.bucket, "no/such/key"):
                pass



class ProviderContract(DnsContract, ObjectStoreContract):
    zone = "lifeboat.test"

    @pytest.fixture
    def provider(self) -> Provider:  # pragma: no cover - each backend overrides
        raise NotImplementedError

    # ------------------------------------------------------------------ secrets
    def test_secrets_roundtrip(self, provider):
        store = provider.secrets()
        assert store.read("CONTRACT_NOPE") is None
        store.write("CONTRACT_S", SecretValue("v1 with spaces & ünïcode"))
        store.write("CONTRACT_S", SecretValue("v2"))
        assert store.read("CONTRACT_S") == SecretValue("v2")
        assert "CONTRACT_S" in store.names()
        store.delete("CONTRACT_S")
        store.delete("CONTRACT_S")
        assert store.read("CONTRACT_S") is None and "CONTRACT_S" not in store.names()

    # ------------------------------------------------------------------ database
    def test_database_dump_restore_keeps_every_row(self, provider):
        import psycopg

        db = provider.database()
        url = db.connection_url().reveal_text()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS contract_t")
            conn.execute("CREATE TABLE contract_t (id serial PRIMARY KEY, t text, j jsonb, b bytea)")
            with conn.cursor() as cur, cur.copy("COPY contract_t (t, j, b) FROM STDIN") as copy:
                for i in range(3000):
                    copy.write_row((f"row {i} ünï 🐦 'q' \\N\t", f'{{"i": {i}, "s": "ü"}}', bytes([i % 256, 0, 255])))
        before = db.table_digests()
        assert before["contract_t"].rows == 3000
        with tempfile.TemporaryFile() as spool:
            with db.dump() as stream:
                for chunk in iter(lambda: stream.read(1 << 16), b""):
                    spool.write(chunk)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("DELETE FROM contract_t WHERE id % 2 = 0")
            assert db.table_digests()["contract_t"] != before["contract_t"]
            spool.seek(0)
            db.restore(spool)
        assert db.table_digests() == before
        info = db.info()
        assert info.version == provider.stack.postgres.version
        assert set(provider.stack.postgres.extensions) <= set(info.extensions)

    def test_digest_sees_a_changed_value(self, provider):
        """Both row hashes (toolkit.stores.digests: r1 by column type, text of the whole row) see a change in any
        kind of column, including values equal but written differently, and not the row order."""
        import psycopg

        from toolkit.stores.digests import method_of

        db = provider.database()
        url = db.connection_url().reveal_text()
        changes = [
            "UPDATE contract_d SET v = 'W50' WHERE id = 50",  # text, bytewise
            "UPDATE contract_d SET \"odd \"\"name\"\"\" = 'v51 ' WHERE id = 51",
            "UPDATE contract_d SET n = 1.00 WHERE id = 52",  # numeric 1.0 -> 1.00: equal, written differently
            "UPDATE contract_d SET j = '{\"a\": 1.00}' WHERE id = 53",
            "UPDATE contract_d SET ts = ts + interval '1 microsecond' WHERE id = 54",
            "UPDATE contract_d SET b = '\\x00' WHERE id = 55",
            "UPDATE contract_d SET arr = '{1,2}' WHERE id = 56",
            "UPDATE contract_d SET f = '-0' WHERE id = 57",  # float 0 -> -0
            "UPDATE contract_d SET v = NULL WHERE id = 58",
        ]
        columns = ("id int, v text, \"odd \"\"name\"\"\" varchar, n numeric, j jsonb, ts timestamptz, "
                   "b bytea, arr int[], f float8")
        fill = ("SELECT g, 'v' || g, 'v' || g, 1.0, '{\"a\": 1.0}', '2026-01-01 12:00+00'::timestamptz + g * "
                "interval '1 day', '\\x0001', '{1}', 0.0 FROM generate_series(1, 100) g")
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                for name in ("contract_d", "contract_r"):
                    conn.execute(f"DROP TABLE IF EXISTS {name}")
                    conn.execute(f"CREATE TABLE {name} ({columns})")
                conn.execute(f"INSERT INTO contract_d {fill}")
                conn.execute(f"INSERT INTO contract_r {fill} ORDER BY 1 DESC")  # same rows, other order
                conn.execute("DROP TABLE IF EXISTS contract_z")
                conn.execute("CREATE TABLE contract_z ()")
                conn.execute("INSERT INTO contract_z DEFAULT VALUES")
                for method in ("auto", "text"):
                    first = db.table_digests(method)
                    assert first["contract_d"].digest == first["contract_r"].digest
                    assert first["contract_d"].rows == 100 and first["contract_z"].rows == 1
                    assert method_of(first) == ("r1" if db.info().version >= 14 and method == "auto" else "text")
                methods = ("r1", "text") if db.info().version >= 14 else ("text",)
                seen = {method: {db.table_digests(method)["contract_d"].digest} for method in methods}
                for change in changes:
                    conn.execute(change)
                    for method in methods:
                        got = db.table_digests(method)["contract_d"]
                        assert got.rows == 100
                        assert got.digest not in seen[method], (method, change)
                        seen[method].add(got.digest)
        finally:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("DROP TABLE IF EXISTS contract_d, contract_r, contract_z")

    # ------------------------------------------------------------------ compute and lock
    def test_compute_reports_instances(self, provider):
        compute = provider.compute()
        assert compute.hosts()
        instances = compute.instances()
        assert {i.service for i in instances} == set(provider.stack.services)
        assert all(i.state == "running" and i.healthy for i in instances)
        assert compute.addresses("web")

    def test_pause_stops_services_and_resume_restarts_them(self, provider):
        compute = provider.compute()
        names = sorted(provider.stack.services)
        compute.pause(names)
        assert not [i for i in compute.instances() if i.state == "running"]
        compute.resume(names)
        instances = compute.instances()
        assert instances and all(i.state == "running" and i.healthy for i in instances)

    def test_lock_is_exclusive(self, provider):
        with provider.lock("first@test"):
            with pytest.raises(LockHeld) as info:
                with provider.lock("second@test"):
                    pass
        assert "first@test" in info.value.message
        with provider.lock("third@test"):
            pass
