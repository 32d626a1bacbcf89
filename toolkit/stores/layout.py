"""Where the directory object store keeps an object (docs/object-layout.md), one definition for every reader
and writer of that layout: Lifeboat's stores here, and the programs it runs on a host (the lister, the
reader, the batch writer, the host operations, the media gateway), which get this file's text ahead of their
own (after toolkit/stores/objmeta.py). So: standard library only, nothing from toolkit, Python 3.6 syntax.

**Nested** (layout 2, every store made now; also any folder Lifeboat did not make): a key is a path.

    <root>/<bucket>/<key>                  the object's bytes: "attachments/2026/12/x.webp" is that file,
                                           so what an app writes with plain file APIs is an object, and
                                           what Lifeboat writes is where the app looks for it
    <root>/.keys/<bucket>/<flat name>      a key that cannot be a path (an empty, "." or ".." segment, a
                                           segment over 255 bytes, a NUL; or a file and a folder of one
                                           name: "a" and "a/b"), under its flat name
    <root>/.meta/<bucket>/<key>            meta caches where the file's attribute cannot hold them
    <root>/.meta/.keys/<bucket>/<flat name>
    <root>/.layout                         "nested 2"

**Flat** (layout 1, stores made by Lifeboat before the nested layout; recognised by a ``.meta`` folder and
no ``.layout``): every key is one file name in the bucket folder (its flat name). Read and written as it
is; ``lifeboat up`` converts such a store (:func:`convert`, resumable), and says so in its plan.

A flat name: percent-encoding of every byte outside [A-Za-z0-9_-.~ ] (``/`` included), a leading "." or "~"
encoded too, and "~<sha256 of the key>" where that exceeds 240 bytes (the key is then in the meta cache).

In a bucket folder, anything that is not a regular file or a folder (a symbolic link, a socket...), or a
name that is not UTF-8, is an error naming it (:class:`NotAnObject`): never skipped. Empty folders are
nothing. Lifeboat never follows a symbolic link inside a bucket, reading or writing.
"""

import hashlib
import os
import shutil
import stat
from urllib.parse import quote, unquote

try:
    load_meta, store_meta  # noqa: B018 - objmeta's, when this text runs after it on a host
except NameError:
    from toolkit.stores.objmeta import load_meta, store_meta

FLAT, NESTED = 1, 2
LAYOUT_FILE = ".layout"
ESCAPED = ".keys"
CONVERTING = ".convert"
LAYOUT_NAMES = {FLAT: "flat", NESTED: "nested", 0: "half converted"}
MAX_FLAT = 240
NAME_MAX = 255


class NotAnObject(Exception):
    """Something in a bucket folder that cannot be an object."""

    def __init__(self, path, what):
        Exception.__init__(self, f"{path} is {what}")
        self.path, self.what = path, what


class LayoutError(Exception):
    """The store is half converted (an interrupted conversion) or of a layout this code does not know."""


def check_key(key):
    try:
        size = len(key.encode("utf-8"))
    except (UnicodeEncodeError, AttributeError):
        raise ValueError("object keys are text (UTF-8)") from None
    if not 1 <= size <= 1024:
        raise ValueError("object keys are 1 to 1024 bytes of UTF-8")


def flat_name(key):
    """The key as one file name (the flat layout; escaped keys in the nested one)."""
    check_key(key)
    name = quote(key, safe=" ")
    if name.startswith((".", "~")):  # no hidden files, and "~" marks hashed names
        name = f"%{ord(name[0]):02X}" + name[1:]
    if len(name.encode()) > MAX_FLAT:
        return "~" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    return name


def flat_key(name):
    """The key of a flat name, or None for a hashed one (its key is in its meta cache)."""
    return None if name.startswith("~") else unquote(name)


def pathable(key):
    """Whether ``key`` can be a relative path (its file may still be blocked by a file or folder of the
    same name: :meth:`Bucket.target` then escapes it)."""
    check_key(key)
    for part in key.split("/"):
        if part in ("", ".", "..") or "\0" in part or len(part.encode("utf-8")) > NAME_MAX:
            return False
    return True


def layout_of(root, mark=True):
    """The layout of the store at ``root``. A store with neither a ``.layout`` nor a ``.meta`` (new, or a
    folder Lifeboat did not make) is nested, and gets its ``.layout`` when ``mark`` (and it can be written)."""
    try:
        with open(os.path.join(root, LAYOUT_FILE)) as handle:
            words = handle.read().split()
    except (FileNotFoundError, NotADirectoryError):
        words = None
    if words is not None:
        if len(words) == 2 and words[0] == "nested" and words[1] == str(NESTED):
            return NESTED
        raise LayoutError("{}: unknown store layout {!r}".format(os.path.join(root, LAYOUT_FILE), " ".join(words)))
    if os.path.isdir(os.path.join(root, CONVERTING)):
        raise LayoutError(f"{root}: a conversion to the nested layout was interrupted; `lifeboat up` finishes "
                          "it")
    if os.path.isdir(os.path.join(root, ".meta")):
        return FLAT
    if mark and os.path.isdir(root):
        try:
            _mark_nested(root)
        except OSError:
            pass  # a folder this process may not write: nested all the same
    return NESTED


