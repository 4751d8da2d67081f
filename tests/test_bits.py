"""Packed latent bits: pack/unpack over the contract's flat index, .bldz and .npy files."""

import os
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bld_runtime.bits import (
    MAGIC,
    load_bits,
    pack_bits,
    packed_bytes,
    save_bits,
    unpack_bits,
)
from bld_runtime.errors import PackedBitsError


def random_bits(batch, tokens, channels, seed=0):
    return np.random.default_rng(seed).integers(0, 2, (batch, tokens, channels), dtype=np.uint8)


def test_packing_order_is_little_over_the_flat_index():
    bits = np.zeros((1, 2, 8), dtype=np.uint8)
    bits[0, 0, 0] = 1  # e = 0 -> byte 0, bit 0 (value 1)
    bits[0, 0, 7] = 1  # e = 7 -> byte 0, bit 7 (value 128)
    bits[0, 1, 1] = 1  # e = 1*8 + 1 = 9 -> byte 1, bit 1 (value 2)
    assert pack_bits(bits).tolist() == [[129, 2]]


def test_paper_latent_is_2048_bytes():
    bits = random_bits(3, 16 * 16, 64)
    packed = pack_bits(bits)
    assert packed.shape == (3, 2048) and packed.dtype == np.uint8
    assert packed_bytes(256, 64) == 2048
    assert np.array_equal(unpack_bits(packed, (256, 64)), bits)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    tokens=st.integers(1, 12),
    channels=st.integers(1, 11),
    seed=st.integers(0, 2**32 - 1),
)
def test_pack_unpack_round_trip(batch, tokens, channels, seed):
    bits = random_bits(batch, tokens, channels, seed)
    packed = pack_bits(bits)
    assert packed.shape == (batch, -(-tokens * channels // 8))
    out = unpack_bits(packed, (tokens, channels))
    assert out.dtype == np.uint8 and np.array_equal(out, bits)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    height=st.integers(1, 5),
    width=st.integers(1, 5),
    channels=st.integers(1, 13),
    suffix=st.sampled_from([".bldz", ".npy"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_file_round_trip(tmp_path_factory, batch, height, width, channels, suffix, seed):
    path = tmp_path_factory.mktemp("bits") / f"z{suffix}"
    bits = random_bits(batch, height * width, channels, seed)
    assert save_bits(path, bits, (height, width)) == path
    assert np.array_equal(load_bits(path, (height, width, channels)), bits)
    if suffix == ".bldz":  # self-describing: no shape needed
        assert np.array_equal(load_bits(path), bits)


def test_bldz_layout(tmp_path):
    bits = random_bits(2, 4 * 4, 32)
    path = save_bits(tmp_path / "z.bldz", bits, (4, 4))
    data = path.read_bytes()
    payload = pack_bits(bits).tobytes()
    assert data[:4] == b"BLDZ" and data[4] == 1
    assert struct.unpack_from("<5I", data, 5) == (2, 4, 4, 32, zlib.crc32(payload))
    assert data[25:] == payload and len(payload) == 2 * 64


def test_npy_is_a_plain_packed_array(tmp_path):
    bits = random_bits(2, 9, 5)
    path = save_bits(tmp_path / "z.npy", bits, (3, 3))
    assert np.array_equal(np.load(path, allow_pickle=False), pack_bits(bits))


def test_accepts_bool_and_float_zero_one():
    bits = random_bits(1, 4, 3)
    assert np.array_equal(pack_bits(bits.astype(bool)), pack_bits(bits))
    assert np.array_equal(pack_bits(bits.astype(np.float32)), pack_bits(bits))


@pytest.fixture
def saved(tmp_path):
    bits = random_bits(2, 4 * 4, 8)
    return save_bits(tmp_path / "z.bldz", bits, (4, 4)), bits


def load_error(path, latent=(4, 4, 8)):
    with pytest.raises(PackedBitsError) as info:
        load_bits(path, latent)
    return str(info.value)


def test_corrupt_bldz_files(saved, tmp_path):
    path, _ = saved
    data = path.read_bytes()
    bad = tmp_path / "bad.bldz"
    messages = {}

    bad.write_bytes(b"PK\x03\x04" + data[4:])
    messages["magic"] = load_error(bad)
    assert messages["magic"] == f"{bad} is not a .bldz bits file (bad magic bytes)"

    bad.write_bytes(b"NOPE")  # short and not ours at all
    assert load_error(bad) == messages["magic"]

    bad.write_bytes(data[:10])
    messages["short-header"] = load_error(bad)
    assert messages["short-header"] == f"{bad} is truncated: its header has 10 of 25 bytes"

    bad.write_bytes(data[:-3])
    messages["truncated"] = load_error(bad)
    assert messages["truncated"] == (
        f"{bad} is truncated: its payload has 29 bytes, the header's shape needs 32"
    )

    bad.write_bytes(data + b"\0")
    messages["too-long"] = load_error(bad)
    assert "is too long: its payload has 33 bytes" in messages["too-long"]

    flipped = bytearray(data)
    flipped[-1] ^= 0x10
    bad.write_bytes(bytes(flipped))
    messages["crc"] = load_error(bad)
    assert messages["crc"].startswith(f"{bad} is corrupt: the payload's crc32 is ")
    assert f"the header says {zlib.crc32(data[25:]):08x}" in messages["crc"]

    bad.write_bytes(MAGIC + bytes([2]) + data[5:])
    messages["version"] = load_error(bad)
    assert messages["version"] == f"{bad} is .bldz version 2; this runtime reads version 1"

    messages["shape"] = load_error(path, (4, 4, 16))
    assert messages["shape"] == f"{path} holds 4x4x8 latents but the bundle expects 4x4x16"

    bad.write_bytes(data[:13] + struct.pack("<I", 0) + data[17:])  # width 0
    messages["empty"] = load_error(bad)
    assert "header has an empty latent shape 4x0x8" in messages["empty"]

    messages["missing"] = load_error(tmp_path / "nope.bldz")
    assert messages["missing"] == f"bits file {tmp_path / 'nope.bldz'} does not exist"

    messages["suffix"] = load_error(tmp_path / "z.png")
    assert messages["suffix"] == f"{tmp_path / 'z.png'}: bits files end in .bldz or .npy, not .png"

    assert len(set(messages.values())) == len(messages)  # each failure reads differently


def test_padding_bits_must_be_zero(tmp_path):
    bits = random_bits(1, 3, 3)  # 9 bits -> 2 bytes, 7 pad bits
    packed = pack_bits(bits)
    packed[0, 1] |= 0x80
    with pytest.raises(PackedBitsError, match="padding bits of the last byte are not zero"):
        unpack_bits(packed, (3, 3))
    path = tmp_path / "z.npy"
    np.save(path, packed)
    with pytest.raises(PackedBitsError, match=f"^{path}: packed bits are corrupt"):
        load_bits(path, (1, 3, 3))


def test_bad_npy_files(tmp_path):
    path = save_bits(tmp_path / "z.npy", random_bits(2, 16, 8), (4, 4))
    assert load_error(path, (4, 4, 16)) == (
        f"{path} has 16 bytes per image but the bundle's 4x4x16 latent packs into 32"
    )
    with pytest.raises(PackedBitsError, match="does not record the latent shape"):
        load_bits(path)
    np.save(path, np.zeros((2, 16), dtype=np.int64))
    assert (
        load_error(path) == f"{path} must hold a 2-D uint8 array of packed bits, got int64 (2, 16)"
    )
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    # refused from its header: never unpickled
    assert load_error(path) == f"{path} must hold a 2-D uint8 array of packed bits, got object (1,)"
    path.write_bytes(b"\x93NUMPY garbage")
    assert load_error(path).startswith(f"{path} is not a readable .npy file (")


def test_save_rejects_bad_bits_and_leaves_no_file(tmp_path):
    target = tmp_path / "z.bldz"
    bits = random_bits(1, 4, 2)
    bits[0, 2, 1] = 2
    with pytest.raises(PackedBitsError, match=r"^bits must be 0 or 1, found the value 2$"):
        save_bits(target, bits, (2, 2))
    with pytest.raises(PackedBitsError, match="bits must be 0 or 1"):
        save_bits(target, np.full((1, 4, 2), 0.5), (2, 2))
    with pytest.raises(
        PackedBitsError, match=r"bits must have shape \(batch, L, C\), got \(4, 2\)"
    ):
        save_bits(target, bits[0], (2, 2))
    with pytest.raises(
        PackedBitsError, match=r"latent_hw \(2, 3\) has 6 tokens but the bits have 4"
    ):
        save_bits(target, random_bits(1, 4, 2), (2, 3))
    assert os.listdir(tmp_path) == []


def test_overwrite_is_atomic(saved):
    path, bits = saved
    with pytest.raises(PackedBitsError):
        save_bits(path, np.full((2, 16, 8), 7, dtype=np.uint8), (4, 4))
    assert np.array_equal(load_bits(path), bits)  # the old file is intact
    new = random_bits(1, 16, 8, seed=5)
    save_bits(path, new, (4, 4))
    assert np.array_equal(load_bits(path), new)
    assert os.listdir(path.parent) == [path.name]  # no temporary files left
    assert os.stat(path).st_mode & 0o777 == 0o644
