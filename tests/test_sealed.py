"""Sealed streams (toolkit/stores/sealed.py): what goes in comes out; any change, cut, extension, move or other key
fails to open. Pure: no servers."""

from __future__ import annotations

import io
import os

import pytest

from toolkit.stores import sealed
from toolkit.stores.sealed import CHUNK, Opening, RepositoryKey, Sealing, Tampered, new_params, sealed_size

PARAMS = {**new_params(), "n": 1 << 10}  # cheap derivation for tests


@pytest.fixture(scope="module")
def key():
    return RepositoryKey(b"operator secret", PARAMS)


def seal(data: bytes, key, name="stack/backups/1/database.dump", read=7000) -> bytes:
    sealing = Sealing(io.BytesIO(data), key, name)
    out = bytearray()
    while chunk := sealing.read(read):  # odd read sizes, as a store's uploader would ask
        out += chunk
    assert sealing.plain_bytes == len(data) and sealing.sealed_bytes == len(out)
    return bytes(out)


def unseal(data: bytes, key, name="stack/backups/1/database.dump") -> bytes:
    return Opening(io.BytesIO(data), key, name).read()


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5])
def test_round_trip_and_size(key, size):
    data = os.urandom(size)
    box = seal(data, key, read=65536)
    assert len(box) == sealed_size(size)
    assert unseal(box, key) == data


def test_changed_byte_anywhere_fails(key):
    box = bytearray(seal(os.urandom(2 * CHUNK + 10), key))
    for offset in (0, 5, 30, CHUNK + 40, len(box) - 1):
        bad = bytearray(box)
        bad[offset] ^= 1
        with pytest.raises(Tampered):
            unseal(bytes(bad), key)


def test_cut_at_a_chunk_boundary_or_extended_fails(key):
    data = os.urandom(2 * CHUNK)
    box = seal(data, key)
    header = len(sealed.MAGIC) + sealed.SALT
    one_chunk = header + CHUNK + sealed.TAG
    with pytest.raises(Tampered):
        unseal(box[:one_chunk], key)  # the first chunk alone was not sealed as the last one
    with pytest.raises(Tampered):
        unseal(box + box[header:header + CHUNK + sealed.TAG], key)
    with pytest.raises(Tampered):
        unseal(box[:header], key)


def test_moved_under_another_name_or_other_key_fails(key):
    box = seal(b"rows", key)
    with pytest.raises(Tampered):
        unseal(box, key, name="stack/backups/2/database.dump")
    with pytest.raises(Tampered):
        unseal(box, RepositoryKey(b"another secret", PARAMS))


def test_check_value_tells_keys_apart(key):
    assert key.check_value() == RepositoryKey(b"operator secret", PARAMS).check_value()
    assert key.check_value() != RepositoryKey(b"operator secret ", PARAMS).check_value()
    assert key.mac("blob:abc") != key.check_value()
