"""The directory store's layout (toolkit/stores/layout.py, docs/object-layout.md) here and on an SSH host: a key is
a path, so media an app keeps in nested folders (Django's storage, Paperclip: ``attachments/2026/12/4/x.webp``)
are objects, and objects Lifeboat writes are files where the app looks; keys that cannot be paths are kept
apart; anything that is not an object is an error naming it, never skipped; a store in the older flat layout
reads as it is and converts (resumably) to nested paths; files Lifeboat writes on a host get the store's mode
and the bucket folder's owner. Issue 23, items 1 and 2."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from toolkit.errors import ProviderError
from toolkit.stores import layout
from toolkit.stores.dirstore import DirectoryStore
from toolkit.stores.objmeta import META_XATTR

from .conftest import make_host_roots

APP_FILES = {  # what an app writes with plain file APIs, in its own default layout
    "media_attachments/files/110/234/original/photo.webp": b"webp " * 300,
    "media_attachments/files/110/234/small/photo.webp": b"small",
    "emoji/2026/12/4/blob-café ☕.png": os.urandom(70000),
    "cache/accounts/avatars/a b+c%20d.png": b"odd name",
    ".well-known/x": b"hidden folder",
    "top.txt": b"top level",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plant(root: Path, files: dict[str, bytes], bucket: str = "media") -> None:
    for key, body in files.items():
        path = root / bucket / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


def test_pathable_keys():
    for key in ["a", "a/b/c.webp", ".hidden", "a/.b", "~x", "café ☕/レポート.pdf", "new\nline", "x" * 255]:
        assert layout.pathable(key), key
    for key in ["/lead", "trail/", "a//b", "./a", "a/./b", "a/..", "..", ".", "nul\0x", "x" * 256]:
        assert not layout.pathable(key), key


def test_files_an_app_writes_in_nested_folders_are_objects(dir_store):
    store, root = dir_store
    store.create_bucket("media")
    plant(root, APP_FILES)
    listed = {info.key: info.sha256 for info in store.list("media")}
    assert listed == {k: sha(v) for k, v in APP_FILES.items()}
    assert store.stats("media") == (len(APP_FILES), sum(len(v) for v in APP_FILES.values()))
    assert [i.key for i in store.list("media", "media_attachments/files/110/234/s")] == [
        "media_attachments/files/110/234/small/photo.webp"]
    for key, body in APP_FILES.items():
        with store.open_read("media", key) as stream:
            assert stream.read() == body
        assert store.head("media", key).sha256 == sha(body)
    # and what Lifeboat writes is a file where the app looks for it
    store.write("media", "media_attachments/files/999/original/new.webp", io.BytesIO(b"from lifeboat"), size=13)
    assert (root / "media/media_attachments/files/999/original/new.webp").read_bytes() == b"from lifeboat"
    store.delete("media", "emoji/2026/12/4/blob-café ☕.png")
    assert not (root / "media/emoji/2026/12/4/blob-café ☕.png").exists()
    assert store.head("media", "emoji/2026/12/4/blob-café ☕.png") is None
    if hasattr(store, "release"):
        store.release()


def test_keys_that_cannot_be_paths_are_kept_apart(dir_store):
    """A file and a folder of one name ("a" and "a/b"), empty or dot segments, a segment over 255 bytes: each
    is an object all the same, under .keys/, never in the app's folders; one that becomes pathable moves back."""
    store, root = dir_store
    store.create_bucket("media")
    bodies = {"a": b"file a", "a/b": b"under a", "x//y": b"double", "/lead": b"lead", "../up": b"up",
              "seg/" + "s" * 300: b"long segment", "d/": b"trailing"}
    for key, body in bodies.items():
        store.write("media", key, io.BytesIO(body), size=len(body))
    assert {i.key: i.sha256 for i in store.list("media")} == {k: sha(v) for k, v in bodies.items()}
    assert (root / "media" / "a").read_bytes() == b"file a"  # the first came first: the path is its
    assert not (root.parent / "up").exists() and not (root / "up").exists()
    escaped = sorted(p.name for p in (root / ".keys" / "media").iterdir())
    assert len(escaped) == 6, escaped
    for key, body in bodies.items():
        with store.open_read("media", key) as stream:
            assert stream.read() == body, key
    # "a" goes: "a/b" written again lands at its path, and its escaped copy is gone
    store.delete("media", "a")
    store.write("media", "a/b", io.BytesIO(b"now a path"), size=10)
    assert (root / "media" / "a" / "b").read_bytes() == b"now a path"
    assert [i.key for i in store.list("media", "a")] == ["a/b"]
    assert len(list((root / ".keys" / "media").iterdir())) == 5
    if hasattr(store, "release"):
        store.release()


