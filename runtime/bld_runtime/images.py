"""Images at the runtime's boundary: uint8 <-> float conversion, PNG files and grids.

The user-facing layout is uint8 NHWC (N, H, W, channels); the graphs take float32 NCHW in
[-1, 1]. The conversion is the project's convention: x = u8 / 127.5 - 1 and
u8 = clip(round((x + 1) * 127.5), 0, 255). PNGs are encoded in memory and written with
manifest.atomic_write (temporary file + rename), so a failed write leaves no partial file.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from .errors import InvalidRequestError
from .manifest import atomic_write

MODES = {1: "L", 3: "RGB"}  # PNG mode per channel count


def to_float(images_u8: np.ndarray) -> np.ndarray:
    """uint8 in [0, 255] -> float32 in [-1, 1], same layout."""
    return np.asarray(images_u8, np.uint8).astype(np.float32) / np.float32(127.5) - np.float32(1)


def from_float(x: np.ndarray) -> np.ndarray:
    """float in [-1, 1] -> uint8, rounding half to even and clipping, same layout."""
    scaled = (np.asarray(x, np.float32) + np.float32(1)) * np.float32(127.5)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


def nhwc_to_nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))


# --- files --------------------------------------------------------------------------------


def save_png(path, image: np.ndarray) -> Path:
    """Write one uint8 image (H, W, 1 or 3) as a PNG (mode L or RGB)."""
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in MODES:
        raise InvalidRequestError(
            f"an image to save must be uint8 (H, W, 1 or 3), got {image.dtype} {image.shape}")
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)  # L or RGB
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buffer.getvalue())
    return path


def _open(path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()  # close() releases the pixels of `img` itself
    except (OSError, UnidentifiedImageError) as e:
        raise InvalidRequestError(f"cannot read image {path}: {e}") from None


def load_png(path, height: int, width: int, channels: int) -> np.ndarray:
    """Read an image file as uint8 (H, W, channels); its size and mode must match exactly.

    No resizing or colour conversion happens here: a silent conversion would change what the
    encoder sees, so a mismatch is the caller's to fix.
    """
    img = _open(path)
    want = MODES.get(channels)
    if img.mode != want:
        raise InvalidRequestError(
            f"image {path} has mode {img.mode}; this bundle needs {want} images "
            f"({channels} channel{'s' if channels > 1 else ''})")
    if img.size != (width, height):
        raise InvalidRequestError(
            f"image {path} is {img.size[0]}x{img.size[1]}; this bundle needs {width}x{height}")
    return np.asarray(img, np.uint8).reshape(height, width, channels)


def load_mask(path, height: int, width: int) -> np.ndarray:
    """Read an inpainting mask as bool (H, W): True (white, >= 128) where to regenerate."""
    img = _open(path)
    if img.mode not in ("1", "L"):
        raise InvalidRequestError(
            f"mask {path} has mode {img.mode}; it must be a black-and-white or grayscale image")
    if img.size != (width, height):
        raise InvalidRequestError(
            f"mask {path} is {img.size[0]}x{img.size[1]}; it must be {width}x{height}, "
            f"the size of the image")
    return np.asarray(img.convert("L"), np.uint8) >= 128


def make_grid(images: np.ndarray, rows: int | None = None, cols: int | None = None,
              pad: int = 2) -> np.ndarray:
    """Tile uint8 images (N, H, W, ch) into one (rows, cols) image with `pad` black pixels."""
    images = np.asarray(images, np.uint8)
    if images.ndim != 4 or len(images) == 0:
        raise InvalidRequestError(f"a grid needs images shaped (N, H, W, ch), N >= 1, "
                                  f"got {images.shape}")
    n, h, w, ch = images.shape
    if cols is None:
        cols = math.ceil(n / rows) if rows else math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, ch), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top : top + h, left : left + w] = image
    return grid


def save_grid(path, images: np.ndarray, rows: int | None = None, cols: int | None = None) -> Path:
    return save_png(path, make_grid(images, rows=rows, cols=cols))
