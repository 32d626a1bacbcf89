"""The directory object store on a remote host: same layout as toolkit/stores/dirstore.py, data moved as SFTP
streams, checksums computed on the host (``sha256sum``) so nothing is pulled back to verify."""

from __future__ import annotations

import hashlib
import json
import stat
import threading
import uuid
import weakref
from contextlib import contextmanager

from toolkit.contract import ObjectInfo, ObjectStore
from toolkit.errors import BadInput, CommandFailed, ProviderError, VerificationFailed
from toolkit.stores.dirstore import CHUNK, encode_key, partial_name, stale_partial
from toolkit.transport.ssh import SSHConnection

POOL = 8  # SFTP sessions kept open per store (OpenSSH allows 10 sessions per connection by default)
SESSION_TIMEOUT = 600.0  # seconds a session waits for the host before the operation fails


class RemoteDirectoryStore(ObjectStore):
    NATIVE_CHECKSUMS = ("sha256",)
    # Object data goes through the system OpenSSH client where it can be used (toolkit.transport.connection:
    # bulk_write/bulk_read, one process and TCP connection per stream), so several objects move at once.
    # Through paramiko, one at a time: its channels on one connection are not reliable under concurrent
    # heavy transfers (sessions dropped mid-write, stalls were seen with 4). Small objects go in batches
    # either way (write_batch: one stream per batch, through a writer on the host kept for the next batch).
    BULK_PARALLEL = 4
    READS_IN_BATCHES = True  # open_many: one stream from a reader on the host (READER) for many objects

    @property
    def PARALLEL(self) -> int:  # noqa: N802 - the contract's name
        return self.BULK_PARALLEL if self.conn.openssh() is not None else 1

    def __init__(self, conn: SSHConnection, root: str):
        self.conn = conn
        self.root = root.rstrip("/")
        self._pool: list = []
        self._pool_lock = threading.Lock()
        self._writers: dict[str, list] = {}  # batch writers between batches, per bucket (_writer)
        weakref.finalize(self, _end_writers, self._writers)  # a store dropped without release()

    # -- SFTP sessions, kept for the next operation (opening one costs round trips)
    @contextmanager
    def _sftp(self):
        sftp = None
        with self._pool_lock:
            while self._pool and sftp is None:
                found = self._pool.pop()
                if found.sock.closed or not found.sock.get_transport().is_active():
                    found.close()
                else:
                    sftp = found
        if sftp is None:
            sftp = self.conn.sftp()
            sftp.get_channel().settimeout(SESSION_TIMEOUT)
        try:
            yield sftp
        except BaseException:
            sftp.close()  # it may hold half an exchange: never reused
            raise
        with self._pool_lock:
            if len(self._pool) < POOL and not sftp.sock.closed:
                self._pool.append(sftp)
                return
        sftp.close()

    def release(self) -> None:
        """Close the kept SFTP sessions and end the kept batch writers: every one of them, and then the first
        writer that did not end well is raised (a failed one is killed)."""
        with self._pool_lock:
            pool, self._pool = self._pool, []
            writers = dict(self._writers)
            self._writers.clear()  # (the same table the finalizer holds)
        for sftp in pool:
            sftp.close()
        failed = _end_writers(writers)
        if failed is not None:
            raise failed

    # -- paths
    def bucket_dir(self, bucket: str) -> str:
        if not bucket or "/" in bucket or bucket.startswith("."):
            raise BadInput(f"bad bucket name {bucket!r}.", code="objects.bad_bucket")
        return f"{self.root}/{bucket}"

    def _meta_dir(self, bucket: str) -> str:
        return f"{self.root}/.meta/{bucket}"

    def create_bucket(self, bucket: str) -> None:
        # one round trip; paths as arguments, never pasted into the script
        self.conn.run(["sh", "-c", 'mkdir -p -- "$@" && chmod 700 -- "$0"', self.root, self.bucket_dir(bucket),
                       self._meta_dir(bucket), f"{self.root}/.tmp"])

    def bucket_exists(self, bucket: str) -> bool:
        return self.conn.run(["test", "-d", self.bucket_dir(bucket)], check=False).ok

    def remove_bucket(self, bucket: str) -> None:
        self.conn.run(["rm", "-rf", self.bucket_dir(bucket), self._meta_dir(bucket)])

    def _no_bucket(self, bucket: str) -> ProviderError:
        return ProviderError(f"bucket {bucket} does not exist at {self.conn.host}:{self.root}.",
                             code="objects.no_bucket")

    def _require(self, sftp, bucket: str) -> str:
        path = self.bucket_dir(bucket)
        try:
            sftp.stat(path)
        except FileNotFoundError:
            raise self._no_bucket(bucket) from None
        return path

    # -- what the bucket holds, with checksums computed where the data lives
    def _listing(self, bucket: str, request: dict) -> list[ObjectInfo]:
        """One program on the host (LISTER) reads the bucket with each object's meta cache and hashes there
        what has none that is fresh: one round trip for the whole bucket, whatever its size."""
        from toolkit.stores.objmeta import source

        result = self.conn.run(["python3", "-c", source() + LISTER, self.root, bucket],
                               input=json.dumps(request).encode(), check=False, timeout=3600)
        if result.exit_code == 3:
            raise self._no_bucket(bucket)
        if not result.ok:
            raise CommandFailed(self.conn.host, ["python3", "-c", "LISTER", self.root, bucket], result.exit_code,
                                result.stdout, result.stderr)
        infos = []
        for line in result.stdout.decode("utf-8", "surrogateescape").splitlines():
            if line.strip():
                found = json.loads(line)
                infos.append(ObjectInfo(found["key"], found["size"], found["sha256"], found.get("md5"),
                                        {"content_type": found.get("content_type")}))
        return infos

    def _write_meta(self, sftp, bucket: str, name: str, meta: dict) -> None:
        path = f"{self._meta_dir(bucket)}/{name}"
        tmp = f"{self._meta_dir(bucket)}/.m-{uuid.uuid4().hex}"
        with sftp.open(tmp, "wb") as handle:
            handle.write(json.dumps(meta).encode())
        sftp.posix_rename(tmp, path)

    # -- contract
    def list(self, bucket: str, prefix: str = ""):
        yield from sorted(self._listing(bucket, {"prefix": prefix}), key=lambda info: info.key)

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        found = self._listing(bucket, {"name": encode_key(key)})
        return found[0] if found else None

    @contextmanager
    def open_read(self, bucket: str, key: str):
        """The object as a stream over an SSH channel (``cat``): flow-controlled by the SSH window, so
        memory stays flat however large the object (SFTP prefetch would buffer it all)."""
        path = f"{self.bucket_dir(bucket)}/{encode_key(key)}"
        with self._sftp() as sftp:
            self._require(sftp, bucket)
            try:
                sftp.stat(path)
            except FileNotFoundError:
                raise ProviderError(f"object {key!r} not found in bucket {bucket}.",
                                    code="objects.not_found") from None
        with self.conn.bulk_read(["cat", "--", path]) as stream:
            yield stream

    @contextmanager
    def open_many(self, bucket: str, keys: list[str]):
        """Many objects through one stream from a program on the host (READER): no connection, process
        or round trip per object. Each stream is the object's bytes, exactly; an object that shrank while
        it was read fails its stream's end (objects.changed), one that is gone fails when it is reached."""
        names = [encode_key(k) for k in keys]
        request = "".join(json.dumps(n) + "\n" for n in names).encode()
        try:
            with self.conn.bulk_read(["python3", "-c", READER, self.root, bucket], input=request) as stream:
                items = _frames(stream, self.conn.host, bucket, keys, names)
                try:
                    yield items
                finally:
                    items.close()
                while stream.read(1 << 20):  # what a reader that stopped early left: the writer ends cleanly
                    pass
        except CommandFailed as exc:
            if exc.exit_code == 3:
                raise self._no_bucket(bucket) from None
            raise

    def write(self, bucket: str, key: str, stream, *, size: int | None = None, content_type: str | None = None):
        if size is not None and self.conn.openssh() is not None:
            from contextlib import nullcontext

            return self.write_batch(bucket, [(key, lambda: nullcontext(stream), size, content_type)])[0]
        name = encode_key(key)
        with self._sftp() as sftp:
            directory = self._require(sftp, bucket)
            tmp = f"{self.root}/.tmp/{partial_name()}"
            sha = hashlib.sha256()
            written = 0
            try:
                with sftp.open(tmp, "wb") as out:
                    out.set_pipelined(True)
                    for chunk in iter(lambda: stream.read(CHUNK), b""):
                        sha.update(chunk)
                        out.write(chunk)
                        written += len(chunk)
                if size is not None and written != size:
                    raise ProviderError(f"object {key!r}: expected {size} bytes, the stream gave {written}; "
                                        "nothing was stored.", code="objects.short_write")
                # What landed on the host is checked there against what was sent.
                landed = self.conn.run(["sha256sum", "--", tmp], timeout=3600).stdout.split()[0].decode()
                if landed != sha.hexdigest():
                    raise VerificationFailed(f"object {key!r}: the copy on {self.conn.host} has SHA-256 {landed}, "
                                             f"the stream had {sha.hexdigest()}; nothing was stored.")
                sftp.posix_rename(tmp, f"{directory}/{name}")
            except BaseException:
                try:
                    sftp.remove(tmp)
                except OSError:
                    pass
                raise
            attrs = sftp.stat(f"{directory}/{name}")
            self._write_meta(sftp, bucket, name, {"key": key, "size": written, "mtime_s": int(attrs.st_mtime),
                                                  "sha256": sha.hexdigest(), "content_type": content_type})
        return ObjectInfo(key, written, sha.hexdigest(), None, {"content_type": content_type})

    def write_batch(self, bucket: str, items: list) -> list[ObjectInfo]:
        """Write many (small) objects through one channel to a writer on the host (toolkit/agents/batchwriter.py):
        no round trip per object. ``items``: (key, open_stream, size, content_type[, sha256]) with
        ``open_stream()`` a context manager; with the SHA-256 the source records for the object (given, or
        carried by the opened stream as ``recorded_sha256``), the client does not hash the stream again (and sends file-backed streams with sendfile): the host compares
        what landed with that one. Each object is renamed into place only after the host's SHA-256 of what landed
        equals the one of what was sent; returns their infos (in order)."""
        sent: dict[str, tuple[str, int, str]] = {}
        answer = bytearray()
        try:
            self._stream_batch(bucket, items, sent, answer)
        except (OSError, CommandFailed):
            with self._sftp() as sftp:  # the writer refuses a missing bucket (exit 3): say which
                self._require(sftp, bucket)
            raise
        results = {r["name"]: r for r in (json.loads(line) for line in answer.decode().splitlines() if line.strip())}
        infos, bad = [], []
        for name, (key, size, digest) in sent.items():
            got = results.get(name)
            if got is None or "error" in got or got["sha256"] != digest or got["size"] != size:
                bad.append(key)
            else:
                infos.append(ObjectInfo(key, size, digest, None))
        if bad:
            raise VerificationFailed(f"{len(bad)} object(s) did not land intact on {self.conn.host} (the SHA-256 of what "
                                     f"landed differs from what was sent, or from the one the source records): {', '.join(repr(k) for k in bad[:5])}; "
                                     "they were not stored.")
        return infos

    def _stream_batch(self, bucket: str, items: list, sent: dict, answer: bytearray) -> None:
        session = self._writer(bucket)
        if session is None:  # through paramiko: one writer per batch
            with self.conn.bulk_write(self._writer_argv(bucket), output=answer) as sink:
                self._send_frames(items, sink, sent)
            return
        try:
            self._send_frames(items, session.stdin, sent)
            session.stdin.write(b'{"end": true}\n')
            session.stdin.flush()
            while not (line := session.read_line()).startswith(b'{"done"'):
                answer.extend(line)
        except BaseException:
            session.kill()  # it may hold half a batch: never reused (what it had not placed, it never will)
            raise
        with self._pool_lock:
            self._writers.setdefault(bucket, []).append(session)

    def _writer_argv(self, bucket: str) -> list[str]:
        from toolkit.agents.batchwriter import batch_writer_program

        return ["python3", "-c", batch_writer_program(), self.root, bucket, partial_name()]

    def _writer(self, bucket: str):
        """A batch writer for ``bucket`` kept from an earlier batch, else a new one (it serves batch after
        batch: a connection, a login and the writer's start once per stream, not once per batch); None
        where bulk data goes through paramiko."""
        with self._pool_lock:
            idle = self._writers.get(bucket, [])
            while idle:
                session = idle.pop()
                if session.alive:
                    return session
                session.kill()
        return self.conn.bulk_session([*self._writer_argv(bucket), "serve"])

    def _send_frames(self, items: list, sink, sent: dict) -> None:
        """Each object as a frame for the batch writer (toolkit/agents/batchwriter.py); ``sent``: name -> (key, size, SHA-256)."""
        for item in items:
            key, open_stream, size, content_type = item[:4]
            known = item[4] if len(item) > 4 else None  # the SHA-256 the source records, if any
            name = encode_key(key)
            sink.write(json.dumps({"name": name, "key": key, "size": size, "content_type": content_type}).encode()
                       + b"\n")
            with open_stream() as stream:
                # a stream that learns the source's record as it opens (an S3 GET) counts as known too
                known = known or getattr(stream, "recorded_sha256", None)
                digest, count = _send(stream, sink, size, hashing=known is None)
            if count != size:
                raise ProviderError(f"object {key!r}: expected {size} bytes, the stream gave {count}; nothing "
                                    "was stored.", code="objects.short_write")
            # With no hash of its own, the client sends the one the source records: the host renames the
            # object into place only if what landed has it.
            digest = digest or known
            sink.write(json.dumps({"sha256": digest}).encode() + b"\n")
            sent[name] = (key, size, digest)

    def sweep_partial(self) -> int:
        """What a killed run left writing here: its batch writers stopped (a writer of this root whose
        partial name says its run is gone; one kept by a live run is spared) and waited for, then its
        partial files removed."""
        import time

        from toolkit.hostops.bootstrap import find_processes, stop_processes

        leftovers = [(pid, start, argv) for pid, start, argv in find_processes(self.conn, self.root)
                     if len(argv) >= 6 and argv[1] == "-c" and argv[3] == self.root
                     and stale_partial(argv[5], time.time())]
        stop_processes(self.conn, leftovers)
        removed = 0
        with self._sftp() as sftp:
            try:
                entries = sftp.listdir_attr(f"{self.root}/.tmp")
            except FileNotFoundError:
                return 0
            for entry in entries:
                if stat.S_ISREG(entry.st_mode or 0) and stale_partial(entry.filename, entry.st_mtime or 0):
                    try:
                        sftp.remove(f"{self.root}/.tmp/{entry.filename}")
                        removed += 1
                    except FileNotFoundError:
                        pass
        return removed

    def delete(self, bucket: str, key: str) -> None:
        name = encode_key(key)
        with self._sftp() as sftp:
            directory = self._require(sftp, bucket)
            for path in (f"{directory}/{name}", f"{self._meta_dir(bucket)}/{name}"):
                try:
                    sftp.remove(path)
                except FileNotFoundError:
                    pass

    def checksum(self, bucket: str, key: str) -> str:
        info = self.head(bucket, key)
        if info is None:
            raise ProviderError(f"object {key!r} not found in bucket {bucket}.", code="objects.not_found")
        return info.sha256

    def stats(self, bucket: str) -> tuple[int, int]:
        with self._sftp() as sftp:
            attrs = [a for a in sftp.listdir_attr(self._require(sftp, bucket)) if stat.S_ISREG(a.st_mode)]
        return len(attrs), sum(a.st_size for a in attrs)