def _mark_nested(root):
    tmp = os.path.join(root, f".layout.{os.getpid()}")
    with open(tmp, "w") as handle:
        handle.write(f"nested {NESTED}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, os.path.join(root, LAYOUT_FILE))


def _md5():
    try:
        return hashlib.md5(usedforsecurity=False)  # a checksum, not security (FIPS systems allow it so)
    except TypeError:  # Python before 3.9
        return hashlib.md5()


def hash_stream(stream, chunk=1 << 20, out=None):
    """Read ``stream`` to its end, writing each piece to ``out`` when one is given: (SHA-256, MD5, bytes)."""
    sha, md5, size = hashlib.sha256(), _md5(), 0
    while True:
        data = stream.read(chunk)
        if not data:
            break
        sha.update(data)
        md5.update(data)
        if out is not None:
            out.write(data)
        size += len(data)
    return sha, md5, size


def copy_hashed(stream, out, chunk=1 << 20):
    """Copy ``stream`` into the open file ``out`` and make it durable: (SHA-256, MD5, bytes)."""
    sha, md5, size = hash_stream(stream, chunk, out)
    out.flush()
    os.fsync(out.fileno())
    return sha, md5, size


def dir_mode(file_mode):
    """The mode of the folders that hold files of ``file_mode``: x wherever r is (0644 -> 0755)."""
    return file_mode | ((file_mode & 0o444) >> 2)


def plain_dirs(base, rel):
    """Whether every folder on the way from ``base`` to ``rel``'s file is a real folder (no symbolic link):
    False as well where one is missing."""
    path = base
    for part in rel.split("/")[:-1]:
        path = path + "/" + part
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return False
        except OSError:
            return False
    return True


class Bucket:
    """One bucket of the store at ``root`` in ``layout``: where each key's object is, where a new one goes,
    and every object there is. Files and folders it makes get ``file_mode`` (and :func:`dir_mode`) and,
    when this process may give them away, the bucket folder's owner."""

    def __init__(self, root, bucket, layout, file_mode=0o600):
        if not bucket or "/" in bucket or bucket.startswith("."):
            raise ValueError(f"bad bucket name {bucket!r}")
        self.root, self.name, self.layout = root.rstrip("/") or "/", bucket, layout
        self.data = self.root + "/" + bucket
        self.meta = self.root + "/.meta/" + bucket
        self.escaped = self.root + "/" + ESCAPED + "/" + bucket
        self.escaped_meta = self.root + "/.meta/" + ESCAPED + "/" + bucket
        self.file_mode, self.dir_mode = file_mode, dir_mode(file_mode)
        self._owner = None

    @classmethod
    def alone(cls, folder, name):
        """A folder that is a bucket by itself (an app's own media folder, adopted as it is): every file
        under it is an object at its path; no escaped keys, no meta caches beside it."""
        bucket = cls(os.path.dirname(folder.rstrip("/")) or "/", name, NESTED)
        bucket.data = folder.rstrip("/") or "/"
        bucket.meta = bucket.escaped = bucket.escaped_meta = None
        return bucket

    # -- one key
    def places(self, key):
        """[(data path, meta path)] where ``key``'s object may be, in the order they are looked at."""
        name = flat_name(key)
        if self.layout == FLAT:
            return [(self.data + "/" + name, self.meta + "/" + name)]
        out = [(self.data + "/" + key, self.meta and self.meta + "/" + key)] if pathable(key) else []
        if self.escaped is None:  # a bucket alone
            return out
        return out + [(self.escaped + "/" + name, self.escaped_meta + "/" + name)]

    def _base(self, data):
        return self.data if data.startswith(self.data + "/") else self.escaped

    def find(self, key):
        """(data path, meta path, stat) of ``key``'s object, or None."""
        for data, meta in self.places(key):
            base = self._base(data)
            if not plain_dirs(base, data[len(base) + 1:]):
                continue
            try:
                st = os.lstat(data)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if stat.S_ISREG(st.st_mode):
                return data, meta, st
        return None

    def target(self, key):
        """(data path, meta path, elsewhere) where ``key``'s object is to be written: its path when it can be
        one (folders made on the way; an empty folder in its place removed), else its escaped name;
        ``elsewhere``: the other place an older copy may be, to remove once the new one is in place."""
        places = self.places(key)
        if len(places) == 2 and self._clear(places[0][0]):
            return places[0][0], places[0][1], [places[1]]
        self._makedirs(self.escaped if self.layout == NESTED else self.data, places[-1][0])
        return places[-1][0], places[-1][1], places[:-1]

    def remove(self, places):
        """Remove the objects and meta caches at ``places`` ((data, meta) pairs): files only, never through
        a link."""
        for data, meta in places:
            for path, base in ((data, self._base(data)), (meta, self.root + "/.meta")):
                if plain_dirs(base, path[len(base) + 1:]):
                    try:
                        if stat.S_ISREG(os.lstat(path).st_mode):
                            os.unlink(path)
                    except OSError:
                        pass

    def _clear(self, path):
        try:
            self._makedirs(self.data, path)
        except (FileExistsError, NotADirectoryError):
            return False  # a file (or a link) where a folder of the path should be
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return True
        if stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(path)  # an empty folder is nothing; one with files keeps them
                return True
            except OSError:
                return False
        return stat.S_ISREG(st.st_mode)

    def _makedirs(self, base, path):
        """The folders between ``base`` and ``path``'s file, made where missing (never through a link)."""
        current = base
        if not os.path.isdir(base):
            os.makedirs(base, mode=self.dir_mode, exist_ok=True)
            self.settle(base, folder=True)
        for part in path[len(base) + 1:].split("/")[:-1]:
            current = current + "/" + part
            try:
                os.mkdir(current, self.dir_mode)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(current).st_mode):
                    raise
                continue
            self.settle(current, folder=True)

    def owner(self):
        """(uid, gid) that the files Lifeboat writes here get: the bucket folder's, when this process may
        give files away (root) and they are not its own; else None."""
        if self._owner is None:
            self._owner = (None,)
            try:
                st = os.stat(self.data)
                if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
                    self._owner = (st.st_uid, st.st_gid)
            except (OSError, AttributeError):
                pass
        return self._owner if self._owner != (None,) else None

    def settle(self, target, folder=False):
        """Give a file (a path or a descriptor) or folder this bucket's mode and owner."""
        owner = self.owner()
        if owner is not None:
            os.chown(target, owner[0], owner[1])
        os.chmod(target, self.dir_mode if folder else self.file_mode)

    # -- every object
    def walk(self, prefix=""):
        """Every object whose key starts with ``prefix``: (key or None, data path, meta path), None where a
        hashed name's key must come from its meta cache. Raises :class:`NotAnObject` for anything in the
        bucket folder that is not one."""
        if self.layout == FLAT:
            for entry in _entries(self.data):
                if entry.is_dir(follow_symlinks=False):
                    raise NotAnObject(entry.path, "a folder in a store of the old flat layout (whose objects are "
                                      "all in the bucket folder itself): `lifeboat up` converts the store to "
                                      "nested paths, which carry it")
                key = flat_key(_object_name(entry))
                if key is None or key.startswith(prefix):
                    yield key, entry.path, self.meta + "/" + entry.name
            return
        escaped = []
        for entry in _entries(self.escaped) if self.escaped else []:
            name = _object_name(entry, ESCAPED)
            escaped.append((flat_key(name), entry.path, self.escaped_meta + "/" + name))
        shadowed = {key for key, _, _ in escaped if key is not None and pathable(key)}
        folders = [""]
        while folders:
            rel = folders.pop()
            for entry in _entries(self.data + ("/" + rel if rel else "")):
                key = (rel + "/" if rel else "") + _utf8(entry)
                if entry.is_dir(follow_symlinks=False):
                    if prefix.startswith(key + "/") or (key + "/").startswith(prefix):
                        folders.append(key)
                    continue
                _object_name(entry)
                if key in shadowed:  # an older copy under its escaped name (a write cut short): this one wins
                    shadowed.discard(key)
                    escaped = [e for e in escaped if e[0] != key]
                if key.startswith(prefix):
                    yield key, entry.path, self.meta and self.meta + "/" + key
        for key, data, meta in escaped:
            if key is None or key.startswith(prefix):
                yield key, data, meta

    def stats(self):
        """(objects, bytes) without reading any."""
        count = total = 0
        for _, data, _ in self.walk():
            try:
                total += os.lstat(data).st_size
                count += 1
            except FileNotFoundError:
                pass
        return count, total


