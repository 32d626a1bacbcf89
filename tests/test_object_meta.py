"""The directory store's meta cache (docs/object-layout.md, toolkit/stores/objmeta.py): kept in each data file's
extended attribute (no second file per object), a file of its own under .meta/ where the attribute is
refused; trusted only while size and mtime match; recomputed where the data lives when an app rewrites or
replaces a file. Checked on a local DirectoryStore and on a real SSH host (the batch writer and the
host-side lister), with files written behind Lifeboat's back, a file system that takes no attributes
(ramfs), a hashed name, and a cache left by an earlier version (a .meta file with seconds only)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from contextlib import contextmanager
from pathlib import Path

import pytest

from toolkit.stores.dirstore import DirectoryStore
from toolkit.stores.layout import NESTED, Bucket
from toolkit.stores.objmeta import META_XATTR

LONG = "k" * 400  # stored under a hashed name: the key lives only in the cache


def attr(path: Path) -> dict | None:
    try:
        return json.loads(os.getxattr(path, META_XATTR))
    except OSError:
        return None


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def data_file(root, key: str) -> Path:
    """Where the layout keeps ``key``'s file in the bucket media (toolkit/stores/layout.py)."""
    return Path(Bucket(str(root), "media", NESTED).find(key)[0])


def meta_file(root, key: str) -> Path:
    return Path(Bucket(str(root), "media", NESTED).find(key)[1])


def write_all(store, bodies: dict[str, bytes]) -> None:
    if hasattr(store, "write_batch"):  # an SSH host: the batch writer
        @contextmanager
        def opener(key):
            yield io.BytesIO(bodies[key])

        store.write_batch("media", [(k, (lambda k=k: opener(k)), len(v), None) for k, v in bodies.items()])
    else:
        for key, body in bodies.items():
            store.write("media", key, io.BytesIO(body))


def listed(store) -> dict[str, str]:
    return {info.key: info.sha256 for info in store.list("media")}


def test_the_cache_rides_in_the_file_and_is_recomputed_when_the_file_changes(dir_store):
    store, root = dir_store
    store.create_bucket("media")
    bodies = {"a.txt": b"first version", "b.bin": bytes(range(256)) * 10, LONG: b"long key", "empty": b""}
    write_all(store, bodies)
    files, metas = root / "media", root / ".meta" / "media"
    assert sorted(os.listdir(metas)) == []  # no second file per object
    for key, body in bodies.items():
        cached = attr(data_file(root, key))
        assert cached and cached["key"] == key and cached["sha256"] == sha(body), key
    assert listed(store) == {k: sha(v) for k, v in bodies.items()}

    # the app rewrites a file in place (same size, other bytes) and replaces another (a new inode)
    with open(files / "a.txt", "r+b") as handle:
        handle.write(b"FIRST")
    os.utime(files / "a.txt", ns=(1, 10**18))  # a different mtime even on a coarse clock
    replaced = files / "b.new"
    replaced.write_bytes(b"replaced by the app")
    os.replace(replaced, files / "b.bin")
    expected = dict(listed(store))
    assert expected["a.txt"] == sha(b"FIRST version") and expected["b.bin"] == sha(b"replaced by the app")
    assert attr(files / "b.bin")["sha256"] == sha(b"replaced by the app")  # cached again, in the attribute
    assert attr(files / "a.txt")["sha256"] == sha(b"FIRST version")
    assert store.head("media", LONG).sha256 == sha(b"long key")
    assert sorted(os.listdir(metas)) == []

    # a cache an earlier version left in a file of its own (mtime to the second) is still used: a wrong
    # digest in it comes back, which shows it was read and not recomputed
    os.removexattr(files / "empty", META_XATTR)
    st = os.stat(files / "empty")
    (metas / "empty").write_text(json.dumps({"key": "empty", "size": 0, "mtime_s": int(st.st_mtime),
                                             "sha256": "0" * 64}))
    assert listed(store)["empty"] == "0" * 64
    # ... and the attribute, when there is one that matches, comes first
    os.setxattr(files / "empty", META_XATTR, json.dumps({"key": "empty", "size": 0, "mtime_ns": st.st_mtime_ns,
                                                        "sha256": sha(b"")}).encode())
    assert listed(store)["empty"] == sha(b"")