__all__ = ["RemoteDirectoryStore"]


SENDFILE_MIN = 1 << 20  # smaller objects go through the sink's buffer, together with their frames


def _send(stream, sink, size: int, *, hashing: bool) -> tuple[str | None, int]:
    """Copy at most ``size`` bytes of ``stream`` into ``sink`` (more is an error); hash them when asked.
    Without hashing, a large file-backed stream goes to a pipe with sendfile (no copy through Python)."""
    import os

    count = 0
    if not hashing and size >= SENDFILE_MIN and hasattr(stream, "fileno") and hasattr(sink, "fileno"):
        try:
            src_fd, dst_fd = stream.fileno(), sink.fileno()
        except (OSError, ValueError):
            src_fd = dst_fd = None
        if src_fd is not None:
            sink.flush()
            offset = stream.tell()
            while count < size:
                sent = os.sendfile(dst_fd, src_fd, offset + count, min(size - count, 1 << 24))
                if not sent:
                    break
                count += sent
            stream.seek(offset + count)  # sendfile with an offset leaves the file position alone
            if stream.read(1):
                raise ProviderError(f"the stream gave more than {size} bytes.", code="objects.short_write")
            return None, count
    sha = hashlib.sha256() if hashing else None
    while True:
        # what is left (+1 to see the end): no 1 MiB buffer allocated for each small object
        chunk = stream.read(min(CHUNK, size - count + 1))
        if not chunk:
            break
        count += len(chunk)
        if count > size:
            raise ProviderError(f"the stream gave more than {size} bytes.", code="objects.short_write")
        if sha is not None:
            sha.update(chunk)
        sink.write(chunk)
    return (sha.hexdigest() if sha is not None else None), count


