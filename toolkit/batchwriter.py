"""Many objects written on a host through one SSH stream: the host half runs as ``python3 -c BATCH_WRITER
ROOT BUCKET PREFIX`` (constant code; names and sizes come on stdin, never in argv) and the client half
streams frames to it.

Frame per object, on the writer's stdin:
    {"name": <encoded file name>, "key": <key>, "size": n, "content_type": ...}\\n
    <n bytes>
    {"sha256": <SHA-256 of the n bytes as the client sent them>}\\n
The host writes each object to a partial file under .tmp/, hashing what it receives. At the end of the
stream it makes every partial file durable at once (one syncfs of the filesystem, or an fsync per file
where syncfs is missing), then renames into place each one whose hash is the client's, writes its meta,
and syncs the folders; it answers one JSON line per object on stdout: {"name", "size", "sha256"} or
{"name", "error", "sha256"}. A stream cut short (the client died) renames nothing: the partial files are
removed.
"""

BATCH_WRITER = r'''
import ctypes, hashlib, json, os, sys
root, bucket, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
data_dir, meta_dir, tmp_dir = root + "/" + bucket, root + "/.meta/" + bucket, root + "/.tmp"
for d in (meta_dir, tmp_dir):
    os.makedirs(d, mode=0o700, exist_ok=True)
src, out = sys.stdin.buffer, sys.stdout
count, landed = 0, []
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
        sha, left = hashlib.sha256(), size
        with open(tmp, "wb") as f:
            while left:
                chunk = src.read(min(left, 1 << 20))
                if not chunk:
                    raise EOFError("stream ended inside " + name)
                sha.update(chunk)
                f.write(chunk)
                left -= len(chunk)
        landed[-1][2] = sha.hexdigest()
        landed[-1][3] = json.loads(src.readline())["sha256"]
    # Everything received: durable first, then renamed into place.
    synced = False
    if landed:
        try:
            fd = os.open(tmp_dir, os.O_RDONLY)
            try:
                synced = ctypes.CDLL(None, use_errno=True).syncfs(fd) == 0
            finally:
                os.close(fd)
        except (OSError, AttributeError):
            synced = False
    for index, (head, tmp, got, want) in enumerate(landed):
        if not synced:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        name = head["name"]
        if got != want:
            os.unlink(tmp)
            out.write(json.dumps({"name": name, "error": "sha256 differs", "sha256": got}) + "\n")
            continue
        path = data_dir + "/" + name
        os.replace(tmp, path)
        meta = {"key": head["key"], "size": int(head["size"]), "mtime_s": int(os.stat(path).st_mtime),
                "sha256": got, "content_type": head.get("content_type")}
        mtmp = meta_dir + "/.m-" + prefix + "." + str(index)
        with open(mtmp, "w") as f:
            f.write(json.dumps(meta))
        os.replace(mtmp, meta_dir + "/" + name)
        out.write(json.dumps({"name": name, "size": int(head["size"]), "sha256": got}) + "\n")
    for d in (data_dir, meta_dir):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    out.flush()
except BaseException:
    for entry in landed:
        if os.path.exists(entry[1]):
            os.unlink(entry[1])
    raise
'''
