"""The media gateway: a small HTTP server Lifeboat runs on the storage host (python3, standard library only)
so that apps on the other hosts read and write the stack's buckets, which are files on that host in
Lifeboat's directory-store layout (docs/object-layout.md: a key is a path). Apps on the storage host itself
use the files. It runs as ``python3 -c`` of toolkit/stores/objmeta.py's and toolkit/stores/layout.py's text
followed by this file's (:func:`program`), so where a key's file is comes from one definition.

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

Usage: python3 mediaserver.py --bind ADDRESS --port PORT --root OBJECTS_DIR --token-file PATH [--mode 0o644]
"""

import argparse
import hashlib
import hmac
import json
import mimetypes
import os
import socket
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote

CHUNK = 1 << 20
# Set by the TLS proxy (over the client's) on requests for a path the stack serves from a bucket:
# "PATH-PREFIX BUCKET/KEY-PREFIX". The rest of the path, as the client encoded it, after the prefix's
# segments is the key (after KEY-PREFIX); only requests with the token are read at all.
SERVED_HEADER = "X-Lifeboat-Serve"


class Handler(BaseHTTPRequestHandler):
    root = ""
    token = b""
    mode = 0o600
    s3_keys: dict = {}  # no S3 API unless the gateway is given key pairs
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

    def _s3(self) -> bool:
        """Serve the request through the S3 API (toolkit/agents/s3api.py) when it is signed for it."""
        if not s3_signed(self):  # noqa: F821 - s3api's, ahead of this text
            return False
        s3_serve(self)  # noqa: F821
        return True

    def do_POST(self) -> None:  # noqa: N802
        if not self._s3():
            self._reply(405, b'{"error": "POST is for the S3 API"}')

    def _target(self):
        """(the bucket's places, bucket, key or None) of an authorised request; None after replying."""
        given = (self.headers.get("Authorization") or "").removeprefix("Bearer ").encode()
        if not hmac.compare_digest(given, self.token):
            self._reply(401, b'{"error": "unauthorised"}')
            return None
        path = self.path.split("?", 1)[0]  # (a query is not the key's)
        served = self.headers.get(SERVED_HEADER)
        if served:  # the TLS proxy serving a path from a bucket: "PATH-PREFIX BUCKET/KEY-PREFIX"
            prefix, _, where = served.partition(" ")
            bucket, _, key_prefix = where.partition("/")
            depth = len([s for s in prefix.split("/") if s])  # (however the client encoded them)
            rest = path.lstrip("/").split("/", depth)
            if len(rest) <= depth or not rest[depth]:
                self._reply(404, b'{"error": "no such key"}')  # never a listing through the proxy
                return None
            key = quote(key_prefix + "/".join(unquote(s) for s in rest[depth].split("/")))
        else:
            bucket, _, key = path.lstrip("/").partition("/")
        bucket = unquote(bucket)
        directory = os.path.join(self.root, bucket)
        if not bucket or bucket.startswith(".") or "/" in bucket or not os.path.isdir(directory):
            self._reply(404, b'{"error": "no such bucket"}')
            return None
        key = unquote(key) or None
        try:
            places = Bucket(self.root, bucket, layout_of(self.root, mark=False), self.mode)  # noqa: F821 - layout's
            if key is not None:
                check_key(key)  # noqa: F821
        except LayoutError as exc:  # noqa: F821
            self._reply(503, json.dumps({"error": str(exc)}).encode())
            return None
        except ValueError:
            self._reply(400, b'{"error": "bad key"}')
            return None
        return places, bucket, key

    def do_GET(self) -> None:  # noqa: N802 - http.server's names
        if self.path == "/healthz":
            return self._reply(200, b"ok", "text/plain")
        if self._s3():
            return None
        found = self._target()
        if found is None:
            return None
        places, bucket, key = found
        if key is None:
            try:
                keys = sorted(self._keys(places))
            except NotAnObject as exc:  # noqa: F821 - layout's
                return self._reply(409, json.dumps({"error": str(exc)}).encode())
            return self._reply(200, json.dumps({"keys": keys}).encode())
        where = places.find(key)
        try:
            handle = open(where[0], "rb") if where else None
        except (FileNotFoundError, IsADirectoryError):
            handle = None
        if handle is None:
            return self._reply(404, b'{"error": "no such key"}')
        with handle:
            size = os.fstat(handle.fileno()).st_size
            stored = (load_meta(where[0], where[1])[1] or {}).get("content_type") if where[1] else None  # noqa: F821
            self.send_response(200)
            self.send_header("Content-Type", stored or mimetypes.guess_type(key)[0] or "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if self.command == "HEAD":
                return None
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                self.wfile.write(chunk)
        return None

    do_HEAD = do_GET  # noqa: N815

    def _keys(self, places):
        for key, data, meta in places.walk():
            if key is None:  # a hashed name: the key is in its meta cache
                key = (load_meta(data, meta)[1] or {}).get("key")  # noqa: F821 - objmeta's
            if key is not None:
                yield key

    def do_PUT(self) -> None:  # noqa: N802
        if self._s3():
            return None
        found = self._target()
        if found is None or found[2] is None:
            return None if found is None else self._reply(400, b'{"error": "no key"}')
        places, bucket, key = found
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return self._reply(411, b'{"error": "Content-Length required"}')
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
                place_object(places, key, tmp, digest.hexdigest(), None,  # noqa: F821 - s3api's
                             self.headers.get("Content-Type"))
                tmp = ""
        finally:
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)
        if left:  # answered only once the partial file is gone: "nothing was stored" holds when it arrives
            self.close_connection = True
            return self._reply(400, b'{"error": "the body ended early; nothing was stored"}')
        body = json.dumps({"key": key, "size": size, "sha256": digest.hexdigest()}).encode()
        return self._reply(201, body)

    def do_DELETE(self) -> None:  # noqa: N802
        if self._s3():
            return None
        found = self._target()
        if found is None or found[2] is None:
            return None if found is None else self._reply(400, b'{"error": "no key"}')
        places, _, key = found
        places.remove(places.places(key))
        return self._reply(204)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Lifeboat's media gateway on the storage host")
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--mode", default="0o600", help="of the files it writes (folders: x wherever r is)")
    parser.add_argument("--s3-keys", help="a 0600 JSON file {access key id: secret}: the S3 API's key pairs")
    args = parser.parse_args(argv)
    Handler.mode = int(args.mode, 8)
    if args.s3_keys:
        with open(args.s3_keys) as handle:
            Handler.s3_keys = json.load(handle)
    with open(args.token_file, "rb") as handle:
        Handler.token = handle.read().strip()
    Handler.root = args.root
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


def program():
    """The gateway's code as it runs: the meta cache's and the layout's functions, then this file's."""
    from toolkit.agents import s3api
    from toolkit.stores.layout import host_program

    with open(s3api.__file__, encoding="utf-8") as api, open(__file__, encoding="utf-8") as handle:
        return host_program(api.read() + handle.read())


if __name__ == "__main__":
    main()