def _end_writers(writers: dict) -> Exception | None:
    """End each kept writer (at the end of its input, having placed every batch it answered); one that does
    not end well is killed. The first such failure is returned (release() raises it; the finalizer of a
    dropped store has no one to tell)."""
    failed = None
    for idle in list(writers.values()):
        for writer in idle:
            try:
                writer.close()
            except Exception as exc:  # noqa: BLE001 - the others are ended all the same
                writer.kill()
                failed = failed or exc
    writers.clear()
    return failed


def _frames(stream, host: str, bucket: str, keys: list[str], names: list[str]):
    for key, name in zip(keys, names, strict=True):
        line = stream.readline()
        head = json.loads(line) if line.strip() else None
        if not isinstance(head, dict) or head.get("name") != name:
            raise ProviderError(f"reading {bucket} on {host}: the reader's stream broke before {key!r}.",
                                code="objects.read_failed")
        if "error" in head:
            raise ProviderError(f"object {key!r} not found in bucket {bucket} on {host}.", code="objects.not_found")
        framed = _Framed(stream, int(head["size"]), key, bucket, host)
        yield key, framed
        framed.finish()


class _Framed:
    """One object's bytes within the reader's stream: exactly its size; at its end the reader's verdict."""

    def __init__(self, stream, size: int, key: str, bucket: str, host: str):
        self.stream, self.left, self.key, self.bucket, self.host = stream, size, key, bucket, host
        self.checked = False

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            self._verdict()
            return b""
        want = self.left if n is None or n < 0 else min(n, self.left)
        chunk = self.stream.read(want)
        if not chunk:
            raise ProviderError(f"reading {self.key!r} of {self.bucket} on {self.host}: the stream ended early.",
                                code="objects.read_failed")
        self.left -= len(chunk)
        if self.left == 0:
            self._verdict()  # before the last bytes are handed over: a changed object never reads as whole
        return chunk

    def _verdict(self) -> None:
        if self.checked:
            return
        self.checked = True
        line = self.stream.readline()
        verdict = json.loads(line) if line.strip() else {}
        if not verdict.get("ok"):
            raise ProviderError(f"object {self.key!r} of {self.bucket} on {self.host} changed while it was read; "
                                "run again.", code="objects.changed")

    def finish(self) -> None:
        while self.left > 0:
            if not self.read(min(self.left, 1 << 20)):
                break
        self._verdict()

    def close(self) -> None:
        pass


