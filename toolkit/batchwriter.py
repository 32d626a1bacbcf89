"""Many objects written on a host through one SSH stream: the host half runs as ``python3 -c BATCH_WRITER
ROOT BUCKET PREFIX`` (constant code; names and sizes come on stdin, never in argv) and the client half
streams frames to it.

Frame per object, on the writer's stdin:
    {"name": <encoded file name>, "key": <key>, "size": n, "content_type": ...}\\n
    <n bytes>
    {"sha256": <SHA-256 of the n bytes as the client sent them>}\\n
The host writes each object to a partial file under .tmp/, hashing what it receives. At the end of the
stream it makes every partial file durable at once (one syncfs of the filesystem, or an fsync per file
where syncfs is missing), then renames into place each one whose hash is the client's, its meta cache
in the file's extended attribute (toolkit/objmeta.py, whose text runs ahead of this program; a file of its
own where the file system refuses), and syncs the folders; it answers one JSON line per object on stdout:
{"name", "size", "sha256"} or {"name", "error", "sha256"}. Exit 3 before reading anything: no such bucket. A stream cut short (the client died) renames nothing: the partial files are
removed.

Speed: stdin's pipe is enlarged (1 MiB where the kernel allows) and read through a 1 MiB buffer, and the
bytes are written to disk by a second thread while the first reads and hashes the next ones, so sshd is
not held up while a chunk is hashed or written (with one thread and a 64 KiB pipe, each chunk's hashing
and writing stalled the whole SSH stream). A large object's pages are handed to the disk every 8 MiB as
they arrive (sync_file_range, which waits for nothing), so the sync at the end has little left to write.
"""

BATCH_WRITER = r'''
import ctypes, fcntl, hashlib, json, os, queue, sys, threading
root, bucket, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
SMALL = 256 << 10
data_dir, meta_dir, tmp_dir = root + "/" + bucket, root + "/.meta/" + bucket, root + "/.tmp"
if not os.path.isdir(data_dir):
    sys.exit(3)  # no such bucket: nothing made (the client says which)
for d in (meta_dir, tmp_dir):
    os.makedirs(d, mode=0o700, exist_ok=True)
try:
    fcntl.fcntl(0, 1031, 1 << 20)  # F_SETPIPE_SZ: room for sshd to keep writing while this one works
except OSError:
    pass
src, out = open(0, "rb", buffering=1 << 20, closefd=False), sys.stdout
count, landed, failed = 0, [], []
pending = queue.Queue(16)  # (fd, bytes) to write, (fd, None) to close, None to stop


libc = ctypes.CDLL(None, use_errno=True)
try:  # starts writing a large object's pages to disk while it arrives, so the final sync has little left
    flush_range = libc.sync_file_range
    flush_range.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
except AttributeError:
    flush_range = None
FLUSH_EVERY = 8 << 20


def writer():
    offsets = {}
    while True:
        job = pending.get()
        if job is None:
            return
        fd, data = job
        try:
            if data is None:
                offsets.pop(fd, None)
                os.close(fd)
            elif not failed:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                done = offsets.get(fd, 0) + len(data)
                offsets[fd] = done
                if flush_range is not None and done % FLUSH_EVERY < len(data):
                    flush_range(fd, done - done % FLUSH_EVERY - FLUSH_EVERY, FLUSH_EVERY, 2)  # SYNC_FILE_RANGE_WRITE
        except BaseException as exc:
            failed.append(exc)


thread = threading.Thread(target=writer, daemon=True)
thread.start()


def finish_writes():
    pending.put(None)
    thread.join()
    if failed:
        raise failed[0]


try:
    while True:
        line = src.readline()
        if not line:
            break
        head = json.loads(line)
        name, size = head["name"], int(head["size"])
        if not name or "/" in name or name.startswith(".") or name in ("..", "."):
            raise SystemExit("batch writer: refusing file name " + repr(name))
        count += 1
        tmp = tmp_dir + "/" + prefix + "." + str(count)
        landed.append([head, tmp, None, None])
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        if size <= SMALL:  # written here: handing it to the thread costs more than it saves
            try:
                data = src.read(size)
                if len(data) != size:
                    raise EOFError("stream ended inside " + name)
                sha = hashlib.sha256(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        else:
            sha, left = hashlib.sha256(), size
            try:
                while left:
                    chunk = src.read(min(left, 1 << 20))
                    if not chunk:
                        raise EOFError("stream ended inside " + name)
                    sha.update(chunk)
                    pending.put((fd, chunk))
                    left -= len(chunk)
            finally:
                pending.put((fd, None))
        if failed:
            raise failed[0]
        landed[-1][2] = sha.hexdigest()
        landed[-1][3] = json.loads(src.readline())["sha256"]
    finish_writes()
    # Everything received: durable first, then renamed into place.
    synced = False
    if landed:
        try:
            fd = os.open(tmp_dir, os.O_RDONLY)
            try:
                synced = libc.syncfs(fd) == 0
            finally:
                os.close(fd)
        except (OSError, AttributeError):
            synced = False
    for head, tmp, got, want in landed:
        if not synced:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        name = head["name"]
        if got != want:
            os.unlink(tmp)
            out.write(json.dumps({"name": name, "error": "sha256 differs", "sha256": got}) + "\n")
            continue
        st = os.stat(tmp)  # the cache rides with the file (its attribute; objmeta) into place
        store_meta(tmp, meta_dir + "/" + name, {"key": head["key"], "size": int(head["size"]),
                                                "mtime_ns": st.st_mtime_ns, "mtime_s": int(st.st_mtime),
                                                "sha256": got, "content_type": head.get("content_type")})
        os.replace(tmp, data_dir + "/" + name)
        out.write(json.dumps({"name": name, "size": int(head["size"]), "sha256": got}) + "\n")
    for d in (data_dir, meta_dir):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    out.flush()
except BaseException:
    if thread.is_alive():
        pending.put(None)
        thread.join()
    for entry in landed:
        if os.path.exists(entry[1]):
            os.unlink(entry[1])
    raise
'''


def batch_writer_program() -> str:
    """The host half's code: the meta cache's functions (toolkit/objmeta.py), then the writer."""
    from .objmeta import source

    return source() + BATCH_WRITER