def test_what_is_not_an_object_is_named_never_skipped(dir_store, tmp_path):
    store, root = dir_store
    store.create_bucket("media")
    plant(root, {"ok/file.txt": b"fine"})
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not media")
    os.symlink(outside, root / "media" / "linked")
    with pytest.raises(ProviderError) as caught:
        list(store.list("media"))
    assert caught.value.code == "objects.not_an_object"
    assert str(root / "media" / "linked") in str(caught.value) and "symbolic link" in str(caught.value)
    with pytest.raises(ProviderError):
        store.stats("media")
    # a link is never followed: not read through, not written through
    assert store.head("media", "linked/secret") is None
    store.write("media", "linked/planted", io.BytesIO(b"x"), size=1)
    assert not (outside / "planted").exists()
    store.delete("media", "linked/secret")
    assert (outside / "secret").exists()
    (root / "media" / "linked").unlink()
    store.delete("media", "linked/planted")
    os.mkfifo(root / "media" / "ok" / "pipe")
    with pytest.raises(ProviderError, match="named pipe"):
        list(store.list("media"))
    (root / "media" / "ok" / "pipe").unlink()
    bad = os.path.join(os.fsencode(root / "media" / "ok"), b"latin1-\xe9.txt")
    with open(bad, "wb") as handle:
        handle.write(b"x")
    with pytest.raises(ProviderError, match="not UTF-8"):
        list(store.list("media"))
    os.unlink(bad)
    assert [i.key for i in store.list("media")] == ["ok/file.txt"]
    if hasattr(store, "release"):
        store.release()


def flat_store(root: Path) -> dict[str, bytes]:
    """A store as Lifeboat wrote it before the nested layout (every key one file name in the bucket folder, the
    meta cache in the attribute or in .meta/), with what an app wrote in nested folders that it never saw."""
    bodies = {"avatars/1/a.png": b"avatar", "posts/2026/x.jpg": os.urandom(5000), "plain": b"plain",
              "per%cent/and space": b"odd", "k" * 300: b"hashed name", "a//double": b"double", ".dot": b"dot"}
    (root / "media").mkdir(parents=True)
    (root / ".meta" / "media").mkdir(parents=True)
    (root / ".tmp").mkdir()
    for index, (key, body) in enumerate(bodies.items()):
        name = layout.flat_name(key)
        (root / "media" / name).write_bytes(body)
        st = os.stat(root / "media" / name)
        meta = {"key": key, "size": len(body), "mtime_ns": st.st_mtime_ns, "sha256": sha(body),
                "content_type": f"type/{index}"}
        if index % 2:  # half of them with the cache in a file of its own
            (root / ".meta" / "media" / name).write_text(json.dumps(meta))
        else:
            os.setxattr(root / "media" / name, META_XATTR, json.dumps(meta).encode())
    return bodies


def test_a_flat_store_reads_as_it_is_and_converts_to_nested_paths(tmp_path):
    root = tmp_path / "objects"
    bodies = flat_store(root)
    store = DirectoryStore(root)
    assert store.layout() == layout.FLAT
    assert {i.key: i.sha256 for i in store.list("media")} == {k: sha(v) for k, v in bodies.items()}
    plant(root, {"app/2026/upload.bin": b"the app's own"})  # the flat layout never saw these: now it says so
    with pytest.raises(ProviderError, match="flat layout.*lifeboat up"):
        list(store.list("media"))
    assert store.convert_layout() == len(bodies) + 1
    assert store.layout() == layout.NESTED and not (root / ".convert").exists()
    everything = {**bodies, "app/2026/upload.bin": b"the app's own"}
    infos = {i.key: i for i in store.list("media")}
    assert {k: i.sha256 for k, i in infos.items()} == {k: sha(v) for k, v in everything.items()}
    for index, key in enumerate(bodies):  # the content types came along, from either cache
        assert infos[key].extra["content_type"] == f"type/{index}", key
    assert (root / "media" / "avatars/1/a.png").read_bytes() == b"avatar"
    assert (root / "media" / "per%cent/and space").read_bytes() == b"odd"
    assert store.convert_layout() == 0  # once


