"""The media gateway (toolkit/agents/mediaserver.py) as a real process on loopback: what an app writes through it
is what Lifeboat's directory store reads (same layout, same names, same bytes), a request without the token
is refused, a body that ends early stores nothing, and chirp's HTTP media backend round-trips through it."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from urllib.parse import quote

import pytest

from toolkit.agents import mediaserver
from toolkit.stores.dirstore import DirectoryStore

from .awslab import free_port, wait_http
from .conftest import CHIRP

KEYS = ["photo.jpg", "a/b/c.txt", ".hidden", "~tilde", "café ☕/レポート.pdf", "a+b=c&d?e#f", "x" * 300, "%41",
        "../escape", "."]


@pytest.fixture
def gateway(tmp_path):
    root = tmp_path / "objects"
    store = DirectoryStore(root)
    store.create_bucket("media")
    token = tmp_path / "token"
    token.write_bytes(b"s3cr3t-token\n")
    token.chmod(0o600)
    with running_gateway(root, token, "--mode", "0o640") as port:
        yield {"url": f"http://127.0.0.1:{port}/media", "port": port, "store": store}


@contextmanager
def running_gateway(root, token_file, *args: str):
    """The media gateway serving the store at ``root`` on a free port here (its port), started as it runs on
    the storage host: the layout's text ahead of its own (providers/common/media.py)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", mediaserver.program(), "--bind", "127.0.0.1", "--port", str(port),
                             "--root", str(root), "--token-file", str(token_file), *args], cwd="/")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=20)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def request(port: int, method: str, path: str, body: bytes | None = None, token: str | None = "s3cr3t-token",
            headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    sent = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    conn.request(method, path, body=body, headers=sent)
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_writes_land_in_the_directory_store_layout(gateway):
    store, port = gateway["store"], gateway["port"]
    for i, key in enumerate(KEYS):
        data = os.urandom(i * 1000 + (3 << 20 if i == 1 else 0))
        status, body = request(port, "PUT", f"/media/{quote(key, safe='')}", data)
        assert status == 201, body
        assert json.loads(body) == {"key": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        info = store.head("media", key)
        assert info is not None and info.sha256 == hashlib.sha256(data).hexdigest() and info.size == len(data)
        status, got = request(port, "GET", f"/media/{quote(key, safe='')}")
        assert status == 200 and got == data
    assert sorted(o.key for o in store.list("media")) == sorted(KEYS)
    status, body = request(port, "GET", "/media/")
    assert status == 200 and json.loads(body)["keys"] == sorted(KEYS)
    store.write("media", "from lifeboat", io.BytesIO(b"written by the store"))
    assert request(port, "GET", f"/media/{quote('from lifeboat')}") == (200, b"written by the store")
    assert request(port, "DELETE", f"/media/{quote('from lifeboat')}")[0] == 204
    assert store.head("media", "from lifeboat") is None
    assert request(port, "GET", "/media/nothing-here")[0] == 404
    assert request(port, "GET", "/other/x")[0] == 404


def test_token_is_required(gateway):
    port = gateway["port"]
    assert request(port, "PUT", "/media/k", b"data", token=None)[0] == 401
    assert request(port, "PUT", "/media/k", b"data", token="wrong")[0] == 401
    assert request(port, "GET", "/media/", token=None)[0] == 401
    assert gateway["store"].head("media", "k") is None


def test_a_body_that_ends_early_stores_nothing(gateway, tmp_path):
    port = gateway["port"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"PUT /media/short HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cr3t-token\r\n"
                     b"Content-Length: 100000\r\n\r\n" + b"x" * 5000)
        sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(4096)
    assert b" 400 " in answer.split(b"\r\n")[0]
    assert gateway["store"].head("media", "short") is None
    assert not list((tmp_path / "objects" / ".tmp").iterdir())


def test_chirps_http_backend_round_trips(gateway, monkeypatch):
    monkeypatch.syspath_prepend(str(CHIRP))
    monkeypatch.setenv("BUCKET_MEDIA_URL", gateway["url"])
    monkeypatch.setenv("BUCKET_MEDIA_TOKEN", "s3cr3t-token")
    from chirp import storage

    media = storage.media()
    data = os.urandom(2 << 20)
    assert media.put("up/café.bin", io.BytesIO(data)) == (len(data), hashlib.sha256(data).hexdigest())
    stream, size = media.open("up/café.bin")
    with stream:
        assert size == len(data) and stream.read() == data
    assert list(media.keys()) == ["up/café.bin"]
    with pytest.raises(FileNotFoundError):
        media.open("missing")
    assert gateway["store"].head("media", "up/café.bin").sha256 == hashlib.sha256(data).hexdigest()


def test_a_path_the_proxy_serves_is_read_as_the_client_encoded_it(gateway):
    """The TLS proxy forwards /raw/<key> untouched with X-Lifeboat-Serve "/raw/ media/" (serve:): the key is
    the rest of the path, however encoded (? and # in keys included), after the key prefix the header gives;
    a query is dropped, the bucket's root is never listed, and the type is the stored or guessed one."""
    store, port = gateway["store"], gateway["port"]
    keys = {"seed/#hash?.txt": b"hash", "a b/\u00fc.png": b"\x89PNG", "attachments/2026/x.webp": b"RIFF"}
    for key, data in keys.items():
        assert request(port, "PUT", f"/media/{quote(key, safe='')}", data)[0] == 201
    served = {"X-Lifeboat-Serve": "/raw/ media/"}
    for key, data in keys.items():
        status, body = request(port, "GET", "/raw/" + quote(key) + "?v=1", headers=served)
        assert (status, body) == (200, data), key
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request("GET", "/raw/a%20b/%C3%BC.png", headers={"Authorization": "Bearer s3cr3t-token", **served})
    assert conn.getresponse().getheader("Content-Type") == "image/png"
    prefixed = {"X-Lifeboat-Serve": "/attachments/ media/attachments/"}
    assert request(port, "GET", "/attachments/2026/x.webp", headers=prefixed) == (200, b"RIFF")
    for path in ("/raw/", "/raw/?list-type=2", "/raw"):
        assert request(port, "GET", path, headers=served)[0] == 404, path
    assert request(port, "GET", "/raw/" + quote("seed/#hash?.txt"), headers=served, token=None)[0] == 401
    assert store.head("media", "seed/#hash?.txt").size == 4  # (stored as the key says)