# The host half of open_many (run as ``python3 -c READER ROOT BUCKET``; the encoded names on stdin, one JSON
# string per line, read whole before anything is written). Per name: {"name", "size"}\n, the bytes, then
# {"ok": true}\n, or {"error": "changed"}\n after zeros padding a file that shrank meanwhile; or only
# {"name", "error": "missing"}\n. Exit 3: no such bucket.
READER = r'''
import json, os, sys
root, bucket = sys.argv[1], sys.argv[2]
data_dir = root + "/" + bucket
if not os.path.isdir(data_dir):
    sys.exit(3)
names = [json.loads(line) for line in sys.stdin.buffer.read().splitlines() if line.strip()]
out = open(sys.stdout.fileno(), "wb", buffering=1 << 20, closefd=False)
SMALL = 256 << 10
for name in names:
    fd = None
    if isinstance(name, str) and name and "/" not in name and name not in (".", ".."):
        try:
            fd = os.open(data_dir + "/" + name, os.O_RDONLY)
        except OSError:
            fd = None
    if fd is None:
        out.write((json.dumps({"name": name, "error": "missing"}) + "\n").encode())
        continue
    try:
        size = os.fstat(fd).st_size
        out.write((json.dumps({"name": name, "size": size}) + "\n").encode())
        sent = 0
        if size <= SMALL:
            while sent < size:
                data = os.read(fd, size - sent)
                if not data:
                    break
                out.write(data)
                sent += len(data)
        else:
            out.flush()
            while sent < size:
                n = os.sendfile(out.fileno(), fd, sent, min(size - sent, 1 << 24))
                if not n:
                    break
                sent += n
        if sent < size:
            while sent < size:
                pad = min(size - sent, 1 << 20)
                out.write(bytes(pad))
                sent += pad
            out.write(b'{"error": "changed"}\n')
        else:
            out.write(b'{"ok": true}\n')
    finally:
        os.close(fd)
out.flush()
'''


