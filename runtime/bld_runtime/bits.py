"""Packed latent bits on disk: `.npy` (a packed uint8 array) and `.bldz` (self-describing).

Bits are (B, L, C) uint8 0/1; packing follows the sampling contract, section 1:
`numpy.packbits(..., bitorder="little")` over each image's flat index e = token * C + c, so a
16x16x64 latent is exactly 2048 bytes.

.bldz layout, little-endian:
    magic  b"BLDZ"                      4 bytes
    version                             uint8 (1)
    batch, height, width, bits          4 x uint32 (the latent is height x width tokens of `bits`)
    crc32 of the payload                uint32
    payload                             batch x ceil(height*width*bits / 8) packed bytes
A `.npy` file holds only the packed (B, bytes) array, so reading it needs the bundle's latent shape.
Files are written to a temporary name and renamed, so an error never leaves a partial file;
`BitsWriter` streams a .bldz file chunk by chunk the same way. Readers check the sizes a header
claims against the file before reading or allocating anything.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import zlib
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

from .errors import PackedBitsError
from .files import TMP_SUFFIX, atomic_write, open_input

MAGIC = b"BLDZ"
VERSION = 1
_HEADER = struct.Struct("<4sB4II")  # magic, version, (batch, height, width, bits), crc32
MAX_LATENTS = 2**32 - 1  # the most a .bldz holds: its header's batch is a uint32
SUFFIXES = (".bldz", ".npy")


def packed_bytes(tokens: int, bits: int) -> int:
    """Bytes per image of a packed L x C latent.

    Args:
        tokens: L, the latent's tokens (height x width).
        bits: C, the bits per token.

    Returns:
        ceil(L * C / 8).
    """
    return -(-tokens * bits // 8)


def pack_bits(bits: npt.ArrayLike) -> NDArray[np.uint8]:
    """(B, L, C) 0/1 values -> uint8 (B, ceil(L*C/8)), little bit order over the flat index.

    Args:
        bits: (B, L, C) values that are all 0 or 1 (any integer dtype, or bool).

    Returns:
        uint8 (B, packed_bytes(L, C)); the pad bits of each row's last byte are 0.

    Raises:
        PackedBitsError: `bits` is not 3-D or holds a value other than 0 and 1.
    """
    array = np.asarray(bits)
    if array.ndim != 3:
        raise PackedBitsError(f"bits must have shape (batch, L, C), got {array.shape}")
    if array.dtype != np.bool_ and not np.isin(array, (0, 1)).all():
        found = array[(array != 0) & (array != 1)].flat[0].item()
        raise PackedBitsError(f"bits must be 0 or 1, found the value {found}")
    return np.packbits(array.reshape(len(array), -1).astype(bool), axis=1, bitorder="little")


def unpack_bits(packed: npt.ArrayLike, latent_shape: tuple[int, int]) -> NDArray[np.uint8]:
    """uint8 (B, ceil(L*C/8)) -> uint8 0/1 (B, L, C) for latent_shape (L, C).

    Args:
        packed: uint8 (B, packed_bytes(L, C)), as `pack_bits` makes.
        latent_shape: (L, C): tokens and bits per token.

    Returns:
        uint8 0/1 (B, L, C).

    Raises:
        PackedBitsError: `packed` is not 2-D uint8, its rows have another length, or a pad
            bit is set.
    """
    tokens, channels = latent_shape
    n = tokens * channels
    array = np.asarray(packed)
    if array.dtype != np.uint8 or array.ndim != 2:
        raise PackedBitsError(
            f"packed bits must be a 2-D uint8 array, got {array.dtype} {array.shape}"
        )
    if array.shape[1] != packed_bytes(tokens, channels):
        raise PackedBitsError(
            f"packed bits have {array.shape[1]} bytes per image but a "
            f"{tokens}x{channels} latent packs into "
            f"{packed_bytes(tokens, channels)}"
        )
    bits = np.unpackbits(array, axis=1, bitorder="little")
    if bits[:, n:].any():  # the pad bits of the last byte are written as 0
        raise PackedBitsError(
            "packed bits are corrupt: the padding bits of the last byte are not zero"
        )
    return bits[:, :n].reshape(len(array), tokens, channels)


def save_bits(
    path: str | os.PathLike[str], bits: npt.ArrayLike, latent_hw: tuple[int, int]
) -> Path:
    """Write (B, L, C) bits to `path` (.bldz or .npy) atomically; latent_hw = (H, W), H*W = L.

    Args:
        path: The file; its suffix, .bldz or .npy, chooses the format.
        bits: (B, L, C) 0/1 values.
        latent_hw: The latent's (height, width) in tokens, recorded in a .bldz header.

    Returns:
        The path written.

    Raises:
        PackedBitsError: Another suffix, bits that are not (B, L, C) 0/1, or H * W != L.
        OSError: The file cannot be written.
    """
    path = Path(path)
    kind = _kind(path)
    packed = pack_bits(bits)
    batch, tokens, channels = np.shape(bits)
    height, width = (int(v) for v in latent_hw)
    if height * width != tokens:
        raise PackedBitsError(
            f"latent_hw ({height}, {width}) has {height * width} tokens but the bits have {tokens}"
        )
    if kind == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, packed, allow_pickle=False)
        atomic_write(path, buffer.getvalue())
    else:
        payload = packed.tobytes()
        header = _HEADER.pack(MAGIC, VERSION, batch, height, width, channels, zlib.crc32(payload))
        atomic_write(path, header + payload)
    return path


def load_bits(
    path: str | os.PathLike[str], latent: tuple[int, int, int] | None = None
) -> NDArray[np.uint8]:
    """Read bits saved by `save_bits` as uint8 (B, L, C).

    latent = the bundle's (H, W, C): a .bldz file must match it; a .npy file needs it.

    The header (and a .npy file's array header) is checked against the file's size before
    anything is allocated; a .bldz payload's crc32 is checked before it is unpacked.

    Args:
        path: A .bldz or .npy file.
        latent: The bundle's latent (height, width, bits); optional for .bldz (then the
            file's own shape is returned), required for .npy.

    Returns:
        uint8 0/1 (B, H*W, C).

    Raises:
        PackedBitsError: The file is missing, unreadable, truncated, too long, corrupt (crc32,
            pad bits), of another version or latent shape, empty, or a .npy without `latent`.
    """
    path = Path(path)
    kind = _kind(path)
    if not path.exists():
        raise PackedBitsError(f"bits file {path} does not exist")
    if kind == ".npy" and latent is None:
        raise PackedBitsError(
            f"{path} is a .npy file, which does not record the latent "
            "shape; give the bundle's (H, W, C)"
        )
    with open_input(path, "bits file", PackedBitsError) as f:
        if kind == ".npy":
            assert latent is not None
            return _load_npy(path, f, latent)
        return _load_bldz(path, f, latent)


def _load_bldz(path: Path, f: BinaryIO, latent: tuple[int, int, int] | None) -> NDArray[np.uint8]:
    size = os.fstat(f.fileno()).st_size
    head = f.read(_HEADER.size)
    if len(head) < _HEADER.size:
        if not MAGIC.startswith(head[: len(MAGIC)]):
            raise PackedBitsError(f"{path} is not a .bldz bits file (bad magic bytes)")
        raise PackedBitsError(
            f"{path} is truncated: its header has {len(head)} of {_HEADER.size} bytes"
        )
    magic, version, batch, height, width, channels, crc = _HEADER.unpack(head)
    if magic != MAGIC:
        raise PackedBitsError(f"{path} is not a .bldz bits file (bad magic bytes)")
    if version != VERSION:
        raise PackedBitsError(
            f"{path} is .bldz version {version}; this runtime reads version {VERSION}"
        )
    if min(height, width, channels) < 1:
        raise PackedBitsError(
            f"{path} is corrupt: its header has an empty latent shape {height}x{width}x{channels}"
        )
    if batch < 1:
        raise PackedBitsError(f"{path} holds no latents (its header says batch 0)")
    if latent is not None and (height, width, channels) != tuple(latent):
        raise PackedBitsError(
            f"{path} holds {height}x{width}x{channels} latents but the "
            f"bundle expects {'x'.join(map(str, latent))}"
        )
    expected = batch * packed_bytes(height * width, channels)
    if size - _HEADER.size != expected:  # before reading: a header may claim terabytes
        state = "truncated" if size - _HEADER.size < expected else "too long"
        raise PackedBitsError(
            f"{path} is {state}: its payload has {size - _HEADER.size} "
            f"bytes, the header's shape needs {expected}"
        )
    payload = f.read(expected)
    if len(payload) != expected:
        raise PackedBitsError(f"{path} changed while it was read")
    if zlib.crc32(payload) != crc:
        raise PackedBitsError(
            f"{path} is corrupt: the payload's crc32 is "
            f"{zlib.crc32(payload):08x}, the header says {crc:08x}"
        )
    packed = np.frombuffer(payload, dtype=np.uint8).reshape(batch, -1)
    return _unpack(path, packed, (height * width, channels))


def _load_npy(path: Path, f: BinaryIO, latent: tuple[int, int, int]) -> NDArray[np.uint8]:
    """A .npy of packed rows: its header is checked against the latent and the file's size
    before numpy allocates anything; object arrays are never unpickled."""
    height, width, channels = latent
    row_bytes = packed_bytes(height * width, channels)
    try:
        major, _ = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    except (ValueError, OSError, EOFError, SyntaxError) as e:
        raise PackedBitsError(f"{path} is not a readable .npy file ({e})") from None
    if dtype != np.uint8 or len(shape) != 2 or fortran:
        raise PackedBitsError(
            f"{path} must hold a 2-D uint8 array of packed bits, got {dtype} {shape}"
        )
    if shape[0] < 1:
        raise PackedBitsError(f"{path} holds no latents (its array has 0 rows)")
    if shape[1] != row_bytes:
        raise PackedBitsError(
            f"{path} has {shape[1]} bytes per image but the bundle's "
            f"{height}x{width}x{channels} latent packs into {row_bytes}"
        )
    if os.fstat(f.fileno()).st_size - offset != shape[0] * shape[1]:
        raise PackedBitsError(
            f"{path} is truncated or too long for the {shape[0]}x{shape[1]} "
            "array its header describes"
        )
    f.seek(0)
    try:
        packed = np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise PackedBitsError(f"{path} is not a readable .npy file ({e})") from None
    if not isinstance(packed, np.ndarray) or packed.dtype != np.uint8 or packed.shape != shape:
        raise PackedBitsError(f"{path} changed while it was read")
    return _unpack(path, packed, (height * width, channels))


class BitsWriter:
    """Stream (B, L, C) bits into a .bldz file chunk by chunk; `close()` publishes it.

        with BitsWriter(path, (H, W), C) as writer:
            for bits in chunks: writer.write(bits)

    The payload goes to a temporary file beside `path`; closing writes the header (batch and
    crc32 are known only then) and renames it into place, so `path` only ever holds a complete
    file. Each `write` is flushed before it counts: a write that fails (a full disk) leaves the
    latents written before it, and `close(keep=True)` publishes exactly those. Leaving the block
    with an error discards the temporary file.

    Args:
        path: The .bldz file to publish.
        latent_hw: The latent's (height, width) in tokens.
        bits: C, the bits per token.

    Raises:
        PackedBitsError: `path` does not end in .bldz.
        OSError: The temporary file cannot be created beside `path`.
    """

    def __init__(self, path: str | os.PathLike[str], latent_hw: tuple[int, int], bits: int):
        self.path = Path(path)
        if self.path.suffix != ".bldz":
            raise PackedBitsError(f"{self.path}: streamed bits files end in .bldz")
        self.height, self.width = (int(v) for v in latent_hw)
        self.channels, self.count, self.crc = int(bits), 0, 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=TMP_SUFFIX
        )
        self._tmp = Path(name)
        # Unbuffered: a write that fails (a full disk) must not leave bytes in a buffer that a
        # later seek or close would try to write again.
        self._file: io.FileIO | None = io.FileIO(fd, "wb")
        _write_all(self._file, b"\0" * _HEADER.size)  # the header is written last

    def write(self, bits: npt.ArrayLike) -> None:
        """Append a chunk of latents.

        Args:
            bits: (B, H*W, C) 0/1 values.

        Raises:
            PackedBitsError: The writer is closed, or the chunk has another latent shape or
                a value other than 0 and 1.
            OSError: The write failed (the latents written before it still count).
        """
        if self._file is None:
            raise PackedBitsError(f"{self.path} is closed")
        if np.shape(bits)[1:] != (self.height * self.width, self.channels):
            raise PackedBitsError(
                f"bits have shape {np.shape(bits)}; this file holds "
                f"{self.height * self.width}x{self.channels} latents"
            )
        packed = pack_bits(bits)
        payload = packed.tobytes()
        _write_all(self._file, payload)  # only what reached the file counts
        self.crc = zlib.crc32(payload, self.crc)
        self.count += len(packed)

    def close(self, keep: bool = True) -> Path | None:
        """Publish the file (keep) or discard it; publishing nothing (0 latents) discards.

        Closing again does nothing more.

        Args:
            keep: Publish the latents written so far; False discards them.

        Returns:
            The path when the file was published, None when it was discarded.

        Raises:
            OSError: The header, the fsync or the rename failed (nothing is published).
        """
        if self._file is None:
            return self.path if keep else None
        f, self._file = self._file, None
        try:
            if keep and self.count:
                rows = self.count * packed_bytes(self.height * self.width, self.channels)
                f.truncate(_HEADER.size + rows)  # drop whatever a failed write left
                f.seek(0)
                _write_all(
                    f,
                    _HEADER.pack(
                        MAGIC, VERSION, self.count, self.height, self.width, self.channels, self.crc
                    ),
                )
                os.fsync(f.fileno())
                f.close()
                os.chmod(self._tmp, 0o644)
                os.replace(self._tmp, self.path)
                return self.path
        finally:
            if not f.closed:
                f.close()
            self._tmp.unlink(missing_ok=True)
        return None

    def __enter__(self) -> BitsWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(keep=exc_type is None)


def _write_all(f: io.FileIO, data: bytes) -> None:
    """Write all of `data` to an unbuffered file (a raw write may write only part of it)."""
    view = memoryview(data)
    while view:
        written = f.write(view)
        if not written:
            raise OSError(f"cannot write to {f.name}")
        view = view[written:]


def _unpack(
    path: Path, packed: NDArray[np.uint8], latent_shape: tuple[int, int]
) -> NDArray[np.uint8]:
    try:
        return unpack_bits(packed, latent_shape)
    except PackedBitsError as e:
        raise PackedBitsError(f"{path}: {e}") from None


def _kind(path: Path) -> str:
    if path.suffix not in SUFFIXES:
        suffix = path.suffix or "no suffix"
        raise PackedBitsError(f"{path}: bits files end in .bldz or .npy, not {suffix}")
    return path.suffix