@pytest.fixture
def no_attributes(tmp_path):
    """A folder on a file system that takes no extended attributes (ramfs: EOPNOTSUPP)."""
    import subprocess

    folder = tmp_path / "ramfs"
    folder.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "-o", "mode=0755", "lifeboat-test", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_where_the_file_system_takes_no_attributes_the_cache_is_a_file_of_its_own(dir_store, no_attributes):
    store, root = dir_store
    # the same store type, rooted on ramfs
    store = DirectoryStore(no_attributes / "objects") if isinstance(store, DirectoryStore) else \
        type(store)(store.conn, str(no_attributes / "objects"))
    root = no_attributes / "objects"
    store.create_bucket("media")
    bodies = {"a.txt": b"on ramfs", LONG: b"a hashed name on ramfs"}
    write_all(store, bodies)
    files, metas = root / "media", root / ".meta" / "media"
    assert sorted(p for p in metas.rglob("*") if p.is_file()) == [metas / "a.txt"]
    for key, body in bodies.items():
        assert attr(data_file(root, key)) is None
        cached = json.loads(meta_file(root, key).read_text())
        assert cached["key"] == key and cached["sha256"] == sha(body)
    assert listed(store) == {k: sha(v) for k, v in bodies.items()}
    # the next listing uses it (a wrong digest planted in it comes back); a rewrite makes it stale
    cached = json.loads((metas / "a.txt").read_text())
    (metas / "a.txt").write_text(json.dumps({**cached, "sha256": "1" * 64}))
    assert listed(store)["a.txt"] == "1" * 64
    (files / "a.txt").write_bytes(b"rewritten")
    os.utime(files / "a.txt", ns=(1, 10**18))
    assert listed(store)["a.txt"] == sha(b"rewritten")
    assert json.loads((metas / "a.txt").read_text())["sha256"] == sha(b"rewritten")
    if hasattr(store, "release"):
        store.release()


def test_a_missing_bucket_is_named_and_nothing_is_made(dir_store):
    """Writing (one by one or a batch through the host's writer) or listing a bucket that does not exist is
    objects.no_bucket, naming it, and leaves no folder behind."""
    from toolkit.errors import ProviderError

    store, root = dir_store
    for attempt in (lambda: write_all(store, {"a.txt": b"x"}), lambda: listed(store),
                    lambda: store.head("media", "a.txt")):
        with pytest.raises(ProviderError) as info:
            attempt()
        assert info.value.code == "objects.no_bucket" and "media" in info.value.message, info.value
    assert not root.exists() or not any(root.rglob("*")), list(root.rglob("*"))
    if hasattr(store, "release"):
        store.release()


def test_many_objects_read_through_one_stream(dir_store, tmp_path):
    """open_many: every object's exact bytes, in order (an SSH host streams them all from one reader on the
    host); a missing one fails when it is reached; leaving early is clean. A copy from an SSH host reads
    its small objects that way, never one stream per object."""
    from toolkit.errors import ProviderError
    from toolkit.stores.copier import copy_objects

    store, root = dir_store
    store.create_bucket("media")
    bodies = {"empty": b"", "small.txt": b"small", LONG: b"hashed name", "large.bin": bytes(range(256)) * 4096,
              "café ☕.jpg": "☕".encode() * 3000}
    write_all(store, bodies)
    keys = sorted(bodies)
    with store.open_many("media", keys) as many:
        got = [(key, stream.read()) for key, stream in many]
    assert got == [(k, bodies[k]) for k in keys]
    with store.open_many("media", keys) as many:  # read in small pieces, and only the first two
        first = next(many)
        assert b"".join(iter(lambda: first[1].read(7), b"")) == bodies[first[0]]
        assert next(many)[0] == keys[1]
    with pytest.raises(ProviderError) as info:
        with store.open_many("media", ["small.txt", "not-there", "empty"]) as many:
            assert next(many)[1].read() == b"small"
            next(many)
    assert info.value.code in ("objects.not_found", "objects.missing") and "not-there" in info.value.message

    if store.READS_IN_BATCHES:
        def refuse(*a, **k):
            raise AssertionError("a small object opened on its own")

        store.open_read = refuse
        target = DirectoryStore(tmp_path / "copy")
        target.create_bucket("media")
        assert copy_objects(store, target, ["media"])["copied"] == len(bodies)
        assert {i.key: i.sha256 for i in target.list("media")} == {k: sha(v) for k, v in bodies.items()}
        store.release()
