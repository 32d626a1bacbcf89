"""Many small objects written on a host through one SSH channel: the host half runs as ``python3 -c
BATCH_WRITER ROOT BUCKET PREFIX`` (constant code; names and sizes come on stdin, never in argv) and the
client half streams frames to it.

Frame per object, on the writer's stdin:
    {"name": <encoded file name>, "key": <key>, "size": n, "content_type": ...}\\n
    <n bytes>
    {"sha256": <SHA-256 of the n bytes as the client sent them>}\\n
For each object the host writes a partial file under .tmp/, fsyncs it, hashes what landed, and renames it
into place only if that hash is the client's (then writes its meta); it answers one JSON line per object
on stdout: {"name", "size", "sha256"} or {"name", "error", "sha256"}. A stream cut short (the client died)
leaves nothing but the partial file being written, which the writer removes.
"""

BATCH_WRITER = r'''
import hashlib, json, os, sys
root, bucket, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
data_dir, meta_dir, tmp_dir = root + "/" + bucket, root + "/.meta/" + bucket, root + "/.tmp"
for d in (meta_dir, tmp_dir):
    os.makedirs(d, mode=0o700, exist_ok=True)
src, out = sys.stdin.buffer, sys.stdout
count, tmp = 0, None
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
        sha, left = hashlib.sha256(), size
        with open(tmp, "wb") as f:
            while left:
                chunk = src.read(min(left, 1 << 20))
                if not chunk:
                    raise EOFError("stream ended inside " + name)
                sha.update(chunk)
                f.write(chunk)
                left -= len(chunk)
            f.flush()
            os.fsync(f.fileno())
        want = json.loads(src.readline())["sha256"]
        got = sha.hexdigest()
        if got != want:
            os.unlink(tmp)
            tmp = None
            out.write(json.dumps({"name": name, "error": "sha256 differs", "sha256": got}) + "\n")
            continue
        path = data_dir + "/" + name
        os.replace(tmp, path)
        tmp = None
        meta = {"key": head["key"], "size": size, "mtime_s": int(os.stat(path).st_mtime), "sha256": got,
                "content_type": head.get("content_type")}
        mtmp = meta_dir + "/.m-" + prefix + "." + str(count)
        with open(mtmp, "w") as f:
            f.write(json.dumps(meta))
        os.replace(mtmp, meta_dir + "/" + name)
        out.write(json.dumps({"name": name, "size": size, "sha256": got}) + "\n")
    out.flush()
except BaseException:
    if tmp is not None and os.path.exists(tmp):
        os.unlink(tmp)
    raise
'''