# The host half of listing (run as ``python3 -c objmeta + LISTER ROOT BUCKET``, the request on stdin:
# {"prefix": P} for the objects whose keys start with P, {"name": N} for one file). Prints one JSON line per
# object: {key, size, sha256, md5, content_type}; an object without a fresh meta cache is hashed here and its
# cache kept (unless it changed while it was hashed). Exit 3: no such bucket.
LISTER = r'''
import hashlib, json, stat, sys
from urllib.parse import unquote
root, bucket = sys.argv[1], sys.argv[2]
request = json.loads(sys.stdin.readline())
data_dir, meta_dir = root + "/" + bucket, root + "/.meta/" + bucket
if not os.path.isdir(data_dir):
    sys.exit(3)
prefix, one = request.get("prefix", ""), request.get("name")
out = sys.stdout


def names():
    if one is not None:
        if one and "/" not in one and one not in (".", ".."):
            yield one
        return
    with os.scandir(data_dir) as found:
        for entry in found:
            yield entry.name


for name in names():
    path, meta_path = data_dir + "/" + name, meta_dir + "/" + name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        continue
    if not stat.S_ISREG(st.st_mode):
        continue
    fresh, anything = load_meta(path, meta_path, st)
    key = (anything or {}).get("key") if name.startswith("~") else unquote(name)  # dirstore.decode_name
    if key is None or not key.startswith(prefix):
        continue
    if fresh is None:  # written by someone else, or changed since: hashed where it lives
        sha = hashlib.sha256()
        try:
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    sha.update(chunk)
                after = os.fstat(handle.fileno())
        except FileNotFoundError:
            continue
        fresh = {"key": key, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "mtime_s": int(st.st_mtime),
                 "sha256": sha.hexdigest(), "content_type": (anything or {}).get("content_type")}
        if (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
            try:
                store_meta(path, meta_path, fresh)
            except OSError:
                pass  # a cache only: the next listing hashes it again
    out.write(json.dumps({"key": key, "size": st.st_size, "sha256": fresh["sha256"], "md5": fresh.get("md5"),
                          "content_type": fresh.get("content_type")}) + "\n")
out.flush()
'''