def _entries(folder):
    try:
        with os.scandir(folder) as found:
            return list(found)
    except FileNotFoundError:
        return []


def _utf8(entry):
    try:
        entry.name.encode("utf-8")
    except UnicodeEncodeError:
        raise NotAnObject(entry.path.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                          "named in bytes that are not UTF-8 (an object key is text): rename it") from None
    return entry.name


KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
         (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))


def _object_name(entry, where=None):
    """The entry's name, when it is a regular file (else :class:`NotAnObject`)."""
    name = _utf8(entry)
    if entry.is_file(follow_symlinks=False):
        return name
    mode = entry.stat(follow_symlinks=False).st_mode
    what = next((text for test, text in KINDS if test(mode)), "not a regular file")
    if where is None:
        raise NotAnObject(entry.path, what + ", not a file: Lifeboat carries files only (replace it with the "
                          "file it stands for, or move it out of the bucket folder)")
    raise NotAnObject(entry.path, what + " among escaped keys")


def convert(root, file_mode=0o600, log=None):
    """Convert the flat store at ``root`` to the nested layout, in place: every object keeps its bytes, its
    meta cache and its owner; a crash at any moment leaves a state the next call completes (each bucket is
    first moved aside, whole, under ``.convert/``, so what is still there is flat and what is in the bucket
    folder is nested). Returns the number of objects moved; 0 for a store already nested."""
    try:
        if layout_of(root, mark=False) == NESTED:
            shutil.rmtree(os.path.join(root, CONVERTING), ignore_errors=True)  # a crash after the mark
            return 0
    except LayoutError:
        if not os.path.isdir(os.path.join(root, CONVERTING)):
            raise
    staging = os.path.join(root, CONVERTING)
    for sub in ("data", "meta"):
        os.makedirs(os.path.join(staging, sub), mode=0o700, exist_ok=True)
    buckets = sorted(set(os.listdir(os.path.join(staging, "data"))) |
                     {e.name for e in os.scandir(root) if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")})
    moved = 0
    for name in buckets:
        staged, staged_meta = os.path.join(staging, "data", name), os.path.join(staging, "meta", name)
        live = os.path.join(root, name)
        if not os.path.isdir(staged):
            os.rename(live, staged)
        if not os.path.isdir(staged_meta):  # recorded even when empty: the meta folder is the flat one until then
            if os.path.isdir(os.path.join(root, ".meta", name)):
                os.rename(os.path.join(root, ".meta", name), staged_meta)
            else:
                os.mkdir(staged_meta, 0o700)
        if not os.path.isdir(live):
            st = os.stat(staged)
            os.mkdir(live, stat.S_IMODE(st.st_mode))
            try:
                os.chown(live, st.st_uid, st.st_gid)
            except OSError:
                pass
        moved += _convert_bucket(Bucket(root, name, NESTED, file_mode), staged, staged_meta, log)
    _mark_nested(root)
    shutil.rmtree(staging)
    return moved


def _convert_bucket(bucket, staged, staged_meta, log):
    moved = 0
    for top, folders, files in os.walk(staged, topdown=False):
        rel_dir = top[len(staged) + 1:]
        for name in files + [f for f in folders if os.path.islink(top + "/" + f)]:
            path = top + "/" + name
            # a file in a folder is the app's (the flat layout never saw it): its key is its path
            key = (rel_dir + "/" + name) if rel_dir else flat_key(name)
            old_meta = None if rel_dir else staged_meta + "/" + name
            fresh, anything = load_meta(path, old_meta or os.devnull)
            if key is None:
                key = (anything or {}).get("key")
            if not stat.S_ISREG(os.lstat(path).st_mode):  # kept where it was: the listing names it
                dest = bucket.data + "/" + (rel_dir + "/" if rel_dir else "") + name
                bucket._makedirs(bucket.data, dest)
            elif key is None:  # a hashed name whose key is lost: kept under it, as the flat layout did
                dest = bucket.escaped + "/" + name
                bucket._makedirs(bucket.escaped, dest)
            else:
                dest, meta, _ = bucket.target(key)
                if anything is not None and old_meta is not None and os.path.exists(old_meta):
                    store_meta(path, meta, anything)  # the cache goes with it (the attribute does by itself)
                moved += 1
            os.replace(path, dest)
            if old_meta is not None and os.path.exists(old_meta):
                os.unlink(old_meta)
            if log is not None and moved and moved % 10000 == 0:
                log(moved)
        if top != staged:
            os.rmdir(top)
    os.rmdir(staged)
    shutil.rmtree(staged_meta, ignore_errors=True)
    return moved


def source():
    """This file's text, for the programs run on a host (after objmeta's)."""
    with open(__file__, encoding="utf-8") as handle:
        return handle.read()


def host_program(text):
    """``text`` as a program to run on a host: toolkit/stores/objmeta.py's and this file's functions
    ahead of it."""
    from toolkit.stores import objmeta

    return objmeta.source() + source() + text