@pytest.mark.parametrize("crash_after", [0, 1, 3, 6])
def test_a_conversion_cut_short_is_completed_by_the_next(tmp_path, monkeypatch, crash_after):
    root = tmp_path / "objects"
    bodies = flat_store(root)
    real = os.replace
    calls = []

    def dying(src, dst, *args, **kwargs):
        if len(calls) >= crash_after:
            raise KeyboardInterrupt("killed")
        calls.append(dst)
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(layout.os, "replace", dying)
    with pytest.raises(KeyboardInterrupt):
        DirectoryStore(root).convert_layout()
    monkeypatch.setattr(layout.os, "replace", real)
    with pytest.raises(ProviderError, match="interrupted"):
        DirectoryStore(root).layout()
    DirectoryStore(root).convert_layout()
    store = DirectoryStore(root)
    assert {i.key: i.sha256 for i in store.list("media")} == {k: sha(v) for k, v in bodies.items()}


def test_a_flat_store_on_a_host_converts_and_files_go_to_the_bucket_owner(ssh_lab):
    """On the storage host Lifeboat writes as root; the app reads as its own account. What Lifeboat writes
    (one by one, in batches, through a conversion) belongs to the bucket folder's owner, with the store's mode."""
    from toolkit.stores.sftpstore import RemoteDirectoryStore
    from toolkit.transport.ssh import SSHConnection

    roots = make_host_roots()
    host = ssh_lab.hosts[0]
    conn = SSHConnection(host.address, port=host.port, user=ssh_lab.user, key_file=str(ssh_lab.client_key),
                         known_hosts=str(ssh_lab.known_hosts))
    root = roots / "objects"
    bodies = flat_store(root)
    subprocess.run(["chown", "-R", "nobody:nogroup", str(root / "media")], check=True)
    store = RemoteDirectoryStore(conn, str(root), file_mode=0o640)
    try:
        assert store.layout() == layout.FLAT
        assert {i.key for i in store.list("media")} == set(bodies)
        assert store.convert_layout() == len(bodies)
        assert store.layout() == layout.NESTED
        assert {i.key: i.sha256 for i in store.list("media")} == {k: sha(v) for k, v in bodies.items()}
        store.write("media", "new/one/by/one.bin", io.BytesIO(b"one"))  # size unknown: SFTP, then placed
        store.write("media", "new/in/a/batch.bin", io.BytesIO(b"batch"), size=5)
        nobody = (int(subprocess.check_output(["id", "-u", "nobody"])), int(subprocess.check_output(["id", "-g", "nobody"])))
        for rel in ("new/one/by/one.bin", "new/in/a/batch.bin"):
            st = os.stat(root / "media" / rel)
            assert (st.st_uid, st.st_gid) == nobody and (st.st_mode & 0o777) == 0o640, rel
        for folder in ("new", "new/one", "new/in/a"):
            st = os.stat(root / "media" / folder)
            assert (st.st_uid, st.st_gid) == nobody and (st.st_mode & 0o777) == 0o750, folder
        assert store.stats("media") == (len(bodies) + 2, sum(map(len, bodies.values())) + 8)
        store.delete("media", "new/in/a/batch.bin")
        assert store.head("media", "new/in/a/batch.bin") is None
        os.symlink("/etc", root / "media" / "etc")
        with pytest.raises(ProviderError, match="symbolic link"):
            list(store.list("media"))
        with pytest.raises(ProviderError, match="symbolic link"):
            store.stats("media")
    finally:
        store.release()
        conn.close()
        shutil.rmtree(roots, ignore_errors=True)
