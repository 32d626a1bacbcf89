"""Many objects written on a host through one SSH stream: the host half runs as ``python3 -c BATCH_WRITER
ROOT BUCKET PREFIX [named] [serve] [mode=0oNNN]`` (constant code; names and sizes come on stdin, never in argv) and the
client half streams frames to it. One batch ends at the end of the input; with "serve", each batch ends
with the line {"end": true} and is answered (after its objects are durable and in place) by its lines and
{"done": n}, and the writer waits for the next one: one connection, login and start for a copy's batches.

Frame per object, on the writer's stdin:
    {"key": <key>, "size": n, "content_type": ...}\\n
    <n bytes>
    {"sha256": <SHA-256 of the n bytes as the client sent them>}\\n
The host writes each object to a file with no name yet (O_TMPFILE in the bucket's folder; where the file
system cannot, or with the argument "named", a partial file under .tmp/), hashing what it receives. At the
end of the stream it makes every file durable at once (one syncfs of the filesystem, or an fsync per file
where syncfs is missing), then links (or renames) into its key's place (toolkit/stores/layout.py, whose text
runs ahead of this program with toolkit/stores/objmeta.py's) each one whose hash is the client's, with the
store's mode, the bucket folder's owner and its meta cache in the file's extended attribute (a file of its
own where the file system refuses), and syncs the folders; it answers one JSON line per object on stdout:
{"key", "size", "sha256"} or {"key", "error", "sha256"}. Exit 3 before reading anything: no
such bucket. A stream cut short (the client died) places nothing: unnamed files vanish with the process,
partial files are removed (or swept later: toolkit/stores/dirstore.py stale_partial). Every file stays open until
it is in place (the descriptor limit is raised to the hard limit).

Speed: stdin's pipe is enlarged (1 MiB where the kernel allows) and read through a 1 MiB buffer, and the
bytes are written to disk by a second thread while the first reads and hashes the next ones, so sshd is
not held up while a chunk is hashed or written (with one thread and a 64 KiB pipe, each chunk's hashing
and writing stalled the whole SSH stream). A large object's pages are handed to the disk every 8 MiB as
they arrive (sync_file_range, which waits for nothing), so the sync at the end has little left to write.
"""

