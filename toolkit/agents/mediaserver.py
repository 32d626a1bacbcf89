"""The media gateway: a small HTTP server Lifeboat runs on the storage host (python3, standard library only)
so that apps on the other hosts read and write the stack's buckets, which are files on that host in
Lifeboat's directory-store layout (docs/object-layout.md). Apps on the storage host itself use the files.

    GET    /<bucket>/<key>   the object (Content-Length, X-Sha256 when known), 404 when absent
    HEAD   /<bucket>/<key>   the same without the body
    PUT    /<bucket>/<key>   store the body (Content-Length required): written to .tmp, fsynced, renamed
                             into place; 201 with {"key", "size", "sha256"}; a short body stores nothing
    DELETE /<bucket>/<key>   204
    GET    /<bucket>/        {"keys": [...]}, sorted
    GET    /healthz          "ok" (no token needed)

Keys are percent-encoded in the path. Every other request needs ``Authorization: Bearer <token>``, the
token read from a 0600 file at start (never on the command line). It listens on the host's private
address only; docs/app-contract.md says what apps are given (``BUCKET_<NAME>_URL`` = http://..., and
``BUCKET_<NAME>_TOKEN``).

Usage: python3 mediaserver.py --bind ADDRESS --port PORT --root OBJECTS_DIR --token-file PATH
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import socket
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote

CHUNK = 1 << 20
MAX_NAME = 240


def encode_key(key: str) -> str:
    """The file name of a key: toolkit.stores.dirstore.encode_key (tests hold the two to the same answers)."""
    if not key or len(key.encode("utf-8")) > 1024:
        raise ValueError("object keys are 1 to 1024 bytes of UTF-8")
    name = quote(key, safe=" ")
    if name.startswith((".", "~")):
        name = f"%{ord(name[0]):02X}" + name[1:]
    if len(name.encode()) > MAX_NAME:
        return "~" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    return name


class Handler(BaseHTTPRequestHandler):
    root = ""
    token = b""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # the supervisor keeps a log; requests are not logged (keys)
        pass

    def _reply(self, code: int, body: bytes = b"", ctype: str = "application/json", extra=None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _target(self):
        """(bucket directory, bucket, key or None) of an authorised request; None after replying."""
        given = (self.headers.get("Authorization") or "").removeprefix("Bearer ").encode()
        if not hmac.compare_digest(given, self.token):
            self._reply(401, b'{"error": "unauthorised"}')
            return None
        bucket, _, key = self.path.lstrip("/").partition("/")
        bucket = unquote(bucket)
        directory = os.path.join(self.root, bucket)
        if not bucket or bucket.startswith(".") or "/" in bucket or not os.path.isdir(directory):
            self._reply(404, b'{"error": "no such bucket"}')
            return None
        return directory, bucket, unquote(key) or None

    def _file(self, directory: str, key: str) -> str | None:
        try:
            return os.path.join(directory, encode_key(key))
        except ValueError:
            self._reply(400, b'{"error": "bad key"}')
            return None

    def do_GET(self) -> None:  # noqa: N802 - http.server's names
        if self.path == "/healthz":
            return self._reply(200, b"ok", "text/plain")
        found = self._target()
        if found is None:
            return None
        directory, bucket, key = found
        if key is None:
            return self._reply(200, json.dumps({"keys": sorted(self._keys(directory, bucket))}).encode())
        path = self._file(directory, key)
        if path is None:
            return None
        try:
            handle = open(path, "rb")
        except (FileNotFoundError, IsADirectoryError):
            return self._reply(404, b'{"error": "no such key"}')
        with handle:
            size = os.fstat(handle.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if self.command == "HEAD":
                return None
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                self.wfile.write(chunk)
        return None

    do_HEAD = do_GET  # noqa: N815

    def _keys(self, directory: str, bucket: str):
        for entry in os.scandir(directory):
            if not entry.is_file(follow_symlinks=False):
                continue
            if not entry.name.startswith("~"):
                yield unquote(entry.name)
                continue
            key = None  # a hashed name: the key is in the meta cache (the file's attribute, or a file of its own)
            try:
                key = json.loads(os.getxattr(entry.path, "user.lifeboat.meta"))["key"]
            except (OSError, ValueError, KeyError, TypeError):
                try:
                    with open(os.path.join(self.root, ".meta", bucket, entry.name)) as meta:
                        key = json.load(meta)["key"]
                except (OSError, ValueError, KeyError, TypeError):
                    pass
            if key is not None:
                yield key

    def do_PUT(self) -> None:  # noqa: N802
        found = self._target()
        if found is None or found[2] is None:
            return None if found is None else self._reply(400, b'{"error": "no key"}')
        directory, bucket, key = found
        path = self._file(directory, key)
        length = self.headers.get("Content-Length")
        if path is None or length is None or not length.isdigit():
            return None if path is None else self._reply(411, b'{"error": "Content-Length required"}')
        size, digest = int(length), hashlib.sha256()
        tmpdir = os.path.join(self.root, ".tmp")
        os.makedirs(tmpdir, mode=0o700, exist_ok=True)
        tmp = os.path.join(tmpdir, f"w-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}")
        try:
            with open(tmp, "xb") as out:
                left = size
                while left:
                    chunk = self.rfile.read(min(CHUNK, left))
                    if not chunk:
                        break
                    digest.update(chunk)
                    out.write(chunk)
                    left -= len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if not left:
                os.replace(tmp, path)
                tmp = ""
        finally:
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)
        if left:  # answered only once the partial file is gone: "nothing was stored" holds when it arrives
            self.close_connection = True
            return self._reply(400, b'{"error": "the body ended early; nothing was stored"}')
        meta = os.path.join(self.root, ".meta", bucket, os.path.basename(path))
        if os.path.exists(meta):
            os.unlink(meta)  # a cache of the old bytes; Lifeboat recomputes it
        if os.path.basename(path).startswith("~"):  # a hashed name needs its key kept
            os.makedirs(os.path.dirname(meta), mode=0o700, exist_ok=True)
            with open(meta, "w") as handle:
                json.dump({"key": key}, handle)
        body = json.dumps({"key": key, "size": size, "sha256": digest.hexdigest()}).encode()
        return self._reply(201, body)

    def do_DELETE(self) -> None:  # noqa: N802
        found = self._target()
        if found is None or found[2] is None:
            return None if found is None else self._reply(400, b'{"error": "no key"}')
        path = self._file(found[0], found[2])
        if path is None:
            return None
        for doomed in (path, os.path.join(self.root, ".meta", found[1], os.path.basename(path))):
            if os.path.exists(doomed):
                os.unlink(doomed)
        return self._reply(204)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Lifeboat's media gateway on the storage host")
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--token-file", required=True)
    args = parser.parse_args(argv)
    with open(args.token_file, "rb") as handle:
        Handler.token = handle.read().strip()
    Handler.root = args.root
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
