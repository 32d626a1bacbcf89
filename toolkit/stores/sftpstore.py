"""The directory object store on a remote host: same layout as toolkit/stores/dirstore.py (toolkit/stores/layout.py,
whose text runs on the host ahead of the programs here: where each key's file is), data moved as SSH streams,
checksums computed on the host so nothing is pulled back to verify. Files it writes get the store's mode
and the bucket folder's owner (the app account, where the app runs as one)."""

from __future__ import annotations

import hashlib
import json
import stat
import threading
import weakref
from contextlib import contextmanager

from toolkit.contract import ObjectInfo, ObjectStore
from toolkit.errors import BadInput, CommandFailed, ProviderError, VerificationFailed
from toolkit.stores.dirstore import CHUNK, HeadChecksum, checked, partial_name, stale_partial
from toolkit.stores.layout import host_program as program
from toolkit.transport.ssh import SSHConnection

POOL = 8  # SFTP sessions kept open per store (OpenSSH allows 10 sessions per connection by default)
SESSION_TIMEOUT = 600.0  # seconds a session waits for the host before the operation fails


class RemoteDirectoryStore(HeadChecksum, ObjectStore):
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

    def __init__(self, conn: SSHConnection, root: str, *, file_mode: int = 0o600):
        self.conn = conn
        self.root = root.rstrip("/")
        self.file_mode = file_mode  # of the files it writes (folders: x wherever r is)
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
        self.bucket_dir(bucket)
        self._host_op(bucket, "create")

    def convert_layout(self, log=None) -> int:
        """Convert a store of the flat layout on the host to nested paths (toolkit/stores/layout.py convert):
        the number of objects moved, 0 when it is nested already."""
        return int(self._host_op("-", "convert")["moved"])

    def layout(self) -> int:
        return int(self._host_op("-", "layout")["layout"])

    def bucket_exists(self, bucket: str) -> bool:
        return self.conn.run(["test", "-d", self.bucket_dir(bucket)], check=False).ok

    def remove_bucket(self, bucket: str) -> None:
        self.conn.run(["rm", "-rf", self.bucket_dir(bucket), self._meta_dir(bucket), f"{self.root}/.keys/{bucket}",
                       f"{self.root}/.meta/.keys/{bucket}"])

    def _host_op(self, bucket: str, op: str, request: dict | None = None) -> dict:
        """One of HOST_OPS on the host: what it answers (a JSON line)."""
        argv = ["python3", "-c", program(HOST_OPS), *self._where(bucket), op, oct(self.file_mode)]
        result = self.conn.run(argv, input=json.dumps(request or {}).encode() + b"\n", check=False, timeout=3600)
        return self._answer(result, bucket, ["python3", "-c", "HOST_OPS", *self._where(bucket), op])

    def _where(self, bucket: str) -> list[str]:
        """The arguments that tell the programs run on the host where ``bucket`` is: ROOT BUCKET, or
        ``alone=FOLDER`` BUCKET for a folder that is a bucket by itself (layout.Bucket.alone: read only)."""
        return [self.root, bucket]

    def _answer(self, result, bucket: str, shown: list[str]) -> dict:
        """The last JSON line a host program printed; its exit codes as Lifeboat's errors."""
        if result.exit_code == 3:
            raise self._no_bucket(bucket)
        if result.exit_code in (4, 5):
            found = json.loads(result.stderr.decode("utf-8", "replace").strip().splitlines()[-1])
            if "what" in found:
                raise ProviderError(f"bucket {bucket} on {self.conn.host}: {found['path']} is {found['what']}. "
                                    "Nothing was skipped: Lifeboat stops rather than leave it behind.",
                                    code="objects.not_an_object")
            raise ProviderError(f"{self.conn.host}: {found['error']}.", code="objects.layout")
        if not result.ok:
            raise CommandFailed(self.conn.host, shown, result.exit_code, result.stdout, result.stderr)
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        return json.loads(lines[-1]) if lines else {}

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
        result = self.conn.run(["python3", "-c", program(LISTER), *self._where(bucket)],
                               input=json.dumps(request).encode(), check=False, timeout=3600)
        self._answer(result, bucket, ["python3", "-c", "LISTER", *self._where(bucket)])
        infos = []
        for line in result.stdout.decode("utf-8", "surrogateescape").splitlines():
            if line.strip():
                found = json.loads(line)
                infos.append(ObjectInfo(found["key"], found["size"], found["sha256"], found.get("md5"),
                                        {"content_type": found.get("content_type")}))
        return infos

    # -- contract
    def list(self, bucket: str, prefix: str = ""):
        yield from sorted(self._listing(bucket, {"prefix": prefix}), key=lambda info: info.key)

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        found = self._listing(bucket, {"key": checked(key)})
        return found[0] if found else None

    @contextmanager
    def open_read(self, bucket: str, key: str):
        """The object as a stream from the reader on the host (open_many, one object): flow-controlled by the
        SSH window, so memory stays flat however large the object."""
        with self.open_many(bucket, [checked(key)]) as items:
            yield next(items)[1]

    @contextmanager
    def open_many(self, bucket: str, keys: list[str]):
        """Many objects through one stream from a program on the host (READER): no connection, process
        or round trip per object. Each stream is the object's bytes, exactly; an object that shrank while
        it was read fails its stream's end (objects.changed), one that is gone fails when it is reached."""
        request = "".join(json.dumps(checked(k)) + "\n" for k in keys).encode()
        try:
            with self.conn.bulk_read(["python3", "-c", program(READER), *self._where(bucket)], input=request) as stream:
                items = _frames(stream, self.conn.host, bucket, keys)
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
        checked(key)
        with self._sftp() as sftp:
            self._require(sftp, bucket)
            partial = partial_name()
            tmp = f"{self.root}/.tmp/{partial}"
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
                # What landed is hashed on the host and put in its key's place only if it is what was sent.
                placed = self._host_op(bucket, "place", {"tmp": partial, "key": key, "sha256": sha.hexdigest(),
                                                         "content_type": content_type})
                if placed.get("sha256") != sha.hexdigest():
                    raise VerificationFailed(f"object {key!r}: the copy on {self.conn.host} has SHA-256 "
                                             f"{placed.get('sha256')}, the stream had {sha.hexdigest()}; nothing was stored.")
            except BaseException:
                try:
                    sftp.remove(tmp)
                except OSError:
                    pass
                raise
        return ObjectInfo(key, written, sha.hexdigest(), None, {"content_type": content_type})

    def write_batch(self, bucket: str, items: list) -> list[ObjectInfo]:
        """Write many (small) objects through one channel to a writer on the host (toolkit/agents/batchwriter.py):
        no round trip per object. ``items``: (key, open_stream, size, content_type[, sha256]) with
        ``open_stream()`` a context manager; with the SHA-256 the source records for the object (given, or
        carried by the opened stream as ``recorded_sha256``), the client does not hash the stream again (and sends file-backed streams with sendfile): the host compares
        what landed with that one. Each object is renamed into place only after the host's SHA-256 of what landed
        equals the one of what was sent; returns their infos (in order)."""
        sent: dict[str, tuple[int, str]] = {}
        answer = bytearray()
        try:
            self._stream_batch(bucket, items, sent, answer)
        except (OSError, CommandFailed):
            with self._sftp() as sftp:  # the writer refuses a missing bucket (exit 3): say which
                self._require(sftp, bucket)
            raise
        results = {r["key"]: r for r in (json.loads(line) for line in answer.decode().splitlines() if line.strip())}
        infos, bad = [], []
        for key, (size, digest) in sent.items():
            got = results.get(key)
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

        return ["python3", "-c", batch_writer_program(), self.root, bucket, partial_name(), f"mode={oct(self.file_mode)}"]

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
        """Each object as a frame for the batch writer (toolkit/agents/batchwriter.py); ``sent``: key -> (size, SHA-256)."""
        for item in items:
            key, open_stream, size, content_type = item[:4]
            known = item[4] if len(item) > 4 else None  # the SHA-256 the source records, if any
            sink.write(json.dumps({"key": checked(key), "size": size, "content_type": content_type}).encode()
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
            sent[key] = (size, digest)

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
        self._host_op(bucket, "delete", {"key": checked(key)})

    def stats(self, bucket: str) -> tuple[int, int]:
        count, total = self._host_op(bucket, "stats")["stats"]
        return count, total


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


def _frames(stream, host: str, bucket: str, keys: list[str]):
    for key in keys:
        line = stream.readline()
        head = json.loads(line) if line.strip() else None
        if not isinstance(head, dict) or head.get("key") != key:
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


# The start of every program below: the bucket's places (exit 3: no such bucket; exit 4: the store's layout
# is not one this code reads, its reason as JSON on stderr; exit 5: something in the bucket is not an object).
OPEN = r'''
import json, stat, sys
root, bucket = sys.argv[1], sys.argv[2]
MODE = int(sys.argv[4], 8) if len(sys.argv) > 4 and sys.argv[4][:2] == "0o" else 0o600
ALONE = root.startswith("alone=")  # an adopted folder, the bucket by itself: read only, no meta caches
if ALONE:
    root = root[len("alone="):]


def fail(code, **why):
    sys.stderr.write("\n" + json.dumps(why) + "\n")
    sys.exit(code)


def places_of(bucket):
    if ALONE:
        if not os.path.isdir(root):
            sys.exit(3)
        return Bucket.alone(root, bucket)
    if not os.path.isdir(root + "/" + bucket):
        sys.exit(3)
    try:
        return Bucket(root, bucket, layout_of(root), MODE)
    except LayoutError as exc:
        fail(4, error=str(exc))
'''


# The host half of open_many (run as ``python3 -c program(READER) ROOT BUCKET``; the keys on stdin, one JSON
# string per line, read whole before anything is written). Per key: {"key", "size"}\n, the bytes, then
# {"ok": true}\n, or {"error": "changed"}\n after zeros padding a file that shrank meanwhile; or only
# {"key", "error": "missing"}\n.
READER = OPEN + r'''
places = places_of(bucket)
keys = [json.loads(line) for line in sys.stdin.buffer.read().splitlines() if line.strip()]
out = open(sys.stdout.fileno(), "wb", buffering=1 << 20, closefd=False)
SMALL = 256 << 10
for key in keys:
    fd = None
    try:
        found = places.find(key)
        fd = os.open(found[0], os.O_RDONLY | os.O_NOFOLLOW) if found else None
    except (OSError, ValueError):
        fd = None
    if fd is None:
        out.write((json.dumps({"key": key, "error": "missing"}) + "\n").encode())
        continue
    try:
        size = os.fstat(fd).st_size
        out.write((json.dumps({"key": key, "size": size}) + "\n").encode())
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


# The host half of listing (run as ``python3 -c program(LISTER) ROOT BUCKET``, the request on stdin:
# {"prefix": P} for the objects whose keys start with P, {"key": K} for one). Prints one JSON line per
# object: {key, size, sha256, md5, content_type}; an object without a fresh meta cache is hashed here and its
# cache kept (unless it changed while it was hashed).
LISTER = OPEN + r'''
import hashlib
places = places_of(bucket)
request = json.loads(sys.stdin.readline())
prefix, one = request.get("prefix", ""), request.get("key")
out = sys.stdout


def objects():
    if one is not None:
        found = places.find(one)
        if found:
            yield one, found[0], found[1]
        return
    for found in places.walk(prefix):
        yield found


try:
    for key, path, meta_path in objects():
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        # an adopted folder's files are hashed every time: its owner's, never given a cache
        fresh, anything = load_meta(path, meta_path, st) if meta_path else (None, None)
        if key is None:  # a hashed name: its key is in its cache
            key = (anything or {}).get("key")
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
            if meta_path and (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
                try:
                    store_meta(path, meta_path, fresh)
                except OSError:
                    pass  # a cache only: the next listing hashes it again
        out.write(json.dumps({"key": key, "size": st.st_size, "sha256": fresh["sha256"], "md5": fresh.get("md5"),
                              "content_type": fresh.get("content_type")}) + "\n")
except NotAnObject as exc:
    out.flush()
    fail(5, path=exc.path, what=exc.what)
out.flush()
'''


# One operation on the store (run as ``python3 -c program(HOST_OPS) ROOT BUCKET OP MODE``, its request as a
# JSON line on stdin; answers one JSON line):
#   create    the bucket's folders (a new store is marked nested first)   {}
#   place     a complete partial file .tmp/<tmp>, hashed here, put in <key>'s place if its SHA-256 is the
#             request's (else removed)                                    {"sha256": what landed}
#   delete    <key>'s object, wherever it is                              {}
#   stats     objects and bytes, nothing read                             {"stats": [n, bytes]}
#   layout    the store's layout                                          {"layout": 1 | 2}
#   convert   a flat store to nested paths                                {"moved": n}
HOST_OPS = OPEN + r'''
import hashlib
op = sys.argv[3]
request = json.loads(sys.stdin.readline() or "{}")
answer = {}
if ALONE and op != "stats":
    fail(4, error="an adopted folder is only read, never " + op)
try:
    if op == "convert":
        answer["moved"] = convert(root, MODE)
    elif op == "layout":
        try:
            answer["layout"] = layout_of(root, mark=False)
        except LayoutError:
            answer["layout"] = 0  # half converted
    elif op == "create":
        os.makedirs(root, mode=0o700, exist_ok=True)
        layout_of(root)
        for folder in (root + "/" + bucket, root + "/.meta/" + bucket, root + "/.tmp"):
            os.makedirs(folder, mode=0o700, exist_ok=True)
        places_of(bucket)
    else:
        places = places_of(bucket)
        if op == "delete":
            places.remove(places.places(request["key"]))
        elif op == "stats":
            answer["stats"] = list(places.stats())
        elif op == "place":
            tmp = root + "/.tmp/" + request["tmp"]
            if "/" in request["tmp"] or not request["tmp"].startswith("w-"):
                fail(4, error="refusing partial file name " + repr(request["tmp"]))
            sha = hashlib.sha256()
            with open(tmp, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    sha.update(chunk)
                os.fsync(handle.fileno())
            answer["sha256"] = sha.hexdigest()
            if answer["sha256"] != request["sha256"]:
                os.unlink(tmp)
            else:
                places.settle(tmp)
                data, meta, elsewhere = places.target(request["key"])
                st = os.stat(tmp)
                store_meta(tmp, meta, {"key": request["key"], "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                       "mtime_s": int(st.st_mtime), "sha256": answer["sha256"],
                                       "content_type": request.get("content_type")})
                os.replace(tmp, data)
                places.remove(elsewhere)
        else:
            fail(4, error="unknown operation " + repr(op))
except NotAnObject as exc:
    fail(5, path=exc.path, what=exc.what)
except LayoutError as exc:
    fail(4, error=str(exc))
print(json.dumps(answer))
'''