BATCH_WRITER = r'''
import ctypes, fcntl, hashlib, json, os, queue, sys, threading
root, bucket, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
MODE = int(([a[5:] for a in sys.argv[4:] if a.startswith("mode=")] or ["0o600"])[-1], 8)
NAMED = "named" in sys.argv[4:]  # partial files named under .tmp/ even where unnamed ones can be made
SERVE = "serve" in sys.argv[4:]  # batch after batch, each ended by {"end": true} and answered with {"done": n}
SMALL = 256 << 10
data_dir, meta_dir, tmp_dir = root + "/" + bucket, root + "/.meta/" + bucket, root + "/.tmp"
if not os.path.isdir(data_dir):
    sys.exit(3)  # no such bucket: nothing made (the client says which)
places = Bucket(root, bucket, layout_of(root), MODE)
for d in (meta_dir, tmp_dir):
    os.makedirs(d, mode=0o700, exist_ok=True)
try:
    fcntl.fcntl(0, 1031, 1 << 20)  # F_SETPIPE_SZ: room for sshd to keep writing while this one works
except OSError:
    pass
src, out = open(0, "rb", buffering=1 << 20, closefd=False), sys.stdout
count = 0
room = 1024 - 32  # unnamed files held open at most (each stays open until it is in place)
try:
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    except (ValueError, OSError):
        pass
    room = resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 32
except ImportError:
    pass
held = 0
dir_fd = os.open(data_dir, os.O_RDONLY)
# files with no name until they are complete (a crash leaves none behind); linked through /proc
unnamed = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd") and not NAMED


def create(index):
    """(fd, partial name or None): an unnamed file in the bucket's folder where the file system makes
    them (no name to create under a folder lock, nothing to sweep after a crash), else .tmp/<name>."""
    global unnamed, held
    if unnamed and held < room:
        try:
            fd = os.open(data_dir, os.O_TMPFILE | os.O_WRONLY, 0o600)
            held += 1
            return fd, None
        except OSError:
            unnamed = False
    tmp = tmp_dir + "/" + prefix + "." + str(index)
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), tmp


def place(fd, tmp, path, index):
    """Give the complete file its name (a path), replacing an object of that name."""
    if tmp is None:
        try:
            # linkat with AT_SYMLINK_FOLLOW (a dir fd makes Python call linkat; the path is absolute all the same)
            os.link("/proc/self/fd/" + str(fd), path, dst_dir_fd=dir_fd)
            return
        except FileExistsError:  # an object replaced: named under .tmp/ first, then renamed over it
            tmp = tmp_dir + "/" + prefix + ".r" + str(index)
            os.link("/proc/self/fd/" + str(fd), tmp, dst_dir_fd=dir_fd)
    os.replace(tmp, path)


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
        fd, data, close = job
        try:
            if data is None:
                offsets.pop(fd, None)
                if close:
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


def finish_writes():
    pending.put(None)
    thread.join()
    if failed:
        raise failed[0]


ended = False
while not ended:  # one batch (the only one unless SERVE)
    landed, failed, held, folders = [], [], 0, {data_dir}
    pending = queue.Queue(16)  # (fd, bytes, _) to write, (fd, None, close?) after its last bytes, None to stop
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        while True:
            line = src.readline()
            if not line:
                ended = True
                break
            head = json.loads(line)
            if head.get("end"):
                break
            name, size = head["key"], int(head["size"])
            try:
                check_key(name)
            except ValueError:
                raise SystemExit("batch writer: refusing key " + repr(name))
            count += 1
            fd, tmp = create(count)
            landed.append([head, tmp, None, None, fd])
            if size <= SMALL:  # written here: handing it to the thread costs more than it saves
                data = src.read(size)
                if len(data) != size:
                    raise EOFError("stream ended inside " + name)
                sha = hashlib.sha256(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if tmp is not None:  # a named file is reopened by its name when needed
                    os.close(fd)
                    landed[-1][4] = None
            else:
                sha, left = hashlib.sha256(), size
                try:
                    while left:
                        chunk = src.read(min(left, 1 << 20))
                        if not chunk:
                            raise EOFError("stream ended inside " + name)
                        sha.update(chunk)
                        pending.put((fd, chunk, False))
                        left -= len(chunk)
                finally:
                    pending.put((fd, None, tmp is not None))
                    if tmp is not None:
                        landed[-1][4] = None
            if failed:
                raise failed[0]
            landed[-1][2] = sha.hexdigest()
            landed[-1][3] = json.loads(src.readline())["sha256"]
        finish_writes()
        # Everything received: durable first, then given its name.
        synced = False
        if landed:
            try:
                synced = libc.syncfs(dir_fd) == 0
            except AttributeError:
                synced = False
        for index, entry in enumerate(landed):
            head, tmp, got, want, fd = entry
            if not synced:
                if fd is None:
                    with open(tmp, "rb") as handle:
                        os.fsync(handle.fileno())
                else:
                    os.fsync(fd)
            key = head["key"]
            if got != want:
                if tmp is not None:
                    os.unlink(tmp)
                out.write(json.dumps({"key": key, "error": "sha256 differs", "sha256": got}) + "\n")
                continue
            target = tmp if fd is None else fd
            places.settle(target)
            path, meta_path, elsewhere = places.target(key)
            st = os.stat(target)  # the cache rides with the file (its attribute) into place
            store_meta(target, meta_path, {"key": key, "size": int(head["size"]),
                                           "mtime_ns": st.st_mtime_ns, "mtime_s": int(st.st_mtime),
                                           "sha256": got, "content_type": head.get("content_type")})
            place(fd, tmp, path, index)
            places.remove(elsewhere)
            folders.add(os.path.dirname(path))
            folders.add(os.path.dirname(meta_path))
            entry[1] = None  # in place: nothing to remove if a later one fails
            out.write(json.dumps({"key": key, "size": int(head["size"]), "sha256": got}) + "\n")
        for d in sorted(folders):
            try:
                fd = os.open(d, os.O_RDONLY)
            except OSError:  # a meta folder never made (every cache in an attribute)
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if SERVE and not ended:  # this batch is in place; the next may follow
            out.write(json.dumps({"done": len(landed)}) + "\n")
        out.flush()
    except BaseException:
        if thread.is_alive():
            pending.put(None)
            thread.join()
        for entry in landed:  # unnamed files vanish with their descriptors
            if entry[1] is not None and os.path.exists(entry[1]):
                os.unlink(entry[1])
        raise
    finally:
        for entry in landed:
            if entry[4] is not None:
                try:
                    os.close(entry[4])
                except OSError:
                    pass
'''


def batch_writer_program() -> str:
    """The host half's code: the meta cache's and the layout's functions (toolkit/stores/objmeta.py,
    toolkit/stores/layout.py), then the writer."""
    from toolkit.stores.layout import host_program

    return host_program(BATCH_WRITER)
