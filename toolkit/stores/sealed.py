"""Sealed streams for backups: encrypted and authenticated as they flow, never whole in memory.

A repository key is derived from the operator's secret with scrypt (its salt and parameters live in the
repository; the secret never does). From it come two keys: one that encrypts, one that names and
authenticates (HMAC). Each sealed stream has its own key, derived with HKDF from the encryption key, a
random salt in the stream's header and the stream's name in the repository, so a part cannot be swapped
for another or moved under another name without failing to open.

Format of a sealed stream: ``b"LBX1"`` + 16 bytes of salt, then chunks of ``CHUNK`` plaintext bytes (the
last one shorter, possibly empty), each AES-256-GCM with a 16-byte tag; the nonce is the chunk's number
and whether it is the last, so a stream cut short or extended does not open either. Any changed byte
fails the chunk it is in (:class:`Tampered`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from abc import ABC, abstractmethod

from toolkit.contract import read_full

MAGIC = b"LBX1"
SALT = 16
CHUNK = 1 << 20
TAG = 16


class Tampered(Exception):
    """A sealed stream does not open: changed, cut short, moved, or sealed with another key."""


class WrongKey(Exception):
    """The key given does not open this repository."""


def new_params() -> dict:
    """scrypt parameters and a fresh salt for a new repository (about 64 MB and 0.2 s to derive)."""
    return {"kdf": "scrypt", "n": 1 << 16, "r": 8, "p": 1, "salt": os.urandom(16).hex()}


class RepositoryKey:
    """The two keys of a repository, derived from the operator's secret."""

    def __init__(self, secret: bytes, params: dict):
        if params.get("kdf") != "scrypt":
            raise WrongKey(f"unknown key derivation {params.get('kdf')!r}")
        master = hashlib.scrypt(secret, salt=bytes.fromhex(params["salt"]), n=int(params["n"]),
                                r=int(params["r"]), p=int(params["p"]), maxmem=256 << 20, dklen=64)
        self._enc, self._mac = master[:32], master[32:]

    def check_value(self) -> str:
        """What the repository records to tell a wrong key from a tampered part."""
        return self.mac("lifeboat-repository-check")

    def mac(self, text: str | bytes) -> str:
        data = text.encode() if isinstance(text, str) else text
        return hmac.new(self._mac, data, hashlib.sha256).hexdigest()

    def stream_key(self, salt: bytes, name: str) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        return HKDF(hashes.SHA256(), 32, salt, b"lifeboat-stream:" + name.encode()).derive(self._enc)


def _nonce(index: int, last: bool) -> bytes:
    return struct.pack(">QI", index, 1 if last else 0)


def sealed_size(plain: int) -> int:
    """Bytes a stream of ``plain`` bytes takes sealed."""
    return len(MAGIC) + SALT + (plain // CHUNK + 1) * TAG + plain


class Produced(ABC):
    """A readable stream of bytes a subclass makes on demand: ``_fill()`` appends to ``_out`` (or sets
    ``_ended``); ``read(n)`` gives them out as asked."""

    def __init__(self):
        self._out = bytearray()
        self._ended = False

    @abstractmethod
    def _fill(self) -> None: ...

    def read(self, n: int = -1) -> bytes:
        while not self._ended and (n < 0 or len(self._out) < n):
            self._fill()
        if n < 0 or n >= len(self._out):
            data, self._out = bytes(self._out), bytearray()
        else:
            data = bytes(self._out[:n])
            del self._out[:n]
        return data


class Sealing(Produced):
    """Reads ``stream`` (plaintext) and gives the sealed bytes; counts and hashes the plaintext it read."""

    def __init__(self, stream, key: RepositoryKey, name: str):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        super().__init__()
        salt = os.urandom(SALT)
        self._aead = AESGCM(key.stream_key(salt, name))
        self._stream = stream
        self._out += MAGIC + salt
        self._index = 0
        self.plain_bytes = 0
        self.plain_sha256 = hashlib.sha256()
        self.sealed_bytes = 0
        self.sealed_sha256 = hashlib.sha256()

    def _fill(self) -> None:
        chunk = read_full(self._stream, CHUNK)
        last = len(chunk) < CHUNK
        self.plain_bytes += len(chunk)
        self.plain_sha256.update(chunk)
        self._out += self._aead.encrypt(_nonce(self._index, last), chunk, None)
        self._index += 1
        self._ended = last

    def read(self, n: int = -1) -> bytes:
        data = super().read(n)
        self.sealed_bytes += len(data)
        self.sealed_sha256.update(data)
        return data


class Opening(Produced):
    """Reads a sealed ``stream`` and gives the plaintext, raising :class:`Tampered` at the first chunk that
    does not authenticate (before any of its bytes are given out) and at an early end."""

    def __init__(self, stream, key: RepositoryKey, name: str):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        super().__init__()
        self._stream, self._name = stream, name
        head = read_full(stream, len(MAGIC) + SALT)
        if len(head) < len(MAGIC) + SALT or not head.startswith(MAGIC):
            raise Tampered(f"{name}: not a sealed Lifeboat stream")
        self._aead = AESGCM(key.stream_key(head[len(MAGIC):], name))
        self._index = 0
        self._pending = read_full(stream, CHUNK + TAG)
        self.plain_bytes = 0
        self.plain_sha256 = hashlib.sha256()

    def _fill(self) -> None:
        from cryptography.exceptions import InvalidTag

        sealed = self._pending
        self._pending = read_full(self._stream, CHUNK + TAG)
        last = not self._pending
        if len(sealed) < TAG:
            raise Tampered(f"{self._name}: cut short")
        try:
            chunk = self._aead.decrypt(_nonce(self._index, last), sealed, None)
        except InvalidTag:
            raise Tampered(f"{self._name}: chunk {self._index} does not authenticate (changed, cut short or "
                           "sealed for another name)") from None
        self._index += 1
        self._ended = last
        self.plain_bytes += len(chunk)
        self.plain_sha256.update(chunk)
        self._out += chunk

    def drain(self) -> None:
        """Read to the end (authenticating every chunk), discarding the plaintext."""
        while not self._ended:
            self._fill()
            self._out.clear()


def open_bytes(data: bytes, key: RepositoryKey, name: str) -> bytes:
    import io

    return Opening(io.BytesIO(data), key, name).read()
