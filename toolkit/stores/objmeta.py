"""The meta cache of the directory object store (docs/object-layout.md), one definition for every reader
and writer of that layout: Lifeboat's stores here, and the programs it runs on a host (the batch writer,
the lister), which get this file's text ahead of their own. So: standard library only, nothing from
toolkit, and Python 3.6 syntax (the host's python3).

An object's cache, ``{key, size, mtime_ns, mtime_s, sha256, md5, content_type}``, lives in the data file's
extended attribute ``user.lifeboat.meta`` where the file system and the file's owner allow it (no second
file per object, and it stays with the file when it is renamed into place) and otherwise in
``<root>/.meta/<bucket>/<name>``. It is trusted only while the file's size and mtime are the recorded ones
(to the nanosecond where it was recorded so, else to the second): bytes rewritten by anyone else make it
stale, and the checksum is computed again where the data lives.
"""

import json
import os

META_XATTR = "user.lifeboat.meta"


def meta_fresh(meta, st):
    """Whether ``meta`` describes the file whose stat is ``st`` as it is now."""
    if not isinstance(meta, dict) or not meta.get("sha256") or meta.get("size") != st.st_size:
        return False
    if meta.get("mtime_ns") is not None:
        return meta["mtime_ns"] == st.st_mtime_ns
    return meta.get("mtime_s") == int(st.st_mtime)


def load_meta(data_path, meta_path, st=None):
    """(the cache that matches the file now, or None; any cache found, or None: a hashed name's key is in
    it even when the rest is stale). The extended attribute first, then the file of its own."""
    found = []
    try:
        found.append(json.loads(os.getxattr(data_path, META_XATTR)))
    except (OSError, ValueError, AttributeError):
        pass
    try:
        with open(meta_path, "rb") as handle:
            found.append(json.loads(handle.read()))
    except (OSError, ValueError):
        pass
    found = [meta for meta in found if isinstance(meta, dict)]
    if st is not None:
        for meta in found:
            if meta_fresh(meta, st):
                return meta, meta
    return None, (found[0] if found else None)


def store_meta(data, meta_path, meta):
    """Keep ``meta`` for the data file ``data`` (a path or an open descriptor): in its extended attribute,
    removing an older cache file of the same name; where that is refused (a file system without user
    attributes, a file owned by someone else, a value too large), in the file of its own, written whole and
    renamed into place. Returns where it went: "xattr" or "file"."""
    body = json.dumps(meta).encode()
    try:
        os.setxattr(data, META_XATTR, body)
    except (OSError, AttributeError):
        folder = os.path.dirname(meta_path)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        tmp = os.path.join(folder, f".m-{os.getpid()}-{os.urandom(6).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, meta_path)
        return "file"
    try:
        os.unlink(meta_path)
    except OSError:
        pass
    return "xattr"


def source():
    """This file's text, for the programs run on a host."""
    with open(__file__, encoding="utf-8") as handle:
        return handle.read()
